"""Callbacks every training run uses: a monitor of the training losses and the images logged at epoch ends."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import math

import pytorch_lightning as pl
import torch

from shared.utils import log_grid, save_grid


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss is NaN or infinite; training stops before any later checkpoint."""


class LossMonitor(pl.Callback):
    """Watches every training loss: stops on the first NaN/inf, logs the losses every
    ``log_every_n_steps`` batches (from the very first), and remembers the first loss.

    ``training_step`` may return a tensor or a dict of tensors (the GAN returns both of its losses);
    every value is checked. Raising here means no checkpoint is written for the bad step, so the
    last checkpoint on disk is the last good one. Step losses go straight to the logger: going
    through ``self.log`` every step costs more than a whole step of a small MLP.
    """

    def __init__(self):
        self.first_loss: float | None = None
        self.batches_seen = 0

    @staticmethod
    def _losses(outputs) -> dict[str, torch.Tensor]:
        if isinstance(outputs, torch.Tensor):
            return {"loss": outputs}
        if isinstance(outputs, dict):
            return {k: v.detach() for k, v in outputs.items() if isinstance(v, torch.Tensor)}
        return {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        losses = {name: value.item() for name, value in self._losses(outputs).items()}
        for name, value in losses.items():
            if not math.isfinite(value):
                raise NonFiniteLossError(f"{name} is {value} at epoch {trainer.current_epoch}, "
                                         f"step {trainer.global_step} (batch {batch_idx})")
        if self.first_loss is None and "loss" in losses:
            self.first_loss = losses["loss"]
        if trainer.logger is not None and self.batches_seen % trainer.log_every_n_steps == 0:
            trainer.logger.log_metrics({f"train_{name}_step": value for name, value in losses.items()},
                                       step=trainer.global_step)
        self.batches_seen += 1

    def state_dict(self) -> dict:
        return {"first_loss": self.first_loss, "batches_seen": self.batches_seen}

    def load_state_dict(self, state_dict: dict) -> None:
        self.first_loss, self.batches_seen = state_dict["first_loss"], state_dict["batches_seen"]


class LoggedImagesCallback(pl.Callback):
    """Logs the module's ``logged_images()`` (sample grids and rendered plots, ``name -> [3, H, W]`` in
    [0, 1]) to TensorBoard and PNG before training and after chosen epochs.

    "Epoch 0" is the untrained model; epoch e is after e epochs of training. The final epoch is
    always included. PNGs go to ``<run_dir>/samples/<name>_epoch<e>.png``.
    """

    def __init__(self, run_dir: str | Path, epochs: Iterable[int] = (0, 10)):
        self.sample_dir = Path(run_dir) / "samples"
        self.epochs = set(epochs)

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        if not trainer.is_global_zero:
            return
        was_training = pl_module.training
        pl_module.eval()
        for name, grid in pl_module.logged_images().items():
            log_grid(trainer.logger, name, grid, epoch)
            save_grid(grid, self.sample_dir / f"{name}_epoch{epoch:03d}.png")
        pl_module.train(was_training)

    def on_train_start(self, trainer, pl_module) -> None:
        if 0 in self.epochs and trainer.current_epoch == 0 and trainer.global_step == 0:
            self._log(trainer, pl_module, 0)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        done = trainer.current_epoch + 1
        if done in self.epochs or done == trainer.max_epochs:
            self._log(trainer, pl_module, done)


"""Callbacks every training run uses: the training-loss monitor, the images logged at epoch ends, the
progress a person sees, and the records a run keeps across interrupts (fit time, validation figures); the
checkpoints are in shared.checkpoints.

Epochs are counted from 1 everywhere a person reads them: "epoch 3" is the third epoch, and a
checkpoint, PNG or progress line "after epoch 3" holds the model after three epochs of training.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Iterable

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar

from shared.batches import batch_count
from shared.generative import evaluating
from shared.progress import duration
from shared.utils import log_grid, save_grid


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss is NaN or infinite; training stops before any later checkpoint."""


class LossMonitor(pl.Callback):
    """Watches every training loss (a tensor or a dict of them, as the GAN's): stops on a NaN/inf, logs the losses
    every ``log_every_n_steps`` batches (from the very first), and keeps the first step's (a dict's first) loss.

    Nothing is read back to the host inside a step (on a GPU each read would wait for the whole step): the losses
    since the last check are kept as tensors, checked and the logged ones written after the call of ``training_step``
    that holds every ``log_every_n_steps``-th batch (a call may train on several: ``--batches_per_call``) and after the
    epoch's last, before validation and the checkpoint. A NaN thus stops the run, every process of
    it, naming the epoch and step where it first appeared; no checkpoint is written after it."""

    def __init__(self):
        self.first_loss: float | None = None
        self.batches_seen = 0
        self.epoch_batches = 0
        # ((epoch, step, batch of the epoch) of each batch, their losses [batches] each): one item per call
        self.pending: list[tuple[list[tuple[int, int, int]], dict[str, torch.Tensor]]] = []

    @staticmethod
    def _losses(outputs) -> dict[str, torch.Tensor]:
        losses = {"loss": outputs} if isinstance(outputs, torch.Tensor) else outputs if isinstance(outputs, dict) else {}
        return {k: v.detach().float().reshape(-1) for k, v in losses.items() if isinstance(v, torch.Tensor)}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # The step a person reads counts batches, not optimizer steps (a GAN's are two a batch) nor calls (a call
        # trains on a BatchGroup of --batches_per_call batches).
        count = batch_count(batch)
        where = [(trainer.current_epoch + 1, self.batches_seen + i, self.epoch_batches + i)
                 for i in range(1, count + 1)]
        self.batches_seen += count
        self.epoch_batches += count
        self.pending.append((where, self._losses(outputs)))
        every = trainer.log_every_n_steps
        crossed = self.batches_seen // every > (self.batches_seen - count) // every  # a batch of the call was the n-th
        if crossed or batch_idx + 1 == trainer.num_training_batches:
            self._check(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check(trainer)  # an epoch cut short (limit_train_batches, an interrupt) still gets its check

    def _check(self, trainer: pl.Trainer) -> None:
        """One read-back for all pending steps: raise at the first non-finite loss, else log the logged steps'."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        names = list(pending[0][1])  # a module's training_step returns the same losses every step
        values = torch.cat([torch.stack([losses[name] for name in names], 1) for _, losses in pending])
        where = [batch for batches, _ in pending for batch in batches]
        # Each process reads all processes' losses (all check at the same batches): one stopping alone at a NaN would
        # leave the others waiting in the next all-reduce. torch's all_gather: Lightning's warns of a deprecated one.
        everyone = [values]
        if trainer.world_size > 1:
            everyone = [torch.empty_like(values) for _ in range(trainer.world_size)]
            torch.distributed.all_gather(everyone, values)
        everyone = torch.stack(everyone).cpu()
        for (epoch, step, batch), at_step in zip(where, everyone.transpose(0, 1).tolist()):
            bad = [(name, value, rank) for rank, row in enumerate(at_step) for name, value in zip(names, row)
                   if not math.isfinite(value)]
            if bad:
                on = f" on process {bad[0][2]}" if trainer.world_size > 1 else ""
                raise NonFiniteLossError(f"{bad[0][0]} is {bad[0][1]}{on} in epoch {epoch}, step {step} "
                                         f"(batch {batch} of the epoch)")
        rows = everyone[trainer.global_rank].tolist()
        if self.first_loss is None:
            self.first_loss = rows[0][0]  # the first loss a step returns is the one its module's training_loss names
        for (_, step, _), row in zip(where, rows):
            if trainer.logger is not None and (step - 1) % trainer.log_every_n_steps == 0:
                # Step = the batch's index, Lightning's own step axis (a GAN's global_step counts two per batch).
                trainer.logger.log_metrics({f"train_{name}_step": value for name, value in zip(names, row)},
                                           step=step - 1)

    def state_dict(self) -> dict:
        return {"first_loss": self.first_loss, "batches_seen": self.batches_seen}

    def load_state_dict(self, state_dict: dict) -> None:
        self.first_loss, self.batches_seen = state_dict["first_loss"], state_dict["batches_seen"]


def batch_step(trainer: pl.Trainer) -> int:
    """TensorBoard's step at an epoch's end (0 before training): the index of the last training batch, where Lightning
    logs its epoch-end figures, from its count of batches, which checkpoints carry (right for a run resumed on
    another number of processes, whose epochs had other numbers of batches)."""
    return max(trainer.fit_loop.epoch_loop._batches_that_stepped - 1, 0)


class LoggedImagesCallback(pl.Callback):
    """Logs the module's ``logged_images()`` (sample grids and rendered plots, ``name -> [3, H, W]`` in [0, 1]) to
    TensorBoard and PNG before training and after chosen epochs.

    "Epoch 0" is the untrained model; epoch e is after e epochs of training. The final epoch is always included. PNGs
    go to ``<run_dir>/samples/<name>_epoch<e>.png``."""

    def __init__(self, run_dir: str | Path, epochs: Iterable[int] = (0, 10)):
        self.sample_dir = Path(run_dir) / "samples"
        self.epochs = set(epochs)

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        if not trainer.is_global_zero:
            return
        with evaluating(pl_module):
            for name, grid in pl_module.logged_images().items():
                log_grid(trainer.logger, name, grid, batch_step(trainer))
                save_grid(grid, self.sample_dir / f"{name}_epoch{epoch:03d}.png")

    def on_train_start(self, trainer, pl_module) -> None:
        if 0 in self.epochs and trainer.current_epoch == 0 and trainer.global_step == 0:
            self._log(trainer, pl_module, 0)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        done = trainer.current_epoch + 1
        if done in self.epochs or done == trainer.max_epochs:
            self._log(trainer, pl_module, done)


class Charts(pl.Callback):
    """Writes the module's ``charts`` (title -> a regex of scalar tags) as TensorBoard's Custom Scalars layout, so that
    curves a person compares share one set of axes there (train and val bpd; a GAN's two losses), where the Scalars tab
    draws each tag apart. A category per model class: TensorBoard merges a class's charts across the runs shown."""

    def on_fit_start(self, trainer, pl_module) -> None:
        charts = getattr(pl_module, "charts", None)
        experiment = getattr(trainer.logger, "experiment", None)
        if charts and trainer.is_global_zero and hasattr(experiment, "add_custom_scalars"):
            experiment.add_custom_scalars({type(pl_module).__name__: {
                title: ["Multiline", [tags]] for title, tags in charts.items()}})


def _say(trainer: pl.Trainer, line: str) -> None:
    """Print a line, above the progress bar when one is shown."""
    bar = trainer.progress_bar_callback
    if isinstance(bar, TQDMProgressBar) and bar.is_enabled:
        bar.print(line)
    else:
        print(line, flush=True)


class ProgressLines(pl.Callback):
    """One line per epoch: ``epoch k/N``, the module's ``progress_metrics`` (default train and val bpd),
    seconds per epoch and the time left.

    Printed when the next epoch starts or training ends: a module logs its training means in its own
    ``on_train_epoch_end``, which Lightning calls after the callbacks' hook of that name. An epoch's seconds run
    until then too, so that they hold the epoch-end work (validation, sample grids, the judge's curve, checkpoints).
    """

    def __init__(self):
        self.pending: int | None = None  # the finished epoch whose line is still to print
        self.checkpointed: int | None = None  # the last epoch whose end-of-epoch checkpoint was written
        self.started = 0.0
        self.epoch_seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._flush(trainer)
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.pending = trainer.current_epoch + 1

    def on_train_end(self, trainer, pl_module) -> None:
        self._flush(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # After the module's epoch-end hook (a best checkpoint, written when validation ends, comes before this
        # epoch is pending): the epoch's figures are all logged, and last.ckpt holds it.
        self.checkpointed = self.pending

    def on_exception(self, trainer, pl_module, exception) -> None:
        # An epoch its checkpoint holds ended: a resume goes on after it. One stopped in its end hooks (the judge's
        # curve, sample grids) is repeated by the resume, and had not logged its figures: no line (QA: it printed the
        # epoch before's figures under its number).
        if self.pending is not None and self.pending == self.checkpointed:
            self._flush(trainer)

    def _flush(self, trainer: pl.Trainer) -> None:
        if self.pending is None or not trainer.is_global_zero:
            return
        self.epoch_seconds.append(time.perf_counter() - self.started)
        done, total, self.pending = self.pending, trainer.max_epochs, None
        names = getattr(trainer.lightning_module, "progress_metrics", ("train_bpd", "val_bpd"))
        metrics = trainer.callback_metrics
        figures = "  ".join(f"{name} {float(metrics[name]):.4f}" for name in names if name in metrics)
        per_epoch = sum(self.epoch_seconds) / len(self.epoch_seconds)
        left = f"  {duration(per_epoch * (total - done))} left" if done < total else ""
        _say(trainer, f"epoch {done}/{total}  {figures}  {per_epoch:.1f} s/epoch{left}")


class EvaluationProgress(pl.Callback):
    """Where no progress bar is shown: a line every tenth of a test pass that takes a while (the VAE's
    importance-weighted bound runs for minutes), with the time left."""

    def __init__(self, min_seconds: float = 10.0):
        self.min_seconds = min_seconds

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.started, self.next_report = time.perf_counter(), 0.1

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        total = trainer.num_test_batches[dataloader_idx]
        done = (batch_idx + 1) / total
        elapsed = time.perf_counter() - self.started
        if done >= self.next_report and done < 1 and elapsed >= self.min_seconds and trainer.is_global_zero and \
                trainer.progress_bar_callback is None:
            _say(trainer, f"testing: {batch_idx + 1}/{total} batches, {duration(elapsed)}, "
                          f"{duration(elapsed / done - elapsed)} left")
            self.next_report = math.floor(done * 10 + 1) / 10


class FitClock(pl.Callback):
    """Seconds of fitting, carried in every checkpoint so that a run's total survives any number of
    interrupts and resumes (the time after the last checkpoint of an interrupted part is redone, so it
    is not counted)."""

    def __init__(self):
        self.before = 0.0  # fit seconds of the checkpoints this call resumed from
        self.started = time.perf_counter()
        self.this_call = 0.0  # seconds of this call's fit, up to its latest epoch end

    def on_fit_start(self, trainer, pl_module) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.this_call = time.perf_counter() - self.started  # before the checkpoint of this epoch is saved

    def on_train_end(self, trainer, pl_module) -> None:
        self.this_call = time.perf_counter() - self.started

    def total(self) -> float:
        return self.before + self.this_call

    def state_dict(self) -> dict:
        return {"fit_seconds": self.total()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.before = state_dict["fit_seconds"]


class ValidationRecord(pl.Callback):
    """The validation figures of the latest epoch, kept in each checkpoint: the best checkpoint thus carries
    the very figures that chose it, which metrics.json reports (no second, re-drawn validation)."""

    def __init__(self):
        self.latest: dict[str, float] = {}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.latest = {name: float(value) for name, value in trainer.callback_metrics.items()
                       if name.startswith("val_")}

    def state_dict(self) -> dict:
        return {"latest": self.latest}

    def load_state_dict(self, state_dict: dict) -> None:
        self.latest = state_dict["latest"]

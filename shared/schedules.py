"""The optimizer and learning-rate schedule the commands share, in the form ``configure_optimizers`` returns."""
from __future__ import annotations

import pytorch_lightning as pl
import torch


def adam(params, module: pl.LightningModule, **kwargs) -> torch.optim.Adam:
    """Adam over ``params``, with torch's fused kernel on the devices that have one (CPU and CUDA): one kernel
    for all the tensors instead of a few small ops per tensor, the same update up to rounding."""
    return torch.optim.Adam(params, fused=module.device.type in ("cpu", "cuda"), **kwargs)


def decayed_to(optimizer: torch.optim.Optimizer, lr_final: float | None, module: pl.LightningModule):
    """``optimizer`` with its learning rate decaying exponentially, epoch by epoch, from its own to ``lr_final``
    at the last epoch of ``module``'s trainer (the IWAE paper's schedule, and the flow tutorial's per-epoch
    decay); none: the optimizer alone, constant, which needs no trainer (the benchmark's plain loop has none)."""
    if lr_final is None:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": DecayToFinal(optimizer, lr_final, module.trainer.max_epochs)}


class DecayToFinal(torch.optim.lr_scheduler.ExponentialLR):
    """Exponential decay from the optimizer's rate to ``lr_final`` at epoch ``epochs`` (counted from 1). A run
    resumed with other ``--epochs`` loads a decay planned for the epochs first asked for, which would end above
    ``lr_final`` or go on far below it (a finished run continued for as many epochs again: 100 times below); it
    is planned again, from the rate the run has reached to ``lr_final`` at the new last epoch, never rising. A
    resume to the same epochs keeps the loaded decay as it is, so an interrupted run ends as it would have."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr_final: float, epochs: int):
        self.lr_final, self.epochs = lr_final, epochs
        super().__init__(optimizer, self._gamma(optimizer.defaults["lr"], epochs - 1))

    def _gamma(self, rate: float, epochs_to_go: int) -> float:
        return min(1.0, (self.lr_final / rate) ** (1 / max(epochs_to_go, 1)))

    def load_state_dict(self, state_dict: dict) -> None:
        planned, epochs = self.gamma, self.epochs
        super().load_state_dict(state_dict)  # the saved plan, its epochs among it (none before 2026-12-07)
        self.epochs = epochs
        if self.gamma != planned:
            # A finished run's rate was stepped once past its last epoch, below lr_final: it goes on from lr_final.
            # (Lightning restores the optimizer, whose rates these are, before its schedule.)
            lift = max(1.0, self.lr_final / self._last_lr[0])
            for group in self.optimizer.param_groups:
                group["lr"] *= lift
            self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
            self.gamma = self._gamma(self._last_lr[0], epochs - 1 - self.last_epoch)

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
    is planned again, from the rate the run has reached to ``lr_final`` at the new last epoch (from ``lr_final`` on
    where the rate is below it already, as after a finished run's last epoch). A resume to the epochs the decay was
    planned for keeps it as it is, so an interrupted run ends as it would have."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr_final: float, epochs: int):
        self.lr_final, self.epochs = lr_final, epochs
        super().__init__(optimizer, (lr_final / optimizer.defaults["lr"]) ** (1 / max(epochs - 1, 1)))

    def load_state_dict(self, state_dict: dict) -> None:
        planned, epochs = self.gamma, self.epochs
        super().load_state_dict(state_dict)
        self.epochs = epochs
        saved_for = state_dict.get("epochs")  # none before 2026-12-07, where a plan for other epochs had another gamma
        if saved_for == epochs if saved_for is not None else self.gamma == planned:
            return
        to_go = epochs - 1 - self.last_epoch  # epochs after the one about to run
        if to_go <= 0 or self._last_lr[0] < self.lr_final:  # (Lightning restores the optimizer before its schedule)
            for group in self.optimizer.param_groups:
                group["lr"] *= self.lr_final / self._last_lr[0]
            self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        self.gamma = (self.lr_final / self._last_lr[0]) ** (1 / to_go) if to_go > 0 else 1.0

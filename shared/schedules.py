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
    gamma = (lr_final / optimizer.defaults["lr"]) ** (1 / max(module.trainer.max_epochs - 1, 1))
    return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)}

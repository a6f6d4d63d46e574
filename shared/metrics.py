"""Per-epoch means of a module's figures, one running mean per stage and name, and the stage hooks that feed them."""
from __future__ import annotations

from typing import Iterable

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric


class EpochMeans(nn.Module):
    """Running means of named figures per stage ("train", "val", "test"), read out once per epoch.

    Modules log epoch means instead of calling ``self.log`` every step because Lightning's per-step
    logging costs more than a whole step of the small models here; torchmetrics keeps the means
    right under DDP (each rank's sums are reduced on ``compute``). NaN checks are off (they would
    sync the GPU every step); a NaN training loss is caught by ``shared.callbacks.LossMonitor``.
    """

    def __init__(self, stages: Iterable[str], names: Iterable[str]):
        super().__init__()
        names = list(names)
        self.means = nn.ModuleDict({f"{stage}_{name}": MeanMetric(nan_strategy="disable")
                                    for stage in stages for name in names})

    def __getitem__(self, key: str) -> MeanMetric:
        return self.means[key]

    def add(self, stage: str, values: dict[str, torch.Tensor], count: int | None = None) -> None:
        """Per-image values, or (with ``count``) batch means each standing for ``count`` images."""
        for name, value in values.items():
            value = value.detach()
            if count is not None:  # as count copies: torchmetrics drops weights under nan_strategy="disable"
                value = value.expand(count)
            self.means[f"{stage}_{name}"].update(value)

    def compute_and_reset(self, stage: str) -> dict[str, torch.Tensor]:
        """``{"<stage>_<name>": mean}`` over the epoch for every name that saw values; all reset for the next."""
        out = {}
        for key, mean in self.means.items():
            if key.startswith(f"{stage}_"):
                if mean.update_count:
                    out[key] = mean.compute()
                mean.reset()
        return out


class StagedModule(pl.LightningModule):
    """A LightningModule whose train, val and test stages share one ``step(stage, batch)``, which adds the
    batch to the stage's running means and returns the training loss, and log once per epoch with
    ``log_epoch(stage)``. A subclass whose test stage measures more overrides ``test_step``."""

    def step(self, stage: str, batch) -> torch.Tensor:
        raise NotImplementedError

    def log_epoch(self, stage: str) -> None:
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        return self.step("train", batch)

    def validation_step(self, batch, batch_idx):
        self.step("val", batch)

    def test_step(self, batch, batch_idx):
        self.step("test", batch)

    def on_train_epoch_end(self) -> None:
        self.log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self.log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

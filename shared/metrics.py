"""Per-epoch means of a module's figures, one running mean per stage and name, and the stage hooks that feed them."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from shared.lean_lightning import GroupedTraining


class RunningMean(nn.Module):
    """A mean kept as a running sum and count on the module's device: adding to it launches two tensor ops
    and never reads a value back to the host (torchmetrics' MeanMetric took about 100 us per update here,
    a sixth of a small model's step). ``compute`` sums over the processes of a distributed run."""

    def __init__(self):
        super().__init__()
        self.register_buffer("total", torch.zeros(()), persistent=False)
        self.register_buffer("weight", torch.zeros(()), persistent=False)
        self.update_count = 0

    def update(self, values: torch.Tensor, count: int | None = None) -> None:
        """Per-image ``values``, or (with ``count``) one batch mean standing for ``count`` images."""
        # In place: `self.total += ...` re-assigns the buffer through nn.Module.__setattr__, 20 us an update here.
        values = values.detach()
        self.total.add_(values * count if count is not None else values.sum())
        self.weight.add_(count if count is not None else values.numel())
        self.update_count += 1

    def compute(self, all_processes: bool = True) -> torch.Tensor:
        """The mean; over every process of a distributed run, which must all call it (a collective), unless
        ``all_processes`` is false: this process's own (what rank zero alone may read, e.g. to draw a plot)."""
        totals = torch.stack([self.total, self.weight])
        if all_processes and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        return totals[0] / totals[1]

    def reset(self) -> None:
        self.total.zero_()
        self.weight.zero_()
        self.update_count = 0


class EpochMeans(nn.Module):
    """Running means of named figures per stage ("train", "val", "test"), read out once per epoch.

    Modules log epoch means instead of calling ``self.log`` every step because Lightning's per-step
    logging costs more than a whole step of the small models here. Nothing here checks for NaN (that
    would sync the GPU every step); a NaN training loss is caught by ``shared.callbacks.LossMonitor``.
    """

    def __init__(self, stages: Iterable[str], names: Iterable[str]):
        super().__init__()
        names = list(names)
        self.means = nn.ModuleDict({f"{stage}_{name}": RunningMean() for stage in stages for name in names})

    def __getitem__(self, key: str) -> RunningMean:
        return self.means[key]

    def add(self, stage: str, values: dict[str, torch.Tensor], count: int | None = None) -> None:
        """Per-image values, or (with ``count``) batch means each standing for ``count`` images."""
        for name, value in values.items():
            self.means[f"{stage}_{name}"].update(value, count)

    def compute_and_reset(self, stage: str) -> dict[str, torch.Tensor]:
        """``{"<stage>_<name>": mean}`` over the epoch for every name that saw values; all reset for the next."""
        out = {}
        for key, mean in self.means.items():
            if key.startswith(f"{stage}_"):
                if mean.update_count:
                    out[key] = mean.compute()
                mean.reset()
        return out


class StagedModule(GroupedTraining):
    """A LightningModule whose train, val and test stages share one ``step(stage, batch)``, which adds the
    batch to the stage's running means and returns the training loss, and log once per epoch with
    ``log_epoch(stage)``. A subclass whose test stage measures more overrides ``test_step``.

    It trains with its one optimizer, and steps the learning-rate schedule ``configure_optimizers`` may return at
    each epoch's end, as Lightning's automatic optimization would (manual here: :class:`GroupedTraining`)."""

    def step(self, stage: str, batch) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define step(stage, batch): add the batch to the "
                                  f"stage's running means and return the training loss")

    def log_epoch(self, stage: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define log_epoch(stage): log the stage's epoch means")

    def train_batch(self, batch) -> torch.Tensor:
        loss = self.step("train", batch)
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()
        return loss

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

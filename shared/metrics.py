"""Per-epoch means of a module's figures per stage, and the stage hooks that feed them."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from shared.lean_lightning import GroupedTraining


class EpochMeans(nn.Module):
    """Running means of named figures per stage ("train", "val", "test"), read out once per epoch.

    A stage's sums are one tensor on the module's device and its image counts host-side integers (known from the
    values' shapes), so adding a batch's figures is one stack, one sum and one in-place add however many there are,
    and never reads a value back to the host (a running mean of its own for each figure took four tensor ops a
    figure, 20 us a step of the VAE's two against 9 us here; torchmetrics' MeanMetric about 30 us an update).

    Modules log epoch means instead of calling ``self.log`` every step because Lightning's per-step
    logging costs more than a whole step of the small models here. Nothing here checks for NaN (that
    would sync the GPU every step); a NaN training loss is caught by ``shared.callbacks.LossMonitor``.
    """

    def __init__(self, stages: Iterable[str], names: Iterable[str]):
        super().__init__()
        self.names = list(names)
        self.counts = {stage: [0] * len(self.names) for stage in stages}
        for stage in self.counts:
            self.register_buffer(f"{stage}_sums", torch.zeros(len(self.names)), persistent=False)
        self._rows: dict[tuple[str, ...], tuple[list[int], torch.Tensor]] = {}  # see _positions

    def add(self, stage: str, values: dict[str, torch.Tensor], count: int | None = None) -> None:
        """Per-image values (tensors of one shape), or (with ``count``) batch means each standing for ``count``
        images."""
        sums = getattr(self, f"{stage}_sums")
        positions, rows = self._positions(tuple(values), sums.device)
        # In the sums' precision: a bf16-mixed run's figures may come in bf16 (and summed in it they would round).
        stacked = torch.stack([value.detach() for value in values.values()]).to(sums.dtype)
        if count is None:
            count = stacked.numel() // len(values)  # from the shape: indexing a row would be one more op
            if stacked.dim() > 1:
                stacked = stacked.flatten(1).sum(1)
        else:
            stacked = stacked * count
        sums.index_add_(0, rows, stacked)
        counts = self.counts[stage]
        for position in positions:
            counts[position] += count

    def _positions(self, names: tuple[str, ...], device: torch.device) -> tuple[list[int], torch.Tensor]:
        """The positions of ``names`` among the figures, as a list and as a tensor on ``device``."""
        found = self._rows.get(names)
        if found is None or found[1].device != device:
            positions = [self.names.index(name) for name in names]
            found = self._rows[names] = positions, torch.tensor(positions, device=device)
        return found

    def mean(self, stage: str, name: str, all_processes: bool = True) -> torch.Tensor | None:
        """The epoch's mean of ``name`` so far (None before any value), over every process of a distributed run,
        which must all call it (a collective), unless ``all_processes`` is false: this process's own (what rank
        zero alone may read, e.g. to draw a plot)."""
        return self._means(stage, all_processes).get(f"{stage}_{name}")

    def compute_and_reset(self, stage: str) -> dict[str, torch.Tensor]:
        """``{"<stage>_<name>": mean}`` over the epoch (and all processes) for every name that saw values; all reset
        for the next."""
        means = self._means(stage, all_processes=True)
        getattr(self, f"{stage}_sums").zero_()
        self.counts[stage] = [0] * len(self.names)
        return means

    def _means(self, stage: str, all_processes: bool) -> dict[str, torch.Tensor]:
        counts = self.counts[stage]
        if not any(counts):
            return {}
        sums = getattr(self, f"{stage}_sums")
        totals = torch.stack([sums, torch.tensor(counts, dtype=sums.dtype, device=sums.device)])
        if all_processes and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        means = totals[0] / totals[1]
        return {f"{stage}_{name}": means[i] for i, name in enumerate(self.names) if counts[i]}


class StagedModule(GroupedTraining):
    """A LightningModule whose train, val and test stages share one ``step(stage, batch)``, which adds the
    batch to the stage's running means and returns the training loss, and log once per epoch with
    ``log_epoch(stage)``. A subclass whose test stage measures more overrides ``test_step``.

    It trains with its one optimizer, and steps the learning-rate schedule ``configure_optimizers`` may return at
    each epoch's end, as Lightning's automatic optimization would (manual here: :class:`GroupedTraining`)."""

    # TensorBoard's Custom Scalars tab: title -> a regex of the scalar tags drawn on one set of axes (callbacks.Charts)
    charts = {"bits per dimension: train and val": r"^(train|val)_bpd$"}

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

"""Lightning's per-step cost, made small without touching Lightning. On the small models here a training step is a
few milliseconds, and around each call of ``training_step`` Lightning dispatches about 22 hooks: their bookkeeping is
made cheap (:class:`LeanLightningModule`, :class:`NullProfiler`), and the call itself may train on several batches
(:class:`GroupedTraining`). reports/speed.md has what each saves.
"""
from __future__ import annotations

import copy
from contextlib import nullcontext

import pytorch_lightning as pl
import torch
from pytorch_lightning.profilers import PassThroughProfiler

from shared.batches import BatchGroup


class LeanLightningModule(pl.LightningModule):
    """A LightningModule whose per-hook bookkeeping attributes cost 0.1 us to set instead of 1.3 us.

    Around every hook (about 22 a step) Lightning records the hook's name on the module and restores it, and
    ``toggle_optimizer`` / ``untoggle_optimizer`` record the parameters they switched (four times a GAN step),
    through ``nn.Module.__setattr__``, which first checks whether the value is a parameter, a module or a
    buffer (two metaclass ``isinstance`` checks). Those values are a string and a dict, so they skip the
    checks; every other attribute goes through ``nn.Module`` as before.
    """

    _bookkeeping = frozenset({"_current_fx_name", "_param_requires_grad_state"})

    def __setattr__(self, name: str, value) -> None:
        if name in self._bookkeeping:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class NullProfiler(PassThroughProfiler):
    """Lightning's default profiler (none), minus a generator-based context manager around every hook: the same
    reused no-op context instead."""

    _nothing = nullcontext()

    def profile(self, action_name: str) -> nullcontext:
        return self._nothing


class GroupedTraining(LeanLightningModule):
    """A module that trains in ``train_batch(batch)``, one batch and its optimizer steps (manual optimization), so that
    one call of ``training_step`` can train on a :class:`BatchGroup` of consecutive batches in turn
    (``--batches_per_call``): the same steps on the same batches as one call each, with Lightning's fixed cost of a
    call (0.3-0.5 ms on the CPUs here, reports/speed.md) paid once for the group.

    ``training_step`` returns what ``train_batch`` returns (the loss, or a dict of losses), for a group each stacked
    over its batches (shared.callbacks.LossMonitor reads one value a batch). Callbacks' ``on_train_batch_*`` hooks see
    a group as one batch; what must follow every optimizer step belongs in ``train_batch``. A learning-rate schedule
    that ``configure_optimizers`` returns is stepped once an epoch; one of another interval is refused at the start.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False

    def train_batch(self, batch):
        raise NotImplementedError(f"{type(self).__name__} must define train_batch(batch): train on one batch "
                                  f"(manual_backward, optimizer.step) and return its loss or a dict of losses")

    def training_step(self, batch, batch_idx):
        if isinstance(batch, BatchGroup):
            losses = [self.train_batch(one) for one in batch]
            out = ({name: torch.stack([loss[name] for loss in losses]) for name, value in losses[0].items()
                    if isinstance(value, torch.Tensor)} if isinstance(losses[0], dict) else torch.stack(losses))
            # Lightning's count of batches, its loggers' step axis (and the runs' TensorBoard step), counts this call
            # as one: the rest of the group are counted here, so that the axis stays in batches.
            self.trainer.fit_loop.epoch_loop._batches_that_stepped += len(batch) - 1
        else:
            out = self.train_batch(batch)
        if batch_idx + 1 == self.trainer.num_training_batches or self.trainer.is_last_batch:
            self._step_epoch_schedules()
        return out

    def on_train_start(self) -> None:
        for config in self.trainer.lr_scheduler_configs:
            if config.interval != "epoch" or config.frequency != 1 or config.reduce_on_plateau:
                raise TypeError(f"{type(self).__name__}: a learning-rate schedule of a GroupedTraining module is "
                                f"stepped once an epoch by it; step one of interval {config.interval!r}, frequency "
                                f"{config.frequency} or on a plateau yourself in train_batch or an epoch hook, "
                                f"and return only the optimizer for it")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint of a run from before 2026-12-07, when the VAEs, the mixture and the flows let Lightning optimize
        (automatic optimization): its optimizer steps go on as manual ones, so that ``global_step`` carries on."""
        loop = checkpoint.get("loops", {}).get("fit_loop", {})
        automatic = loop.get("epoch_loop.automatic_optimization.optim_progress", {}).get("optimizer", {}).get("step")
        manual = loop.get("epoch_loop.manual_optimization.optim_step_progress")
        if automatic and manual and not manual["total"]["completed"]:
            loop["epoch_loop.manual_optimization.optim_step_progress"] = copy.deepcopy(automatic)

    def _step_epoch_schedules(self) -> None:
        """Where Lightning's automatic optimization steps a per-epoch learning-rate schedule: after the epoch's last
        training step, before validation and the checkpoints."""
        schedules = self.lr_schedulers()
        for schedule in schedules if isinstance(schedules, list) else [schedules] if schedules is not None else []:
            schedule.step()


def check_grouped_training(model: pl.LightningModule, datamodule: pl.LightningDataModule) -> None:
    """A TypeError before training where the data module serves several batches a call (``--batches_per_call``) to a
    module whose ``training_step`` takes one batch (README: Adding a model)."""
    if getattr(datamodule, "batches_per_call", 1) > 1 and not isinstance(model, GroupedTraining):
        raise TypeError(f"{type(model).__name__} trains on one batch a call of training_step, and the data module "
                        f"serves {datamodule.batches_per_call}: subclass shared.lean_lightning.GroupedTraining (or "
                        f"shared.metrics.StagedModule) and train in train_batch(batch), or pass --batches_per_call 1")

"""A training epoch timed two ways for scripts/benchmark.py: through the project's pipeline (or Lightning alone) and
through a hand-written PyTorch loop over the same model, on batches sliced from a tensor on the device."""
from __future__ import annotations

import argparse
import contextlib
import io
import time
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from shared.batches import epoch_order
from shared.cli import parse_args
from shared.experiment import RunCallbacks, RunLogger
from shared.lean_lightning import NullProfiler
from shared.process import prepare_lightning_process


def build_as_a_run(command, flags: list[str]) -> tuple[argparse.Namespace, pl.LightningModule,
                                                     pl.LightningDataModule]:
    """A command's model and data module with its defaults (and ``flags``), seeded as a run is."""
    prepare_lightning_process()  # as a run: the GAN's unused val split, Lightning's device lines, no NVML per step
    args = parse_args(command.build_parser(), flags, command.check, command.default_name,
                      getattr(command, "task_defaults", None))
    pl.seed_everything(args.seed, verbose=False)
    datamodule = command.build_datamodule(args)
    datamodule.setup("fit")
    return args, command.build_model(args), datamodule


def training_device() -> torch.device:
    """The device the timed Trainers train on (``accelerator="auto"``), where the plain loop runs too."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class EpochTimer(pl.Callback):
    """Wall-clock time of the training epoch itself, without the Trainer's one-off set-up and tear-down."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        synchronize(pl_module.device)
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        synchronize(pl_module.device)
        self.seconds = time.perf_counter() - self.start


def time_pipeline(model: pl.LightningModule, datamodule: pl.LightningDataModule, log_dir: str | None,
                  batches: int | None, lean: bool = True) -> float:
    """Seconds of one training epoch (or its first ``batches``) through the project's pipeline, or with no
    ``log_dir`` through Lightning alone (no callback but the timer, no logger).

    The pipeline's Trainer has a run's callbacks, logger and profiler (``lean``; else Lightning's default one);
    the timer stops before the sample grids and the checkpoint are written at the epoch's end (a run's fit
    seconds count those), but the per-step calls of their hooks are timed. ``batches`` must be whole calls of the
    data module's ``batches_per_call`` (:func:`whole_calls`)."""
    if batches and batches % datamodule.batches_per_call:
        raise ValueError(f"{batches} batches are not whole calls of {datamodule.batches_per_call}")
    timer = EpochTimer()
    run = {"callbacks": [timer], "logger": False, "enable_checkpointing": False}  # Lightning alone
    if log_dir:
        callbacks = RunCallbacks(Path(log_dir), sample_epochs=(), monitor=None, seed=0)
        ordered = callbacks.ordered()
        ordered.insert(ordered.index(callbacks.images), timer)
        run = {"callbacks": ordered, "logger": RunLogger(log_dir), "profiler": NullProfiler() if lean else None}
    trainer = pl.Trainer(max_epochs=1, accelerator="auto", devices=1, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, **run,
                         **({"limit_train_batches": batches // datamodule.batches_per_call} if batches else {}))
    with contextlib.redirect_stdout(io.StringIO()):  # the run's epoch line
        trainer.fit(model, datamodule=datamodule)
    return timer.seconds


def whole_calls(batches: int, batches_per_call: int) -> int:
    """``batches`` rounded up to whole calls of ``batches_per_call`` batches."""
    return -(-batches // batches_per_call) * batches_per_call


def device_batches(images: torch.Tensor, batch_size: int, batches: int | None, seed: int = 0):
    """The plain loop's data: a permutation and slices of a tensor already on the device."""
    order = epoch_order(len(images), torch.Generator().manual_seed(seed)).to(images.device)
    starts = list(range(0, len(images), batch_size))[:batches]
    return ([images[order[start:start + batch_size]]] for start in starts)


def plain_optimizer(model: pl.LightningModule) -> torch.optim.Optimizer:
    """The one optimizer ``configure_optimizers`` makes, without the schedule it may come with (the plain loop has
    no epochs)."""
    optimizer = model.configure_optimizers()
    return optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer


def time_plain(model: pl.LightningModule, loss: Callable, batches, device: torch.device) -> float:
    """Seconds of a hand-written loop: zero_grad, the loss, backward, one Adam step per batch."""
    model.to(device).train()
    optimizer = plain_optimizer(model)
    synchronize(device)
    start = time.perf_counter()
    for batch in batches:
        images = batch[0].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss(model, images).backward()
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - start


def time_plain_gan(model: pl.LightningModule, batches, device: torch.device) -> float:
    """The GAN's training step by hand: generator on -log D(G(z)), then discriminator on real and fresh fakes."""
    model.to(device).train()
    generator, discriminator = model.generator, model.discriminator
    opt_g, opt_d = model.configure_optimizers()
    z_dim = model.hparams.z_dim
    synchronize(device)
    start = time.perf_counter()
    for (real,) in batches:
        ones = torch.ones(len(real), 1, device=device)
        discriminator.requires_grad_(False)  # what toggle_optimizer does: no discriminator gradients here
        opt_g.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(discriminator(generator(torch.randn(len(real), z_dim, device=device))),
                                           ones).backward()
        opt_g.step()
        discriminator.requires_grad_(True)
        with torch.no_grad():
            fake = generator(torch.randn(len(real), z_dim, device=device))
        opt_d.zero_grad(set_to_none=True)
        (F.binary_cross_entropy_with_logits(discriminator(real), ones)
         + F.binary_cross_entropy_with_logits(discriminator(fake), torch.zeros_like(ones))).backward()
        opt_d.step()
    synchronize(device)
    return time.perf_counter() - start


def as_lightning_makes_it(model: pl.LightningModule) -> pl.LightningModule:
    """``model`` whose attributes all go through ``nn.Module.__setattr__``, as in a LightningModule without
    shared.lean_lightning."""
    model.__class__ = type(type(model).__name__, (type(model),), {"__setattr__": torch.nn.Module.__setattr__})
    return model

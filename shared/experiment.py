"""Running one experiment: a Lightning fit (or resume), the evaluation of the reported checkpoint, and
the run directory that records it.

A run directory ``<log_dir>/<name>/version_N/`` holds TensorBoard events, ``config.yaml`` (the
settings, the command that made the run and its data), ``checkpoints/`` (best by the monitored
figure and ``last.ckpt``), ``samples/*.png``, ``metrics.json`` (deterministic given the seed) and
``timing.json`` (wall-clock, which is not).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from shared.callbacks import LoggedImagesCallback, LossMonitor, NonFiniteLossError
from shared.cli import NOT_SAVED


def _run_directory(args: argparse.Namespace) -> tuple[TensorBoardLogger, Path]:
    if args.resume:
        run_dir = Path(args.resume)
        logger = TensorBoardLogger(str(run_dir.parent.parent), name=run_dir.parent.name, version=run_dir.name,
                                   default_hp_metric=False)
    else:
        logger = TensorBoardLogger(args.log_dir, name=args.name, default_hp_metric=False)
    return logger, Path(logger.log_dir)


def _machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"


def run_experiment(args: argparse.Namespace, model: pl.LightningModule, datamodule: pl.LightningDataModule,
                   monitor: str | None = "val_bpd", extra_metrics: Callable[[], dict] | None = None) -> dict:
    """Fit (or resume), evaluate the best checkpoint on val and test, write metrics.json; return the metrics.

    ``extra_metrics``, if given, is called once the model holds the reported checkpoint's weights
    (after testing); what it returns joins metrics.json (the judge's sample figures, for example).

    ``timing.json`` holds this call's fit time and, across resumed calls, the total.
    """
    logger, run_dir = _run_directory(args)
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor=monitor, mode="min", save_last=True,
                                 filename="best-epoch{epoch:03d}" if monitor else "epoch{epoch:03d}",
                                 auto_insert_metric_name=False, enable_version_counter=False)
    monitor_losses = LossMonitor()
    trainer = pl.Trainer(
        max_epochs=args.epochs, accelerator=args.accelerator, devices=args.devices, strategy=args.strategy,
        precision=args.precision, logger=logger, log_every_n_steps=args.log_every_n_steps,
        callbacks=[checkpoint, monitor_losses, LoggedImagesCallback(run_dir, args.sample_epochs)],
        enable_progress_bar=args.progress_bar, enable_model_summary=args.progress_bar,
    )
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k not in NOT_SAVED}
        settings["data"] = datamodule.description()
        (run_dir / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=True))
        print(f"{'Resuming' if args.resume else 'Starting'} run in {run_dir}", flush=True)

    start = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(run_dir / "checkpoints" / "last.ckpt") if args.resume else None)
    except NonFiniteLossError as err:
        last = run_dir / "checkpoints" / "last.ckpt"
        kept = f"last good checkpoint: {last}" if last.is_file() else "no checkpoint was written before it"
        raise SystemExit(f"error: training stopped, {err}; {kept}") from None
    fit_seconds = time.perf_counter() - start

    which = "best" if monitor else "last"
    metrics: dict = {"epochs": trainer.current_epoch, "train_loss_first_step": monitor_losses.first_loss,
                     "train_loss": model.training_loss,
                     "checkpoint": Path(checkpoint.best_model_path if monitor else checkpoint.last_model_path).name}
    if monitor:
        metrics.update(trainer.validate(model, datamodule=datamodule, ckpt_path=which, verbose=False)[0])
    metrics.update(trainer.test(model, datamodule=datamodule, ckpt_path=which, verbose=False)[0])
    if extra_metrics is not None:
        metrics.update(extra_metrics())
    if trainer.is_global_zero:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        timing_path = run_dir / "timing.json"
        earlier = 0.0
        if args.resume and timing_path.is_file():  # a finished run continued to more epochs
            before = json.loads(timing_path.read_text())
            earlier = before.get("total_fit_seconds", before["fit_seconds"])
        timing_path.write_text(json.dumps(
            {"fit_seconds": round(fit_seconds, 1), "total_fit_seconds": round(earlier + fit_seconds, 1),
             "machine": _machine(), "resumed": bool(args.resume)}, indent=2) + "\n")
        print(f"Run directory: {run_dir}\n  TensorBoard:  tensorboard --logdir {run_dir}\n"
              f"  checkpoints:  {run_dir / 'checkpoints'}\n  samples:      {run_dir / 'samples'}\n"
              f"  metrics:      {run_dir / 'metrics.json'}\n  fit time:     {fit_seconds:.1f} s")
        for key, value in metrics.items():
            print(f"  {key} = {value:.4f}" if isinstance(value, float) else f"  {key} = {value}")
    return metrics

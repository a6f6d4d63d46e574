"""The flow every ``train.py`` shares: flags and configs in, a Lightning run with its outputs out.

Configuration precedence: parser defaults < YAML file (``--config``, or the run's own
``config.yaml`` when resuming) < flags given on the command line. Every invalid value fails
before any work, with one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from shared.callbacks import ImageGridCallback, LossMonitor, NonFiniteLossError

# Bookkeeping flags: they say how to run, not what was trained, so a run's config.yaml leaves them out.
_NOT_SAVED = ("config", "resume")


class ConfigError(ValueError):
    """An invalid setting; its message becomes the one-line error."""


class OneLineArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _devices(value: str):
    return int(value) if value.isdigit() else value


def make_parser(prog: str, description: str, *, epochs: int, lr: float, batch_size: int) -> OneLineArgumentParser:
    """A parser holding the flags every part shares; a part adds its model's flags to it."""
    parser = OneLineArgumentParser(prog=prog, description=description)
    add = parser.add_argument
    add("--config", help="YAML file of settings (flags given on the command line override it)")
    add("--seed", type=int, default=42)
    add("--epochs", type=int, default=epochs)
    add("--lr", type=float, default=lr)
    add("--batch_size", type=int, default=batch_size)
    add("--num_workers", type=int, default=0, help="DataLoader workers (batches are tensor slices: 0 is fastest)")
    add("--data_dir", default=None, help="folder holding MNIST/raw (default: the bundled copy)")
    add("--subset", type=int, default=None, help="keep only the first N images of each split (smoke runs)")
    add("--log_dir", default="runs")
    add("--name", default=None, help="run name under log_dir (default: derived from the model settings)")
    add("--sample_epochs", type=int, nargs="+", default=[0, 10], help="epochs to draw sample grids at (final added)")
    add("--log_every_n_steps", type=int, default=50)
    add("--progress_bar", action=argparse.BooleanOptionalAction, default=False)
    add("--resume", nargs="?", const="latest", default=None, metavar="RUN_DIR",
        help="continue an interrupted run from its last checkpoint (default: the latest run of this name)")
    trainer = parser.add_argument_group("Lightning Trainer flags, passed through")
    trainer.add_argument("--accelerator", default="auto")
    trainer.add_argument("--devices", type=_devices, default="auto")
    trainer.add_argument("--strategy", default="auto")
    trainer.add_argument("--precision", default="32-true")
    return parser


def _explicit_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict:
    """The settings actually typed on the command line (defaults suppressed)."""
    saved = {action.dest: action.default for action in parser._actions}
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        return vars(parser.parse_args(argv))
    finally:
        for action in parser._actions:
            action.default = saved[action.dest]


def _load_yaml(path: Path, known: set[str]) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    settings = yaml.safe_load(path.read_text()) or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"config file {path} must hold a mapping of flag names to values")
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return settings


def _latest_run(log_dir: str, name: str) -> Path:
    runs = sorted(Path(log_dir, name).glob("version_*"), key=lambda p: int(p.name.split("_")[-1]))
    runs = [run for run in runs if (run / "checkpoints" / "last.ckpt").is_file()]
    if not runs:
        raise ConfigError(f"--resume: no run with checkpoints/last.ckpt under {Path(log_dir, name)}")
    return runs[-1]


def _check_shared(args: argparse.Namespace) -> None:
    positive = {"batch_size": args.batch_size, "epochs": args.epochs, "lr": args.lr,
                "log_every_n_steps": args.log_every_n_steps}
    if args.subset is not None:
        positive["subset"] = args.subset
    for flag, value in positive.items():
        if value <= 0:
            raise ConfigError(f"--{flag} must be positive, got {value}")
    if args.num_workers < 0:
        raise ConfigError(f"--num_workers must be >= 0, got {args.num_workers}")
    if any(epoch < 0 for epoch in args.sample_epochs):
        raise ConfigError(f"--sample_epochs must be >= 0, got {args.sample_epochs}")
    if args.data_dir is not None and not Path(args.data_dir, "MNIST", "raw").is_dir():
        raise ConfigError(f"--data_dir {args.data_dir}: no folder MNIST/raw inside it")


def _resolve(defaults: dict, given: dict, task_defaults: Callable[[dict], dict] | None) -> argparse.Namespace:
    base = {**defaults, **task_defaults(given)} if task_defaults else defaults
    return argparse.Namespace(**{**base, **given})


def parse_args(parser: OneLineArgumentParser, argv: Sequence[str] | None,
               check: Callable[[argparse.Namespace], None], default_name: Callable[[argparse.Namespace], str],
               task_defaults: Callable[[dict], dict] | None = None) -> argparse.Namespace:
    """Resolve defaults < YAML < flags, then validate; any problem exits with one line.

    ``task_defaults`` maps the settings given (YAML and flags) to defaults that replace the parser's,
    for a command whose tasks need different ones (the flow's toy and MNIST tasks).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    defaults = {action.dest: action.default for action in parser._actions if action.dest != "help"}
    known = set(defaults) - set(_NOT_SAVED)
    try:
        explicit = _explicit_flags(parser, argv)
        from_file = _load_yaml(Path(explicit["config"]), known) if "config" in explicit else {}
        args = _resolve(defaults, {**from_file, **explicit}, task_defaults)
        args.name = args.name or default_name(args)
        if args.resume is not None:
            run_dir = _latest_run(args.log_dir, args.name) if args.resume == "latest" else Path(args.resume)
            if not (run_dir / "checkpoints" / "last.ckpt").is_file():
                raise ConfigError(f"--resume {run_dir}: no checkpoints/last.ckpt there")
            saved = _load_yaml(run_dir / "config.yaml", known)
            args = _resolve(defaults, {**saved, **explicit, "resume": str(run_dir)}, task_defaults)
        _check_shared(args)
        check(args)
    except ConfigError as err:
        parser.error(str(err))
    return args


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

    Writes to ``<log_dir>/<name>/version_N/``: TensorBoard events, ``config.yaml``,
    ``checkpoints/`` (best by ``monitor`` and ``last.ckpt``), ``samples/*.png``, ``metrics.json``
    (deterministic given the seed) and ``timing.json`` (wall-clock, which is not: this call's fit and,
    across resumed calls, the total).
    """
    logger, run_dir = _run_directory(args)
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor=monitor, mode="min", save_last=True,
                                 filename="best-epoch{epoch:03d}" if monitor else "epoch{epoch:03d}",
                                 auto_insert_metric_name=False, enable_version_counter=False)
    monitor_losses = LossMonitor()
    trainer = pl.Trainer(
        max_epochs=args.epochs, accelerator=args.accelerator, devices=args.devices, strategy=args.strategy,
        precision=args.precision, logger=logger, log_every_n_steps=args.log_every_n_steps,
        callbacks=[checkpoint, monitor_losses, ImageGridCallback(run_dir, args.sample_epochs)],
        enable_progress_bar=args.progress_bar, enable_model_summary=args.progress_bar,
    )
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k not in _NOT_SAVED}
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

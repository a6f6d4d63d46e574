"""Running one experiment: a Lightning fit (or resume), the test of the reported checkpoint, and the run
directory that records it.

A run directory ``<log_dir>/<name>/version_N/`` holds TensorBoard events, ``config.yaml`` (the
settings, the command that made the run and its data), ``checkpoints/`` (best by the monitored
figure and ``last.ckpt``), ``samples/*.png``, ``metrics.json`` (deterministic given the seed on a CPU) and
``timing.json`` (wall-clock, which is not). A run directory is a record: every check that can fail
runs before anything is written there, and a resume rewrites nothing until its checkpoint has loaded.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Callable, Sequence

import pytorch_lightning as pl
import torch
import yaml
from lightning_fabric.utilities.distributed import _set_num_threads_if_needed
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.trainer.states import TrainerStatus
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.model_helpers import is_overridden
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from shared.callbacks import (Charts, EvaluationProgress, FitClock, LoggedImagesCallback, LossMonitor,
                              NonFiniteLossError, ProgressLines, ValidationRecord)
from shared.checkpoints import EpochCountCheckpoint, LastEpochCheckpoint
from shared.checks import misfit
from shared.cli import NOT_SAVED, kept_checkpoints
from shared.data import DataFileError
from shared.generative import check_contract
from shared.lean_lightning import check_grouped_training
from shared.process import is_first_process, machine_name, prepare_lightning_process
from shared.lightning_trainer import build_trainer, usage_error
from shared.yaml_file import read_json_record, write_whole


class RunLogger(TensorBoardLogger):
    """Lightning's TensorBoard logger less the ``epoch`` figure Lightning adds to every epoch-end write: it counts
    from 0 (a person reads epochs from 1, as the epoch lines print them) and came twice a step where a stage
    validates. The step axis already places each epoch's figures at its last batch.

    One event file a call: Lightning finalizes the logger after each stage, and the closed writer opened a new file
    at the next figure (the test's, the HParams'), three a call, which TensorBoard reads in the order of their names
    (start second, then a count of the process's writers, where ".10" sorts before ".9"); a stage's success only
    flushes, :meth:`close` ends the call's file. No hparams.yaml either: config.yaml, flattened."""

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        super().log_metrics({name: value for name, value in metrics.items() if name != "epoch"}, step)

    def finalize(self, status: str) -> None:
        if status != "success":  # a stage that failed ends the call
            super().finalize(status)
        elif self._experiment is not None:
            self.experiment.flush()

    def close(self) -> None:
        super().finalize("success")

    def save(self) -> None:
        self.experiment.flush()


class RunCallbacks:
    """The callbacks of every run (scripts/benchmark.py times the same), with handles on those whose state the run
    reads afterwards."""

    def __init__(self, run_dir: Path, sample_epochs: Sequence[int], monitor: str | None, seed: int):
        self.losses, self.clock = LossMonitor(), FitClock()
        self.images = LoggedImagesCallback(run_dir, sample_epochs)
        self.checkpoint = EpochCountCheckpoint(dirpath=run_dir / "checkpoints", monitor=monitor, mode="min",
                                               auto_insert_metric_name=False,
                                               filename="best-epoch{epoch:03d}" if monitor else "epoch{epoch:03d}",
                                               enable_version_counter=False)
        self.last = LastEpochCheckpoint(run_dir / "checkpoints", seed)

    def ordered(self, extra: Sequence[pl.Callback] = ()) -> list[pl.Callback]:
        """All of them with a command's ``extra`` ones, in the order they must run: the clock after the images
        (their time counts), the checkpoints last (they save the others' state)."""
        return [self.losses, ValidationRecord(), ProgressLines(), EvaluationProgress(), self.images, Charts(), *extra,
                self.clock, self.checkpoint, self.last]


def compile_networks(model: pl.LightningModule) -> None:
    """``torch.compile`` each network of the module (its children holding parameters), in place: a network
    called as ``network(x)`` runs compiled, and its parameters keep their names, so checkpoints are those
    of an uncompiled run."""
    for network in model.children():
        if next(network.parameters(), None) is not None:
            network.compile()


def _loads(path: Path) -> dict | None:
    """The Lightning checkpoint at ``path``, or None when it is not one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # truncated zip, bad pickle, wrong file: all mean "not usable"
        return None
    return state if isinstance(state, dict) and {"state_dict", "callbacks"} <= state.keys() else None


def _check_resume(model: pl.LightningModule, run_dir: Path) -> dict:
    """The run's last checkpoint, if it loads and fits the model the run's settings build (a resume changes none
    that shape it: shared.cli.RESUME_MAY_CHANGE); otherwise one line naming the file's problem."""
    last = run_dir / "checkpoints" / "last.ckpt"
    state = _loads(last)
    if state is None:
        intact = [p.name for p in sorted(last.parent.glob("*.ckpt")) if p != last and _loads(p) is not None]
        fix = (f"intact beside it: {', '.join(intact)} (copy one to last.ckpt to resume from there)" if intact
               else "no intact checkpoint beside it: start a new run")
        raise SystemExit(f"error: {last} is corrupt, truncated or not a checkpoint; {fix}")
    problem = misfit(model.state_dict(), state["state_dict"], "the run's config.yaml")
    if problem:
        raise SystemExit(f"error: {last} {problem}: it is another model's checkpoint; put the run's own last.ckpt "
                         f"back, or start a new run")
    return state


def _say_how_to_resume(args: argparse.Namespace, trainer: pl.Trainer, run_dir: Path, interrupted: bool = False) -> None:
    """After Ctrl-C (in a Trainer stage, Lightning's graceful stop raises SystemExit), rank zero's line."""
    if trainer.is_global_zero and (interrupted or trainer.received_sigterm
                                   or trainer.state.status == TrainerStatus.INTERRUPTED):
        print(f"Interrupted; continue with: python -m {args.command} --resume {run_dir}", file=sys.stderr)


def _exit_if_stopped(trainer: pl.Trainer, err: BaseException) -> None:
    """Exit with the shell's status for a run stopped by a signal, as schedulers and scripts read it: 143 for SIGTERM
    (Lightning's stop raises a SystemExit that exits 0), 130 for Ctrl-C (Lightning's exits 1 in a Trainer stage)."""
    if trainer.received_sigterm:  # whatever it raised: e.g. a collective that a process stopped first left
        raise SystemExit(143) from None
    if isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit)
                                              and trainer.state.status == TrainerStatus.INTERRUPTED):
        raise SystemExit(143 if isinstance(err, SIGTERMException) else 130) from None


def _discard_unfinished(args: argparse.Namespace, trainer: pl.Trainer, run_dir: Path) -> bool:
    """After a fit that failed: remove the run directory this call created if no epoch ended in it (nothing to
    resume, no figure: a half-created record); whether it was removed."""
    if not trainer.is_global_zero:
        return False
    if not args.resume and not any((run_dir / "checkpoints").glob("*.ckpt")):
        shutil.rmtree(run_dir, ignore_errors=True)
        if not any(run_dir.parent.iterdir()):  # the run name's folder, made for it
            run_dir.parent.rmdir()
        return True
    return False


def _hparams(settings: dict, prefix: str = "") -> dict:
    """Settings flattened to the scalars and strings TensorBoard's HParams dashboard takes."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_hparams(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def run_experiment(args: argparse.Namespace, model: pl.LightningModule, datamodule: pl.LightningDataModule,
                   monitor: str | None = "val_bpd", extra_metrics: Callable[[], dict] | None = None,
                   callbacks: Sequence[pl.Callback] = ()) -> dict:
    """Fit (or resume), test the reported checkpoint, write metrics.json; return the metrics.

    The reported checkpoint is the best by ``monitor`` (its validation figures are the ones that chose
    it), or the last when ``monitor`` is None. The test runs from a fresh seed, so its figures depend
    on the checkpoint and the seed only. ``extra_metrics``, if given, is called once the model holds
    the reported checkpoint's weights; what it returns joins metrics.json (the judge's figures).
    ``callbacks`` join the run's own (a command's extra figures during training).
    """
    prepare_lightning_process()
    check_contract(model)
    check_grouped_training(model, datamodule)
    if args.resume:
        run_dir = Path(args.resume)
        state = _check_resume(model, run_dir)
        trained = state["epoch"] + 1  # last.ckpt is written at an epoch's end, and Lightning counts from 0
        finished = run_dir / "metrics.json"
        try:
            metrics = read_json_record(finished) if finished.is_file() else {}
        except ValueError as err:
            raise SystemExit(f"error: {err}: delete it and resume again; the run's test writes it anew") from None
        done = metrics.get("epochs", 0)  # a run continued since it finished has trained more than its record says
        if args.epochs < max(trained, done):  # (a last.ckpt from before 2026-12-06 may hold an earlier epoch)
            usage_error(args, f"--epochs {args.epochs}: {run_dir} has trained {max(trained, done)} epochs already; "
                              f"pass --epochs {max(trained, done)} or more, or leave it out")
        if done >= trained and args.epochs == done:
            print(f"{run_dir} already finished its {done} epoch{'s' if done != 1 else ''}: nothing to do (pass "
                  f"--epochs N with N > {done} to train it further)", flush=True)
            return metrics
        resumed = state["callbacks"].get(LossMonitor.__qualname__, {})
        batches_done = resumed.get("batches_seen")  # none in a checkpoint not written by these commands
        # TensorBoard hides what the interrupted call logged from this batch on (the epoch the resume repeats).
        logger = RunLogger(str(run_dir.parent.parent), name=run_dir.parent.name, version=run_dir.name,
                           default_hp_metric=False, purge_step=batches_done)
    else:
        logger = RunLogger(args.log_dir, name=args.name, default_hp_metric=False)
        run_dir = Path(logger.log_dir)

    run = RunCallbacks(run_dir, args.sample_epochs, monitor, args.seed)
    losses, clock, checkpoint = run.losses, run.clock, run.checkpoint
    trainer = build_trainer(args, logger, run.ordered(callbacks), getattr(model, "leaves_networks_unused", False))
    try:
        datamodule.setup("fit")
    except DataFileError as err:
        raise SystemExit(f"error: {err}") from None

    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k not in (*NOT_SAVED, *getattr(args, "unused", ()))}
        settings["data"] = datamodule.description()
        if not is_overridden("validation_step", model):  # the GAN's, the AAE's: the split no one reads is no record
            settings["data"].pop("val", None)
        write_whole(run_dir / "config.yaml", yaml.safe_dump(settings, sort_keys=True))
        parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)  # not a weight average's
        if trainer.world_size > 1:  # as Lightning does at the fit's start, each process its share of the cores: said now
            _set_num_threads_if_needed(trainer.num_devices)
        how = "".join([f", {trainer.world_size} processes" if trainer.world_size > 1 else "",
                       f", {trainer.precision} precision" if trainer.precision != "32-true" else ""])
        print(f"{'Resuming' if args.resume else 'Starting'} {args.command} in {run_dir}: {parameters:,} parameters, "
              f"{args.epochs} epoch{'s' * (args.epochs != 1)}, {machine_name(trainer.strategy.root_device)}{how}",
              flush=True)
    if args.resume and trainer.is_global_zero:
        # A finished run continued: its figures, and the checkpoint they name, are about to be replaced. Until its
        # test writes them anew the run is unfinished, so an interrupt leaves no record of a checkpoint that is gone.
        (run_dir / "metrics.json").unlink(missing_ok=True)
    if args.compile:
        compile_networks(model)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(run_dir / "checkpoints" / "last.ckpt") if args.resume else None)
    except NonFiniteLossError as err:
        if not trainer.is_global_zero:  # every process meets the NaN; rank zero names the run it owns, once
            raise SystemExit(1) from None
        last = run_dir / "checkpoints" / "last.ckpt"
        kept = (f"no epoch ended before it: {run_dir} is removed" if _discard_unfinished(args, trainer, run_dir)
                else f"last good checkpoint: {last}")
        raise SystemExit(f"error: training stopped, {err}; {kept}") from None
    except BaseException as err:  # Ctrl-C (Lightning's graceful stop raises SystemExit), SIGTERM, a crash
        if _discard_unfinished(args, trainer, run_dir):  # rank zero's
            print(f"Stopped before the first epoch ended: nothing to resume, {run_dir} is removed", file=sys.stderr)
        else:
            _say_how_to_resume(args, trainer, run_dir)
        _exit_if_stopped(trainer, err)
        raise
    # Read before the test, which restores the callbacks' states from the reported checkpoint (maybe an earlier epoch).
    fit_seconds, total_fit_seconds, batches = clock.this_call, clock.total(), losses.batches_seen

    reported = Path(checkpoint.best_model_path if monitor else run.last.best_model_path)  # the file it keeps
    if not reported.is_file():  # removed by hand, or by an interrupt between two checkpoints before 2026-12-07
        kept = ", ".join(kept_checkpoints(run_dir)) or "none"
        raise SystemExit(f"error: {reported}, the checkpoint this run reports, is missing (kept: {kept}); train on "
                         f"(--resume with more --epochs) until an epoch replaces it, or start a new run")
    described = datamodule.description()
    metrics: dict = {"epochs": trainer.current_epoch, "train_loss_first_step": losses.first_loss,
                     "train_loss": model.training_loss, "checkpoint": reported.name,
                     "data": described.get("pixels", described["dataset"])}
    if monitor:
        state = torch.load(reported, map_location="cpu", weights_only=False)
        metrics.update(state["callbacks"].get(ValidationRecord.__qualname__, {}).get("latest", {}))
    torch.manual_seed(args.seed)
    try:
        metrics.update(trainer.test(model, datamodule=datamodule, ckpt_path=str(reported), verbose=False)[0])
        if extra_metrics is not None and trainer.is_global_zero:  # metrics.json is rank zero's
            try:
                model.to(trainer.strategy.root_device)  # where it trained: Lightning's teardown left it on the CPU
                metrics.update(extra_metrics())
            except DataFileError as err:  # MNIST or the judge went missing since the start
                raise SystemExit(f"error: {err}; the trained run is in {run_dir}") from None
    except BaseException as err:  # Ctrl-C, a crash: a resume of the trained run tests it and writes metrics.json
        _say_how_to_resume(args, trainer, run_dir, interrupted=isinstance(err, KeyboardInterrupt))
        _exit_if_stopped(trainer, err)
        raise
    if trainer.is_global_zero:
        write_whole(run_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        write_whole(run_dir / "timing.json", json.dumps(
            {"fit_seconds": round(fit_seconds, 1), "total_fit_seconds": round(total_fit_seconds, 1),
             "machine": machine_name(trainer.strategy.root_device), "resumed": bool(args.resume)}, indent=2) + "\n")
        figures = {f"hparams/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
        # At the batches' step, where the test logs too: a later call continuing the run hides both (its purge_step).
        logger.log_metrics(figures, step=batches)
        # The session's settings and end, without the experiment summary Lightning's log_hyperparams adds: TensorBoard
        # shows the columns of the first such summary it reads for all runs, so runs of other commands lost theirs.
        _, session_start, session_end = hparams_summaries(_hparams(settings), figures)
        for summary in (session_start, session_end):
            logger.experiment._get_file_writer().add_summary(summary, batches)  # as Lightning's log_hyperparams does
        logger.close()  # flushed and closed now: the run directory is complete when this returns
        print(f"Run directory: {run_dir}\n  TensorBoard:  tensorboard --logdir {run_dir}\n"
              f"  checkpoints:  {run_dir / 'checkpoints'}\n  samples:      {run_dir / 'samples'}\n"
              f"  metrics:      {run_dir / 'metrics.json'}\n  fit time:     {fit_seconds:.1f} s "
              f"(whole run: {total_fit_seconds:.1f} s)")
        for key, value in metrics.items():
            print(f"  {key} = {value:.4f}" if isinstance(value, float) else f"  {key} = {value}")
    return metrics


def run_judged_experiment(args: argparse.Namespace, model: pl.LightningModule, datamodule: pl.LightningDataModule
                          ) -> dict:
    """:func:`run_experiment` for a model without a likelihood (GAN, AAE): it reports the last checkpoint, the judge
    scores samples every ``args.judge_every`` epochs during training (:class:`shared.judge_curve.JudgeCurveCallback`)
    and ``args.eval_samples`` of them at the end (none when 0) into metrics.json's ``eval_*``."""
    from shared.evaluation import judged_metrics  # the judge's imports only where a command needs it
    from shared.judge_curve import JudgeCurveCallback

    def judged() -> dict:
        return judged_metrics(model, args.eval_samples, args.seed, args.name, args.judge, args.data_dir)

    needed = args.eval_samples or 0 < args.judge_every <= args.epochs
    if needed and args.judge and not Path(args.judge).exists() and is_first_process():
        print(f"No judge at {args.judge} (--judge): the default judge will be trained there when the run first needs it, "
              f"for minutes; if the path is mistyped, stop now (Ctrl-C)", flush=True)  # said now, not epochs into the run
    curve = JudgeCurveCallback(args.judge_every, args.judge_every_samples, args.seed, args.judge, args.data_dir)
    return run_experiment(args, model, datamodule, monitor=None, extra_metrics=judged if args.eval_samples else None,
                          callbacks=[curve])

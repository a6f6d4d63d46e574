"""Finding trained runs and rebuilding their models, for the scripts that evaluate and compare them.

A run directory (``<log_dir>/<name>/version_N``) holds ``config.yaml``, ``checkpoints/`` and, once
finished, ``metrics.json``. Its config names the command that made the run (``command:
part1_vae.train``); that command supplies the settings the config does not hold as ``--resume`` does (a
value from before the flag existed, where its parser records one, else the task's or the parser's default),
its ``build_model(args)`` rebuilds the networks, and the checkpoint supplies the weights. The scripts' flag types
(a judge file, a folder, a positive count) are here too.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Sequence

from shared.checks import bad_judge_path, misfit
from shared.cli import NOT_SAVED, ConfigError, kept_checkpoints, parse_args, resolve_settings, run_config_settings
from shared.flags import unread_flags
from shared.yaml_file import read_json_record, read_yaml_mapping


def run_versions(log_dir: str | Path, name: str) -> list[Path]:
    """The numbered run directories (``version_N``) of ``name`` under ``log_dir``, oldest first."""
    runs = [run for run in Path(log_dir, name).glob("version_*") if run.name.removeprefix("version_").isdigit()]
    return sorted(runs, key=lambda run: int(run.name.removeprefix("version_")))


def finished_runs(log_dir: str | Path, name: str) -> list[Path]:
    """Run directories of ``name`` that have a metrics.json, oldest first."""
    return [run for run in run_versions(log_dir, name) if (run / "metrics.json").is_file()]


def command_settings(command, flags: Sequence[str]) -> argparse.Namespace:
    """The settings a training command (its module) makes of ``flags``, as it would run with them."""
    return parse_args(command.build_parser(), flags, command.check, command.default_name,
                      getattr(command, "task_defaults", None))


def interrupted_run(command, flags: Sequence[str]) -> Path | None:
    """The newest run of the name ``flags`` give ``command`` that stopped before its test (a last.ckpt, no
    metrics.json) and was set up as they say, where it lies aside: what a resume finishes, so that compare.py goes on
    with its short run an interrupt stopped instead of training it anew (a person's own runs differ: not taken)."""
    wanted = vars(command_settings(command, flags))
    for run in reversed(run_versions(wanted["log_dir"], wanted["name"])):
        if (run / "metrics.json").is_file() or not (run / "checkpoints" / "last.ckpt").is_file():
            continue
        try:
            trained = vars(run_settings(run)[1])
        except SystemExit:  # an unreadable record (run_settings says why in one line): not a run to go on with
            continue
        if all(wanted.get(key) == value for key, value in trained.items() if key not in ("log_dir", "name",
                                                                                          "data_dir", "unused")):
            return run
    return None


def run_settings(run_dir: str | Path):
    """(the command module that made the run, its settings with the command's defaults filled in, as
    ``--resume`` fills them; ``unused``: the flags it does not read, as the command names them)."""
    config_path = Path(run_dir) / "config.yaml"
    if not config_path.is_file():
        versions = run_versions(Path(run_dir).parent, Path(run_dir).name)  # a run's name given for one of its runs
        within = f"; pass one of its runs: {', '.join(str(run) for run in versions)}" if versions else ""
        raise SystemExit(f"error: {run_dir} is not a run directory: no config.yaml there{within}")
    try:
        config = read_yaml_mapping(config_path)
    except ValueError as err:
        raise SystemExit(f"error: config file {config_path} {err}") from None
    if not isinstance(config.get("command"), str) or not config["command"].strip():
        raise SystemExit(f"error: {config_path} names no command; add the line 'command: <module>' "
                         f"(for example part1_vae.train) naming the command that made the run")
    name = config["command"]
    try:
        command = importlib.import_module(name)
    except (ImportError, TypeError) as err:  # TypeError: a relative name (".train")
        missing = err.name if isinstance(err, ModuleNotFoundError) else None  # the command, or a package of its own?
        if missing is not None and (name == missing or name.startswith(f"{missing}.")):
            raise SystemExit(f"error: {config_path}: no command {name!r} here; a package of your own joins "
                             f"pyproject.toml's [tool.setuptools.packages.find] include (then pip install -e . "
                             f"again), or runs with PYTHONPATH set to the folder that holds it") from None
        raise SystemExit(f"error: command {name!r} of {config_path} does not import: {err}") from None
    if not callable(getattr(command, "build_parser", None)):
        raise SystemExit(f"error: {config_path}: {name!r} is not a training command of this project (it has no "
                         f"build_parser())")
    parser = command.build_parser()
    defaults = {action.dest: action.default for action in parser._actions
                if action.dest not in ("help", *NOT_SAVED)}
    try:
        settings = run_config_settings(parser, Path(run_dir))
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    args = resolve_settings(defaults, settings, getattr(command, "task_defaults", None))
    args.unused = unread_flags(parser, args)
    return command, args


def checkpoint_of(run_dir: str | Path, checkpoint: str | Path | None = None) -> Path:
    """The file of ``checkpoint``: by default the one the run's metrics.json names (the best by validation, or
    the last for runs without one), else ``last.ckpt``; a ``checkpoint`` that is no file as given is looked for in
    the run's checkpoints/ folder (``epoch040.ckpt``)."""
    run_dir = Path(run_dir)
    if checkpoint is None:
        metrics_path = run_dir / "metrics.json"
        try:
            checkpoint = read_json_record(metrics_path).get("checkpoint") if metrics_path.is_file() else None
        except ValueError as err:
            raise SystemExit(f"error: {err}: delete it, and --resume the run to test it and write it anew") from None
        checkpoint = checkpoint or "last.ckpt"
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        in_run = run_dir / "checkpoints" / checkpoint
        if not in_run.is_file():
            there = kept_checkpoints(run_dir)
            raise SystemExit(f"error: checkpoint {checkpoint} not found (nor {in_run}); pass another with --checkpoint"
                             + (f" ({', '.join(there)} in the run)" if there else ""))
        checkpoint = in_run
    return checkpoint


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None):
    """(model with the weights of :func:`checkpoint_of` in eval mode, the command module that made it, the run's
    settings)."""
    import torch  # here: the scripts' parsers and refusals need none of this module's torch (seconds to import)

    run_dir = Path(run_dir)
    command, args = run_settings(run_dir)
    checkpoint = checkpoint_of(run_dir, checkpoint)
    model = command.build_model(args)
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated zip, a bad pickle, another kind of file: all unusable
        raise SystemExit(f"error: checkpoint {checkpoint} cannot be read ({type(err).__name__}): it is corrupt or "
                         f"truncated; pass another with --checkpoint") from None
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise SystemExit(f"error: {checkpoint} is no Lightning checkpoint (no state_dict in it): pass a run's "
                         f"checkpoint with --checkpoint")
    state = saved["state_dict"]
    problem = misfit(model.state_dict(), state, str(run_dir / "config.yaml"))
    if problem:
        raise SystemExit(f"error: checkpoint {checkpoint} {problem}: it is another model's checkpoint; pass the "
                         f"run's own with --checkpoint")
    model.load_state_dict(state)
    return model.eval(), command, args


class DescriptionAndDefaultsFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The scripts' help: the module's usage text as written, and every flag's default."""


# Flag types of the scripts that read runs (evaluate.py, compare.py): wrong values fail at parsing, in one line.

def positive_int(text: str) -> int:
    """A flag type for the scripts: a count above zero."""
    if int(text) <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return int(text)


def judge_file(text: str) -> Path:
    """A flag type for the scripts: a judge checkpoint's path, which may not exist yet (it is trained there)."""
    if problem := bad_judge_path(text):
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def folder(text: str) -> Path:
    """A flag type for the scripts: a folder, which may not exist yet."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return Path(text)

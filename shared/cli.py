"""Settings for every command: flags and YAML files in, one validated ``argparse.Namespace`` out.

Precedence: parser defaults < YAML file (``--config``, or the run's own ``config.yaml`` when
resuming) < flags typed on the command line. A YAML value goes through the same type conversion and
choices as the same value typed as a flag (``lr: 1e-3`` is a float). Every invalid value ends the
command before any work, with one line on stderr and exit status 2. Running the experiment is
:mod:`shared.experiment`'s job.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

from shared.checks import bad_data_dir, bad_seed, unwritable
from shared.flags import takes_none, unread_flags
from shared.process import is_first_process
from shared.yaml_file import read_yaml_mapping

# What a resume may change: how to run, and what is measured around the training. Every other setting stays the run's
# (model, data, objective, optimizer: the checkpoint holds their states, config.yaml records them).
RESUME_MAY_CHANGE = ("config", "resume", "epochs", "num_workers", "batches_per_call", "data_dir", "log_dir", "name",
                     "sample_epochs", "log_every_n_steps", "progress_bar", "compile", "accelerator", "devices",
                     "num_nodes", "strategy", "precision", "iw_samples", "eval_samples", "judge", "judge_every",
                     "judge_every_samples", "interpolation_steps", "plot_every", "temperature", "test_dequant_samples")

# shared.batches.TensorSplitsDataModule's default is 1 (one batch a call, as Lightning serves them).
BATCHES_PER_CALL = 8

# Flags that name files to read, which a YAML file cannot set.
NOT_IN_FILES = ("config", "resume")
# Left out of a run's config.yaml: how to run this once (not what was trained), and where the settings came from.
NOT_SAVED = (*NOT_IN_FILES, "progress_bar", "set_in_file", "unused")


class ConfigError(ValueError):
    """An invalid setting; its message becomes the one-line error."""


def naming_the_file(message: str, set_in_file: Sequence[str], config: str | None) -> str:
    """A refusal's ``message``, naming the --config file where a flag it names got its value there."""
    return f"{message} (set in {config})" if set(re.findall(r"--(\w+)", message)) & set(set_in_file) else message


class OneLineArgumentParser(argparse.ArgumentParser):
    """Errors as one line; no abbreviated flags (``--epoch`` is not taken for ``--epochs``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def make_parser(prog: str, description: str, *, epochs: int, lr: float, batch_size: int) -> OneLineArgumentParser:
    """A parser holding the flags every command shares; the command adds its model's flags to it.
    ``prog`` is the command's module name (``part1_vae.train``), which each run records."""
    parser = OneLineArgumentParser(prog=prog, description=description)
    parser.used_only_with = {}  # {flag: (the setting that reads it, the test)}: see _refuse_unused
    add = parser.add_argument
    add("--config", help="YAML file of settings (flags given on the command line override it)")
    add("--seed", type=int, default=42, help="seed of every random number of the run")
    add("--epochs", type=int, default=epochs, help="epochs to train")
    add("--lr", type=float, default=lr, help="Adam learning rate")
    add("--batch_size", type=int, default=batch_size, help="images per training batch")
    add("--num_workers", type=int, default=0, help="0: the data lives on the training device, batches are sliced there; N: a DataLoader with N workers")
    add("--batches_per_call", type=int, default=BATCHES_PER_CALL,
        help="training batches per call of training_step, an optimizer step each: the same training, with "
             "Lightning's fixed cost of a call paid once for them (README: Speed)")
    add("--data_dir", default=None, help="folder holding MNIST/raw; none: the bundled copy")
    add("--subset", type=int, default=None, help="keep only the first N images of each split (smoke runs)")
    add("--log_dir", default="runs", help="folder of the runs")
    add("--name", default=None, help="run name under log_dir; none: derived from the model settings")
    add("--sample_epochs", type=int, nargs="+", default=[0, 10], help="epochs to draw sample grids at (final added)")
    add("--log_every_n_steps", type=int, default=50, help="log the training losses every N batches")
    add("--progress_bar", action=argparse.BooleanOptionalAction, default=None,
        help="show Lightning's progress bar; none: shown in a terminal, not in a log file")
    add("--compile", action=argparse.BooleanOptionalAction, default=False,
        help="torch.compile the networks (README: Speed)")
    add("--resume", nargs="?", const="latest", default=None, metavar="RUN_DIR",
        help="continue an interrupted run from its last checkpoint; no RUN_DIR: the latest run of this name")
    trainer = parser.add_argument_group("Lightning Trainer flags, passed through")
    trainer.add_argument("--accelerator", default="auto", help="cpu, gpu, mps, auto")
    trainer.add_argument("--devices", type=lambda value: int(value) if value.isdigit() else value, default="auto",
                         help="how many, or which")
    trainer.add_argument("--num_nodes", type=int, default=1, help="machines of a multi-node DDP run (README: Scaling out)")
    trainer.add_argument("--strategy", default="auto", help="auto, ddp, ...")
    trainer.add_argument("--precision", default="32-true", help="32-true, bf16-mixed, or on a GPU 16-mixed")
    return parser


def _explicit_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict:
    """The settings actually typed on the command line (defaults suppressed)."""
    parser.parse_args(argv)  # errors and --help first, with the real defaults
    saved = {action.dest: action.default for action in parser._actions}
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        return vars(parser.parse_args(argv))
    finally:
        for action in parser._actions:
            action.default = saved[action.dest]


def _typed(parser: argparse.ArgumentParser, action: argparse.Action, value):
    """A YAML value converted and checked as the same value typed after the flag would be."""
    if value is None:  # YAML's null: allowed where the flag's own default is "none", or where the flag takes "none"
        if action.default is None or takes_none(parser, action):
            return None
        raise argparse.ArgumentError(action, "expected a value, got null")
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise argparse.ArgumentError(action, f"expected true or false, got {value!r}")
        return value
    many = action.nargs in ("+", "*")
    items = value if isinstance(value, list) and many else [value]
    if isinstance(value, (list, dict)) and not many or any(isinstance(item, (list, dict)) for item in items):
        raise argparse.ArgumentError(action, f"expected {'values' if many else 'one value'}, got {value!r}")
    if many and not items:
        raise argparse.ArgumentError(action, "expected at least one value")
    converted = []
    for item in items:
        text = ("true" if item else "false") if isinstance(item, bool) else str(item)
        item = parser._get_value(action, text)
        parser._check_value(action, item)
        converted.append(item)
    return converted if many else converted[0]


def load_settings(parser: argparse.ArgumentParser, path: Path) -> dict:
    """The settings of a YAML file, typed; a run's records (command, data) are checked and left out."""
    if not path.is_file():
        raise ConfigError(f"config file {path} {'is a folder' if path.is_dir() else 'not found'}")
    try:
        settings = read_yaml_mapping(path, flag_text=True)
    except ValueError as err:
        raise ConfigError(f"config file {path} {err}") from None
    command = settings.pop("command", parser.prog)
    settings.pop("data", None)
    if command != parser.prog:
        raise ConfigError(f"config file {path} was written by {command}, not {parser.prog}: "
                          f"use python -m {command}")
    actions = {action.dest: action for action in parser._actions if action.dest not in ("help", *NOT_IN_FILES)}
    unknown = sorted(str(key) for key in settings if key not in actions)  # a YAML key may be null or true
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    try:
        return {name: _typed(parser, actions[name], value) for name, value in settings.items()}
    except argparse.ArgumentError as err:
        raise ConfigError(f"config file {path}: {err}") from None


def run_config_settings(parser: argparse.ArgumentParser, run_dir: Path) -> dict:
    """The settings of a run's config.yaml, typed. A setting it lacks, because the run predates the flag,
    takes the value runs had before the flag existed where the command records one
    (``parser.values_before_flags``; otherwise the default, which then matches what those runs did)."""
    return {**getattr(parser, "values_before_flags", {}), **load_settings(parser, run_dir / "config.yaml")}


def _where_a_run_is(run_dir: Path, saved: dict) -> tuple[str, str]:
    """(log_dir, name) of the run in ``run_dir``: those its config.yaml records where they lead there (a name may be
    nested, ``group/run``), else the folders it is in (a run moved, or a relative log_dir read from elsewhere)."""
    here = run_dir.resolve().parent  # through a link to the version folder too
    if "log_dir" in saved and "name" in saved and Path(saved["log_dir"], saved["name"]).resolve() == here:
        return saved["log_dir"], saved["name"]
    return str(here.parent), here.name


def kept_checkpoints(run_dir: Path) -> list[str]:
    """The names of the checkpoints a run folder holds, sorted: what a refusal offers instead of a missing one."""
    return sorted(path.name for path in (run_dir / "checkpoints").glob("*.ckpt"))


def _with_last_checkpoint(runs: list[Path]) -> list[Path]:
    return [run for run in runs if (run / "checkpoints" / "last.ckpt").is_file()]


def latest_run(log_dir: str, name: str) -> Path:
    from shared.runs import run_versions  # which reads a run's settings through this module
    versions = run_versions(log_dir, name)
    runs = _with_last_checkpoint(versions)
    if not runs:
        kept = [f"{run.name}/checkpoints/{checkpoint}" for run in versions for checkpoint in kept_checkpoints(run)]
        beside = f" (there is {', '.join(kept)}: copy one to last.ckpt beside it to resume from it)" if kept else ""
        raise ConfigError(f"--resume: no run with checkpoints/last.ckpt under {Path(log_dir, name)}{beside}")
    return runs[-1]


def _check_shared(args: argparse.Namespace) -> None:
    for flag, value in vars(args).items():  # NaN and inf pass every comparison below
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ConfigError(f"--{flag} must be finite, got {value}")
    log_dir = Path(args.log_dir)
    if not args.name.strip() or log_dir.resolve() not in (log_dir / args.name).resolve().parents:  # "..", "." or " "
        shown = args.name if args.name.strip() else repr(args.name)
        raise ConfigError(f"--name {shown}: a run name is a folder under --log_dir, not a path out of it")
    positive = {"batch_size": args.batch_size, "batches_per_call": args.batches_per_call, "epochs": args.epochs,
                "lr": args.lr, "log_every_n_steps": args.log_every_n_steps, "num_nodes": args.num_nodes,
                **({} if args.subset is None else {"subset": args.subset})}
    for flag, value in positive.items():
        if value <= 0:
            raise ConfigError(f"--{flag} must be positive, got {value}")
    lr_final = getattr(args, "lr_final", None)
    if lr_final is not None and lr_final <= 0:
        raise ConfigError(f"--lr_final must be positive, got {lr_final}")
    if lr_final is not None and lr_final > args.lr and args.resume is None:  # runs made before the check resume
        raise ConfigError(f"--lr_final {lr_final} is above --lr {args.lr}: the rate decays to it; pass --lr_final "
                          f"{args.lr} or less, or none for a constant rate")
    if not 0.0 <= getattr(args, "ema_decay", 0.0) < 1.0:
        raise ConfigError(f"--ema_decay must be in [0, 1), got {args.ema_decay}")
    if args.num_workers < 0:
        raise ConfigError(f"--num_workers must be >= 0, got {args.num_workers}")
    if any(epoch < 0 for epoch in args.sample_epochs):
        raise ConfigError(f"--sample_epochs must be >= 0, got {args.sample_epochs}")
    if problem := bad_seed(args.seed) or bad_data_dir(args.data_dir):
        raise ConfigError(problem)
    if log_dir.exists() and not log_dir.is_dir():
        raise ConfigError(f"--log_dir {log_dir} is a file, not a folder: pass a folder for the runs")
    if problem := unwritable(log_dir):
        raise ConfigError(f"--log_dir {log_dir}: {problem}: pass a folder you can write to")


def _refuse_unused(parser: argparse.ArgumentParser, args: argparse.Namespace, given: dict, defaults: dict,
                   typed: dict, file_alone: argparse.Namespace) -> None:
    """Refuses a flag set off its default that the run never reads, typed or in a --config file that leaves it unread
    itself (one that a typed flag leaves unread, as a config's judge_every_samples beside --judge_every 0, just goes);
    config.yaml leaves all those out (args.unused)."""
    args.unused = unread_flags(parser, args)
    for flag in (flag for flag in args.unused if flag in given and given[flag] != defaults[flag]):
        where, used = parser.used_only_with[flag]
        if flag in typed or not used(file_alone):
            raise ConfigError(f"--{flag} {given[flag]}: only runs with {where} use it; drop it, or train with {where}")


def _as_in_file(settings: dict) -> str:
    """Settings as a YAML file writes them, on one line."""
    return ", ".join(f"{flag}: {'null' if value is None else str(value).lower() if isinstance(value, bool) else value}"
                     for flag, value in settings.items())


def resolve_settings(defaults: dict, given: dict, task_defaults: Callable[[dict], dict] | None) -> argparse.Namespace:
    """The settings ``given`` over the command's task defaults (for the task given) over ``defaults``."""
    base = {**defaults, **task_defaults(given)} if task_defaults else defaults
    return argparse.Namespace(**{**base, **given})


def parse_args(parser: OneLineArgumentParser, argv: Sequence[str] | None,
               check: Callable[[argparse.Namespace], None], default_name: Callable[[argparse.Namespace], str],
               task_defaults: Callable[[dict], dict] | None = None) -> argparse.Namespace:
    """Resolve defaults < YAML < flags, then validate; any problem exits with one line.

    ``task_defaults`` maps the settings given (YAML and flags) to defaults that replace the parser's,
    for a command whose tasks need different ones (the flow's toy and MNIST tasks). The result's
    ``command`` is the parser's ``prog``: the module a run's config.yaml names as its maker.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    defaults = {action.dest: action.default for action in parser._actions if action.dest != "help"}
    explicit, from_file, note, saved = {}, {}, None, {}
    try:
        explicit = _explicit_flags(parser, argv)
        from_file = load_settings(parser, Path(explicit["config"])) if "config" in explicit else {}
        given = {**from_file, **explicit}
        args = resolve_settings(defaults, given, task_defaults)
        args.name = default_name(args) if args.name is None else args.name
        if args.resume is not None:
            run_dir = latest_run(args.log_dir, args.name) if args.resume == "latest" else Path(args.resume)
            if not (run_dir / "checkpoints" / "last.ckpt").is_file():
                from shared.runs import run_versions  # which reads a run's settings through this module
                others, versions = kept_checkpoints(run_dir), _with_last_checkpoint(run_versions(run_dir.parent, run_dir.name))
                beside = f" (there is {', '.join(others)}: copy one to last.ckpt to resume from it)" if others else ""
                within = f"; pass one of its runs: {', '.join(map(str, versions))}" if versions else ""
                raise ConfigError(f"--resume {run_dir}: no checkpoints/last.ckpt there{beside}{within}")
            if not (run_dir / "config.yaml").is_file():
                raise ConfigError(f"--resume {run_dir}: no config.yaml there (the run's settings): restore it from a copy")
            saved = run_config_settings(parser, run_dir)
            run_log_dir, run_name = _where_a_run_is(run_dir, saved)
            # With RUN_DIR, --log_dir and --name typed must lead there too; with a bare --resume they found the run.
            typed = [] if args.resume == "latest" else [flag for flag in ("log_dir", "name") if flag in explicit]
            here = Path(run_log_dir, run_name).resolve()
            if typed and Path(explicit.get("log_dir", run_log_dir), explicit.get("name", run_name)).resolve() != here:
                shown = " ".join(f"--{flag} {explicit[flag]}" for flag in typed)
                raise ConfigError(f"{shown}: --resume {run_dir} continues that run where it is, in {here}; drop "
                                  f"{' and '.join('--' + flag for flag in typed)}")
            # A --config given again names the run and must fit its setup, but how the run goes on stays the record's
            # unless typed: a start command retyped with --resume would otherwise carry a finished run on to its epochs.
            kept = {flag: value for flag, value in from_file.items() if flag in RESUME_MAY_CHANGE and flag in saved
                    and flag not in (*explicit, "log_dir", "name") and value != saved[flag]}
            if kept:
                note = (f"--config {explicit['config']}: the resumed run goes on as recorded "
                        f"({_as_in_file({flag: saved[flag] for flag in kept})}), not as the file says "
                        f"({_as_in_file(kept)}): a resume changes how a run goes on by flag only")
            given = {flag: value for flag, value in given.items() if flag not in kept}
            for flag in (flag for flag in given if flag not in RESUME_MAY_CHANGE):
                if given[flag] != saved.get(flag, defaults[flag]):
                    raise ConfigError(f"--{flag} {given[flag]}: a resumed run continues as it was set up (its "
                                      f"{flag}: {saved.get(flag, defaults[flag])}), its checkpoint and config.yaml "
                                      f"with it; start a new run to train with another")
            args = resolve_settings(defaults, {**saved, **given, "resume": str(run_dir)}, task_defaults)
            args.log_dir, args.name = run_log_dir, run_name
        # First a flag the run never reads, whatever its value (the toy flow's --data_dir /nope was told to hold MNIST)
        _refuse_unused(parser, args, given, {**defaults, **(task_defaults(given) if task_defaults else {})}, explicit,
                       resolve_settings(defaults, from_file, task_defaults))
        _check_shared(args)
        check(args)
        for flag in set(args.unused) & set(saved):  # read by the run's earlier calls (a resume turned the judge off):
            setattr(args, flag, saved[flag])  # its record keeps the value they read, which a later resume takes again
        args.unused = [flag for flag in args.unused if flag not in saved]
    except ConfigError as err:
        parser.error(naming_the_file(str(err), set(from_file) - set(explicit), explicit.get("config")))
    if note and is_first_process():  # once the settings hold
        print(note, flush=True)
    args.command = parser.prog
    args.set_in_file = sorted(set(from_file) - set(explicit))  # so that a later refusal can name the file too
    return args

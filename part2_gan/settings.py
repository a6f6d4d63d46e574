"""The command-line settings the adversarial commands (the GAN's and the AAE's) share: the judge's flags (its
evaluation after training, its curve during it), and what both refuse whatever their model, settings on which
their training would fail mid-step, after the run had started. Light to import (no torch): the commands build
their parsers from it before any model module is loaded."""
from __future__ import annotations

import argparse
from pathlib import Path

from shared.checks import bad_judge_path
from shared.cli import ConfigError

BUNDLED_JUDGE = "shared/datasets/judge/judge.pt"  # shared.judge.DEFAULT_JUDGE_PATH, as the help names it


def add_judge_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the judged evaluation after training."""
    parser.add_argument("--eval_samples", type=int, default=10_000,
                        help="samples the judge scores after training (0: skip)")
    parser.add_argument("--judge", default=None,
                        help=f"judge checkpoint (trained there first if missing); none: the bundled {BUNDLED_JUDGE}")
    parser.used_only_with["judge"] = ("--eval_samples or --judge_every above 0",
                                      lambda args: args.eval_samples > 0 or args.judge_every > 0)


def check_judge_flags(args: argparse.Namespace) -> None:
    """Also reads the judge to be used, so that a broken file stops the command before training, not after."""
    if args.eval_samples == 1 or args.eval_samples < 0:
        raise ConfigError(f"--eval_samples must be 0 (skip) or at least 2, got {args.eval_samples}")
    if args.judge is not None and (problem := bad_judge_path(args.judge)):
        raise ConfigError(f"--judge {problem}")
    if args.eval_samples and (args.judge is None or Path(args.judge).is_file()):
        from shared.data import DataFileError
        from shared.judge import load_judge

        try:
            load_judge(args.judge)
        except DataFileError as err:  # the file's problem, not the settings': exit status 1, as for MNIST
            raise SystemExit(f"error: {err}") from None


def add_judge_curve_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the judge's curve during training (shared.judge_curve)."""
    # Measured with the bundled judge on 1 CPU thread: 2,000 samples take 2.3-2.6 s to draw and judge (5,000:
    # 6 s) beside the default MLP GAN's 12.5 s epochs, 4% more every 5 epochs (the DCGAN's: 3 s beside 55 s,
    # 1%); the features of the 10,000 test images take about 15 s more, once.
    parser.add_argument("--judge_every", type=int, default=5,
                        help="every N epochs (N, 2N, ...) the judge scores a fixed draw of samples into TensorBoard: "
                             "judge_fd, the class histogram, a mode-collapse warning (0: off)")
    parser.add_argument("--judge_every_samples", type=int, default=2000,
                        help="samples of each --judge_every evaluation (cost grows in proportion)")
    parser.used_only_with["judge_every_samples"] = ("--judge_every above 0", lambda args: args.judge_every > 0)


def check_judge_curve_flags(args: argparse.Namespace) -> None:
    if args.judge_every < 0:
        raise ConfigError(f"--judge_every must be >= 0 (0: off), got {args.judge_every}")
    if args.judge_every_samples < 2:
        raise ConfigError(f"--judge_every_samples must be at least 2, got {args.judge_every_samples}")
    if args.judge_every and not args.eval_samples:
        # check_judge_flags reads the judge only for an evaluation after training; the curve needs it sooner.
        check_judge_flags(argparse.Namespace(**{**vars(args), "eval_samples": args.judge_every_samples}))


def check_adversarial(args: argparse.Namespace) -> None:
    """Plain DDP: each optimizer step leaves another network unused. Batches of one image: the batch norm of both
    commands' networks cannot train on one (the data modules leave out only a last batch of one)."""
    if args.strategy == "ddp":
        raise ConfigError("--strategy ddp: each of the adversarial steps leaves a network unused; "
                          "use --strategy ddp_find_unused_parameters_true")
    for flag in ("batch_size", "subset"):
        if getattr(args, flag) == 1:
            raise ConfigError(f"--{flag} 1: batch norm cannot train on batches of one image; use 2 or more")

"""Flags that several commands add beside those every command has (shared.cli.make_parser), their value types,
what a run name adds for them, and which flags a run does not read."""
from __future__ import annotations

import argparse


def add_binarization_flag(parser: argparse.ArgumentParser) -> None:
    """The flag of every command that models binary MNIST (shared.data.MNISTDataModule's binarization)."""
    parser.add_argument("--binarization", choices=["threshold", "dynamic"], default="threshold",
                        help="binary MNIST: pixels > 0.5 (the course's data), or training images re-drawn from "
                             "Bernoulli(grey) every epoch with val/test drawn once (the papers' data)")


def binarization_suffix(args: argparse.Namespace) -> str:
    """What a run name adds for dynamically binarized data (threshold runs keep their names)."""
    return "_dynamic" if args.binarization == "dynamic" else ""


def number_or_none(text: str, kind: type = float) -> float | int | None:
    """A number (of ``kind``), or ``none``: for a flag that a default, a task or a config sets and a user may unset."""
    if text.lower() == "none":
        return None
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'a whole ' if kind is int else 'a '}number or none, got {text!r}") from None


def takes_none(parser: argparse.ArgumentParser, action: argparse.Action) -> bool:
    """Whether ``action`` takes ``none`` as a value (a :func:`number_or_none` flag), so YAML's null too."""
    try:
        return parser._get_value(action, "none") is None
    except argparse.ArgumentError:
        return False


def add_lr_final_flag(parser: argparse.ArgumentParser, default: float | None = None) -> None:
    parser.add_argument("--lr_final", type=number_or_none, default=default,
                        help="decay the learning rate exponentially from --lr to this at the last epoch; "
                             "none: constant")


def add_ema_decay_flag(parser: argparse.ArgumentParser, default: float, averaged: str, used_for: str) -> None:
    """``--ema_decay``: a moving average of ``averaged`` (the weights it covers) for ``used_for``."""
    parser.add_argument("--ema_decay", type=float, default=default,
                        help=f"above 0, {used_for} with a moving average of {averaged} with this decay, e.g. 0.999; "
                             "0: off")


def unread_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The flags of ``parser.used_only_with`` (``{flag: (the setting that reads it, its test)}``) that a run with
    ``args`` does not read: refused when set (shared.cli), left out of its config.yaml."""
    return [flag for flag, (_, used) in getattr(parser, "used_only_with", {}).items() if not used(args)]

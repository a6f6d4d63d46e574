"""What the adversarial commands (the GAN's and the AAE's) refuse whatever their model: settings on which their
training would fail mid-step, after the run had started."""
from __future__ import annotations

import argparse

from shared.cli import ConfigError


def check_adversarial(args: argparse.Namespace) -> None:
    """Plain DDP: each optimizer step leaves another network unused. Batches of one image: the batch norm of both
    commands' networks cannot train on one (the data modules leave out only a last batch of one)."""
    if args.strategy == "ddp":
        raise ConfigError("--strategy ddp: each of the adversarial steps leaves a network unused; "
                          "use --strategy ddp_find_unused_parameters_true")
    for flag in ("batch_size", "subset"):
        if getattr(args, flag) == 1:
            raise ConfigError(f"--{flag} 1: batch norm cannot train on batches of one image; use 2 or more")

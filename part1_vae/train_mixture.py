"""Train the Bernoulli mixture baseline on threshold-binarized MNIST: ``python -m part1_vae.train_mixture``."""
from __future__ import annotations

import argparse
from typing import Sequence

import pytorch_lightning as pl

from part1_vae.mixture import BernoulliMixture
from shared.cli import ConfigError, make_parser, parse_args, run_experiment
from shared.data import BinarizedMNISTDataModule


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("part1_vae.train_mixture", __doc__, epochs=20, lr=0.1, batch_size=128)
    parser.add_argument("--num_components", type=int, default=20)
    return parser


def check(args: argparse.Namespace) -> None:
    if args.num_components <= 0:
        raise ConfigError(f"--num_components must be positive, got {args.num_components}")


def default_name(args: argparse.Namespace) -> str:
    return f"mixture_k{args.num_components}"


def build_model(args: argparse.Namespace) -> BernoulliMixture:
    return BernoulliMixture(args.num_components, lr=args.lr)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(build_parser(), argv, check, default_name)
    pl.seed_everything(args.seed, verbose=False)
    model = build_model(args)
    datamodule = BinarizedMNISTDataModule(args.data_dir, args.batch_size, args.num_workers, args.seed, subset=args.subset)
    return run_experiment(args, model, datamodule, monitor="val_bpd")


if __name__ == "__main__":
    main()

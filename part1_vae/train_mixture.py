"""Train the Bernoulli mixture baseline on binary MNIST: python -m part1_vae.train_mixture (threshold-binarized;
--binarization dynamic: dynamically binarized)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Sequence

from shared.cli import ConfigError, make_parser, parse_args
from shared.flags import add_binarization_flag, binarization_suffix
from shared.process import run_script

if TYPE_CHECKING:
    from part1_vae.modules import MixtureModule
    from shared.data import MNISTDataModule

# torch and Lightning (5 s to import) are imported where a run is built, after its flags are checked: --help and a
# refused flag answer at once. The flags' defaults are the classes' own (tests/test_cli.py holds them equal).


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("part1_vae.train_mixture", __doc__, epochs=20, lr=0.1, batch_size=128)
    parser.add_argument("--num_components", type=int, default=20,
                        help="mixture components K")
    add_binarization_flag(parser)
    return parser


def check(args: argparse.Namespace) -> None:
    if args.num_components <= 0:
        raise ConfigError(f"--num_components must be positive, got {args.num_components}")


def default_name(args: argparse.Namespace) -> str:
    return f"mixture_k{args.num_components}" + binarization_suffix(args)


def build_model(args: argparse.Namespace) -> MixtureModule:
    from part1_vae.modules import MixtureModule

    return MixtureModule(args.num_components, lr=args.lr)


def build_datamodule(args: argparse.Namespace) -> MNISTDataModule:
    from shared.data import MNISTDataModule

    return MNISTDataModule(args.data_dir, args.batch_size, args.num_workers, args.seed, subset=args.subset,
                           binarization=args.binarization, batches_per_call=args.batches_per_call)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(build_parser(), argv, check, default_name)
    import pytorch_lightning as pl

    from shared.experiment import run_experiment

    pl.seed_everything(args.seed, verbose=False)
    return run_experiment(args, build_model(args), build_datamodule(args), monitor="val_bpd")


if __name__ == "__main__":
    run_script(main)

"""Train a VAE on MNIST: ``python -m part1_vae.train --z_dim 20``.

``--likelihood bernoulli`` (default) models threshold-binarized MNIST; ``--likelihood gaussian``
models grey-scale MNIST, dequantized, with a learned per-pixel std, and its bpd are bits per
8-bit pixel (see ``part1_vae.vae.VAE``). Gaussian runs are named ``..._gaussian``.
"""
from __future__ import annotations

import argparse
from typing import Sequence

import pytorch_lightning as pl

from part1_vae.models import CNNDecoder, CNNEncoder, MLPDecoder, MLPEncoder
from part1_vae.vae import VAE
from shared.cli import ConfigError, make_parser, parse_args, run_experiment
from shared.data import BinarizedMNISTDataModule


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("part1_vae.train", __doc__, epochs=80, lr=1e-3, batch_size=128)
    parser.add_argument("--model", choices=["MLP", "CNN"], default="MLP")
    parser.add_argument("--z_dim", type=int, default=20)
    parser.add_argument("--hidden_dims", type=int, nargs="+", default=[512], help="MLP hidden layer sizes")
    parser.add_argument("--num_filters", type=int, default=32, help="CNN channels of the first stage")
    parser.add_argument("--iw_samples", type=int, default=1000, help="importance samples per test image")
    parser.add_argument("--likelihood", choices=["bernoulli", "gaussian"], default="bernoulli",
                        help="decoder likelihood: binarized MNIST, or dequantized grey-scale MNIST")
    return parser


def check(args: argparse.Namespace) -> None:
    for flag in ("z_dim", "num_filters", "iw_samples"):
        if getattr(args, flag) <= 0:
            raise ConfigError(f"--{flag} must be positive, got {getattr(args, flag)}")
    if not args.hidden_dims or min(args.hidden_dims) <= 0:
        raise ConfigError(f"--hidden_dims must be positive sizes, got {args.hidden_dims}")


def default_name(args: argparse.Namespace) -> str:
    return f"vae_{args.model.lower()}_z{args.z_dim}" + ("_gaussian" if args.likelihood == "gaussian" else "")


def build_model(args: argparse.Namespace) -> VAE:
    if args.model == "MLP":
        encoder = MLPEncoder(784, args.hidden_dims, args.z_dim)
        decoder = MLPDecoder(args.z_dim, args.hidden_dims, [1, 28, 28])
    else:
        encoder = CNNEncoder(1, args.num_filters, args.z_dim)
        decoder = CNNDecoder(1, args.num_filters, args.z_dim)
    return VAE(encoder, decoder, z_dim=args.z_dim, lr=args.lr, iw_samples=args.iw_samples, likelihood=args.likelihood)


def build_datamodule(args: argparse.Namespace) -> BinarizedMNISTDataModule:
    return BinarizedMNISTDataModule(args.data_dir, args.batch_size, args.num_workers, args.seed,
                                    binarize=args.likelihood == "bernoulli", subset=args.subset)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(build_parser(), argv, check, default_name)
    pl.seed_everything(args.seed, verbose=False)
    return run_experiment(args, build_model(args), build_datamodule(args), monitor="val_bpd")


if __name__ == "__main__":
    main()

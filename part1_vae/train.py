"""Train a VAE on MNIST: python -m part1_vae.train --z_dim 20.

--likelihood bernoulli (default) models threshold-binarized MNIST; --likelihood gaussian models
grey-scale MNIST as 8-bit data, dequantized, with a learned per-pixel std, and its bpd are bits per
8-bit pixel (see part1_vae.modules.VAE). Gaussian runs are named ..._gaussian.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Sequence

from shared.cli import ConfigError, make_parser, parse_args
from shared.flags import add_binarization_flag, add_lr_final_flag, binarization_suffix
from shared.process import run_script

if TYPE_CHECKING:
    from part1_vae.modules import VAE
    from shared.data import MNISTDataModule

# torch and Lightning (5 s to import) are imported where a run is built, after its flags are checked: --help and a
# refused flag answer at once. The flags' defaults are the classes' own (tests/test_cli.py holds them equal).


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("part1_vae.train", __doc__, epochs=80, lr=1e-3, batch_size=128)
    add = parser.add_argument
    add("--model", type=str.lower, choices=["mlp", "cnn"], default="mlp", help="encoder and decoder networks")
    add("--z_dim", type=int, default=20, help="latent dimensions")
    add("--hidden_dims", type=int, nargs="+", default=[512], help="MLP hidden layer sizes")
    add("--num_filters", type=int, default=32, help="CNN channels of the first stage")
    add("--iw_samples", type=int, default=1000, help="importance samples per test image")
    add("--likelihood", choices=["bernoulli", "gaussian"], default="bernoulli",
        help="decoder likelihood: binarized MNIST, or dequantized 8-bit grey-scale MNIST")
    add_binarization_flag(parser)
    add("--activation", choices=["relu", "tanh"], default="relu",
        help="MLP hidden activation (the IWAE paper's: tanh)")
    add("--objective", choices=["elbo", "iwae"], default="elbo",
        help="training loss: the ELBO, or the importance-weighted bound with --train_k samples")
    add("--train_k", type=int, default=1, help="importance samples per image of --objective iwae")
    add("--adam_eps", type=float, default=1e-8, help="Adam's epsilon (the IWAE paper's: 1e-4)")
    add_lr_final_flag(parser)
    add("--train_on_all", action=argparse.BooleanOptionalAction, default=False,
        help="train on all 60,000 training images (the IWAE paper's protocol); val is then 5,000 of them, so "
             "the last checkpoint is reported instead of the best by val")
    # The flags only one model reads, refused for the other (shared.cli): the setting that reads each, and the test.
    mlp, cnn = ("--model mlp", lambda args: args.model == "mlp"), ("--model cnn", lambda args: args.model == "cnn")
    parser.used_only_with.update({"hidden_dims": mlp, "activation": mlp, "num_filters": cnn})
    return parser


def check(args: argparse.Namespace) -> None:
    for flag in ("z_dim", "num_filters", "iw_samples", "train_k", "adam_eps"):
        if getattr(args, flag) <= 0:
            raise ConfigError(f"--{flag} must be positive, got {getattr(args, flag)}")
    if not args.hidden_dims or min(args.hidden_dims) <= 0:
        raise ConfigError(f"--hidden_dims must be positive sizes, got {args.hidden_dims}")
    if args.lr_final is not None and args.likelihood == "gaussian":
        raise ConfigError("--lr_final: the Gaussian VAE's two learning rates take no schedule")
    if args.train_k != 1 and args.objective != "iwae" and args.resume is None:  # runs from before may hold one
        raise ConfigError(f"--train_k {args.train_k}: samples of the training bound, which only --objective iwae takes")
    if args.likelihood == "gaussian" and args.binarization != "threshold":
        raise ConfigError("--binarization dynamic: the Gaussian likelihood models grey-scale MNIST, not binary")


def default_name(args: argparse.Namespace) -> str:
    objective = f"_iwae{args.train_k}" if args.objective == "iwae" and args.train_k > 1 else ""
    activation = "_tanh" if args.model == "mlp" and args.activation == "tanh" else ""
    return (f"vae_{args.model}_z{args.z_dim}" + ("_gaussian" if args.likelihood == "gaussian" else "") + activation
            + objective + binarization_suffix(args) + ("_train60k" if args.train_on_all else ""))


def build_model(args: argparse.Namespace) -> VAE:
    from part1_vae.modules import VAE
    from part1_vae.networks import CNNDecoder, CNNEncoder, MLPDecoder, MLPEncoder

    if args.model == "mlp":
        encoder = MLPEncoder(784, args.hidden_dims, args.z_dim, args.activation)
        decoder = MLPDecoder(args.z_dim, args.hidden_dims, [1, 28, 28], args.activation)
    else:
        encoder = CNNEncoder(1, args.num_filters, args.z_dim)
        decoder = CNNDecoder(1, args.num_filters, args.z_dim)
    return VAE(encoder, decoder, z_dim=args.z_dim, lr=args.lr, iw_samples=args.iw_samples, likelihood=args.likelihood,
               objective=args.objective, train_k=args.train_k, adam_eps=args.adam_eps, lr_final=args.lr_final)


def build_datamodule(args: argparse.Namespace) -> MNISTDataModule:
    from shared.data import MNISTDataModule

    return MNISTDataModule(args.data_dir, args.batch_size, args.num_workers, args.seed,
                           binarize=args.likelihood == "bernoulli", train_on_all=args.train_on_all, subset=args.subset,
                           binarization=args.binarization, batches_per_call=args.batches_per_call)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(build_parser(), argv, check, default_name)
    import pytorch_lightning as pl

    from shared.experiment import run_experiment

    pl.seed_everything(args.seed, verbose=False)
    monitor = None if args.train_on_all else "val_bpd"  # with all 60,000, val images are training images
    return run_experiment(args, build_model(args), build_datamodule(args), monitor=monitor)


if __name__ == "__main__":
    run_script(main)

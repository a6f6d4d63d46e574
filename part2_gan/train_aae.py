"""Train an adversarial autoencoder on MNIST: python -m part2_gan.train_aae --prior swiss_roll.

Test metrics say how well the codes match the prior: test_d_acc (the discriminator's accuracy
on test codes vs prior samples, test_d_acc_codes and test_d_acc_prior apart: a perfect match gives 0.5 on each, but
a discriminator answering one way for all gives 0.5 on the mean too) and test_mmd2 (unbiased MMD^2 between the first
5,000 test codes and as many prior samples, RBF kernels at multiples of the prior's median distance) beside
test_mmd2_reference (the same between two prior samples: what a perfect match would give), the figure to trust.
After training, the samples (decoded prior samples, Bernoulli means) are scored by the judge as
for the GAN, and the figures join metrics.json under eval_*; during training, every --judge_every epochs,
into TensorBoard as for the GAN.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Sequence

from part2_gan.settings import (add_judge_curve_flags, add_judge_flags, check_adversarial, check_judge_curve_flags,
                                check_judge_flags)
from shared.cli import ConfigError, make_parser, parse_args
from shared.process import run_script

if TYPE_CHECKING:
    from part2_gan.aae import AAE
    from shared.data import MNISTDataModule

# torch and Lightning (5 s to import) are imported where a run is built, after its flags are checked: --help and a
# refused flag answer at once. The flags' defaults are the classes' own (tests/test_cli.py holds them equal).


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("part2_gan.train_aae", __doc__, epochs=50, lr=1e-3, batch_size=128)
    add = parser.add_argument
    add("--prior", choices=["gaussian", "mog", "swiss_roll"], default="gaussian",
        help="the distribution imposed on the codes")
    add("--z_dim", type=int, default=2, help="code size (mog and swiss_roll are 2-D)")
    add("--hidden_dim", type=int, default=512, help="units of each of the two hidden layers of every network")
    # As fast as the reconstruction step: at 2e-4 reconstruction pulled the codes off the prior faster than the
    # adversarial steps pulled them back (swiss roll, 2 epochs: test MMD^2 0.031 against 0.0045 at 1e-3).
    add("--lr_adv", type=float, default=1e-3,
        help="Adam learning rate of the discriminator and encoder-as-generator steps (--lr: the reconstruction step)")
    add("--binarize", action=argparse.BooleanOptionalAction, default=True,
        help="train on threshold-binarized MNIST or, with --no-binarize, grey-scale (BCE to grey targets)")
    add_judge_flags(parser)
    add_judge_curve_flags(parser)
    return parser


def check(args: argparse.Namespace) -> None:
    if args.z_dim < 2:
        raise ConfigError(f"--z_dim must be at least 2 (the latent map is 2-D), got {args.z_dim}")
    if args.prior != "gaussian" and args.z_dim != 2:
        raise ConfigError(f"--prior {args.prior} is 2-D: it needs --z_dim 2, got {args.z_dim}")
    if args.hidden_dim <= 0:
        raise ConfigError(f"--hidden_dim must be positive, got {args.hidden_dim}")
    if args.lr_adv <= 0:
        raise ConfigError(f"--lr_adv must be positive, got {args.lr_adv}")
    check_adversarial(args)
    check_judge_curve_flags(args)
    check_judge_flags(args)  # last: it reads the judge file, which imports torch


def default_name(args: argparse.Namespace) -> str:
    return f"aae_{args.prior}_z{args.z_dim}" + ("" if args.binarize else "_grey")


def build_model(args: argparse.Namespace) -> AAE:
    from part2_gan.aae import AAE
    from part2_gan.networks import AAEDecoder, AAEEncoder, LatentDiscriminator

    return AAE(AAEEncoder(784, args.hidden_dim, args.z_dim), AAEDecoder(args.z_dim, args.hidden_dim),
               LatentDiscriminator(args.z_dim, args.hidden_dim), prior=args.prior, z_dim=args.z_dim, lr=args.lr,
               lr_adv=args.lr_adv, data="binary" if args.binarize else "grey")


def build_datamodule(args: argparse.Namespace) -> MNISTDataModule:
    from shared.data import MNISTDataModule

    # All 60,000 training images, as for the GAN: nothing is chosen by validation.
    return MNISTDataModule(args.data_dir, args.batch_size, args.num_workers, args.seed,
                           binarize=args.binarize, train_on_all=True, subset=args.subset,
                           batches_per_call=args.batches_per_call)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(build_parser(), argv, check, default_name)
    import pytorch_lightning as pl

    from shared.experiment import run_judged_experiment

    pl.seed_everything(args.seed, verbose=False)
    return run_judged_experiment(args, build_model(args), build_datamodule(args))


if __name__ == "__main__":
    run_script(main)

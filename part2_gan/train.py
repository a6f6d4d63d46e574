"""Train a GAN on MNIST in [-1, 1]: python -m part2_gan.train --model mlp (grey-scale; --binarize:
threshold-binarized).

After training, the last checkpoint's samples are scored by the judge (shared.evaluation) and
the figures join the run's metrics.json under eval_*. While it trains, every --judge_every epochs
the judge scores a fixed draw of samples into TensorBoard (shared.judge_curve): judge_fd and the
class histogram, which shows a mode collapse.
"""
from __future__ import annotations

import argparse
from functools import partial
from typing import TYPE_CHECKING, Sequence

from part2_gan.settings import (add_judge_curve_flags, add_judge_flags, check_adversarial, check_judge_curve_flags,
                                check_judge_flags)
from shared.cli import ConfigError, make_parser, parse_args
from shared.flags import add_ema_decay_flag, number_or_none
from shared.process import run_script

if TYPE_CHECKING:
    from part2_gan.modules import GAN
    from shared.data import MNISTDataModule

# torch and Lightning (5 s to import) are imported where a run is built, after its flags are checked: --help and a
# refused flag answer at once. The flags' defaults are the classes' own (tests/test_cli.py holds them equal).


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("part2_gan.train", __doc__, epochs=250, lr=2e-4, batch_size=128)
    add = parser.add_argument
    add("--model", type=str.lower, choices=["mlp", "dcgan"], default="mlp", help="generator and discriminator networks")
    add("--z_dim", type=int, default=32, help="latent dimensions")
    add("--hidden_dims_gen", type=int, nargs="+", default=[128, 256, 512], help="MLP generator hidden sizes")
    add("--hidden_dims_disc", type=int, nargs="+", default=[512, 256], help="MLP discriminator hidden sizes")
    add("--dp_rate_gen", type=float, default=0.1, help="MLP generator dropout")
    add("--dp_rate_disc", type=float, default=0.3, help="MLP discriminator dropout")
    add("--num_filters", type=int, default=32, help="DCGAN channels of the widest-resolution stage")
    add("--gen_conv_blocks", type=int, default=0,
        help="DCGAN generator's extra 3x3 convolutions at 7x7 and at 14x14 each")
    add("--num_filters_disc", type=partial(number_or_none, kind=int), default=None,
        help="DCGAN discriminator's channels of its widest-resolution stage; none: --num_filters")
    add("--norm_disc", type=str.lower, choices=["batch", "spectral", "none"], default="batch",
        help="DCGAN discriminator's normalisation")
    add("--dp_rate_disc_dcgan", type=float, default=0.0, help="DCGAN discriminator dropout")
    add("--init", type=str.lower, choices=["default", "dcgan"], default="default",
        help="DCGAN weight initialisation: PyTorch's default or dcgan's N(0, 0.02)")
    add("--lr_disc", type=number_or_none, default=None, help="discriminator's Adam learning rate; none: --lr")
    add("--betas", type=float, nargs="+", default=[0.5, 0.999],
        help="Adam betas of both networks")
    add("--real_label", type=float, default=1.0,
        help="discriminator's target for real images, < 1 for one-sided label smoothing")
    add("--r1_gamma", type=float, default=0.0,
        help="weight of the R1 penalty on the discriminator's gradients at real images, e.g. 1; 0: off (per image, "
             "as Mescheder et al. define it, with --norm_disc spectral or none: through batch norm each image's "
             "gradient also runs through its batch's statistics)")
    add("--top_k", type=float, default=1.0,
        help="top-k training: the fraction of each batch's fakes, those the discriminator scores highest, that the "
             "generator's loss keeps once the schedule has decayed to it; 1: all")
    add("--top_k_decay", type=float, default=0.99,
        help="top-k training: the kept fraction in epoch e (from 0) is max(top_k_decay ** e, top_k)")
    add("--categorical_code", type=int, default=0,
        help="InfoGAN: this many one-hot code values join the latent, and the discriminator also guesses a fake's "
             "code (e.g. 10 for MNIST's digits); 0: off")
    add("--info_weight", type=float, default=1.0,
        help="with --categorical_code, the weight of the code's cross-entropy in both networks' losses")
    add_ema_decay_flag(parser, 0.0, "the generator's weights", "draw the samples, grids and judge figures")
    add("--binarize", action=argparse.BooleanOptionalAction, default=False,
        help="train on threshold-binarized MNIST (pixels > 0.5) instead of grey-scale")
    add("--interpolation_steps", type=int, default=5,
        help="images between the ends of each logged interpolation")
    add_judge_flags(parser)
    add_judge_curve_flags(parser)
    # The flags only some runs read, refused for the others (shared.cli): the setting that reads each, and the test.
    mlp, dcgan = ("--model mlp", lambda args: args.model == "mlp"), ("--model dcgan", lambda args: args.model == "dcgan")
    parser.used_only_with.update({
        **dict.fromkeys(["hidden_dims_gen", "hidden_dims_disc", "dp_rate_gen", "dp_rate_disc"], mlp),
        **dict.fromkeys(["num_filters", "gen_conv_blocks", "num_filters_disc", "norm_disc", "dp_rate_disc_dcgan",
                         "init"], dcgan),
        "info_weight": ("--categorical_code 2 or more", lambda args: args.categorical_code > 0),
        "top_k_decay": ("--top_k below 1", lambda args: args.top_k < 1)})
    return parser


def check(args: argparse.Namespace) -> None:
    for flag in ("z_dim", "num_filters", "num_filters_disc", "lr_disc", "info_weight"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            raise ConfigError(f"--{flag} must be positive, got {getattr(args, flag)}")
    for flag in ("hidden_dims_gen", "hidden_dims_disc"):
        sizes = getattr(args, flag)
        if not sizes or min(sizes) <= 0:
            raise ConfigError(f"--{flag} must be positive sizes, got {sizes}")
    for flag in ("dp_rate_gen", "dp_rate_disc", "dp_rate_disc_dcgan"):
        if not 0.0 <= getattr(args, flag) < 1.0:
            raise ConfigError(f"--{flag} must be in [0, 1), got {getattr(args, flag)}")
    if len(args.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in args.betas):
        raise ConfigError(f"--betas must be two values in [0, 1), got {args.betas}")
    for flag in ("gen_conv_blocks", "r1_gamma", "interpolation_steps", "categorical_code"):
        if getattr(args, flag) < 0:
            raise ConfigError(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    if args.categorical_code == 1:
        raise ConfigError("--categorical_code 1: a code of one value tells the discriminator nothing; 0 (off) or 2 and up")
    for flag in ("top_k", "top_k_decay"):
        if not 0.0 < getattr(args, flag) <= 1.0:
            raise ConfigError(f"--{flag} must be in (0, 1], got {getattr(args, flag)}")
    if not 0.5 < args.real_label <= 1.0:
        raise ConfigError(f"--real_label must be in (0.5, 1], got {args.real_label}")
    check_adversarial(args)
    check_judge_curve_flags(args)
    check_judge_flags(args)  # last: it reads the judge file, which imports torch


def default_name(args: argparse.Namespace) -> str:
    # No mark for --ema_decay: such a run holds the plain one too (its trained weights, evaluate.py --raw_weights).
    code = f"_code{args.categorical_code}" if args.categorical_code else ""
    return f"gan_{args.model}" + code + ("_binarized" if args.binarize else "")


def build_model(args: argparse.Namespace) -> GAN:
    from part2_gan.modules import GAN
    from part2_gan.networks import DiscriminatorDCGAN, DiscriminatorMLP, GeneratorDCGAN, GeneratorMLP

    latent_dims, outputs = args.z_dim + args.categorical_code, 1 + args.categorical_code
    if args.model == "mlp":
        generator = GeneratorMLP(latent_dims, args.hidden_dims_gen, [1, 28, 28], args.dp_rate_gen)
        discriminator = DiscriminatorMLP(784, args.hidden_dims_disc, args.dp_rate_disc, outputs)
    else:
        generator = GeneratorDCGAN(latent_dims, args.num_filters, args.init, args.gen_conv_blocks)
        discriminator = DiscriminatorDCGAN(args.num_filters_disc or args.num_filters, args.norm_disc,
                                           args.dp_rate_disc_dcgan, args.init, outputs)
    return GAN(generator, discriminator, z_dim=args.z_dim, lr=args.lr, betas=tuple(args.betas),
               interpolation_steps=args.interpolation_steps, data="binary" if args.binarize else "grey",
               lr_disc=args.lr_disc, real_label=args.real_label, ema_decay=args.ema_decay,
               r1_gamma=args.r1_gamma, top_k=args.top_k, top_k_decay=args.top_k_decay,
               num_categories=args.categorical_code, info_weight=args.info_weight)


def build_datamodule(args: argparse.Namespace) -> MNISTDataModule:
    from shared.data import MNISTDataModule

    return MNISTDataModule(args.data_dir, args.batch_size, args.num_workers, args.seed,
                           binarize=args.binarize, value_range="pm1", train_on_all=True, subset=args.subset,
                           batches_per_call=args.batches_per_call)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(build_parser(), argv, check, default_name)
    import pytorch_lightning as pl

    from shared.experiment import run_judged_experiment

    pl.seed_everything(args.seed, verbose=False)
    return run_judged_experiment(args, build_model(args), build_datamodule(args))


if __name__ == "__main__":
    run_script(main)

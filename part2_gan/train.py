"""Train a GAN on grey-scale MNIST in [-1, 1]: ``python -m part2_gan.train --model mlp``.

After training, the last checkpoint's samples are scored by the judge (shared.evaluation) and
the figures join the run's metrics.json under ``eval_*``.
"""
from __future__ import annotations

import argparse
from typing import Sequence

import pytorch_lightning as pl

from part2_gan.gan import GAN
from part2_gan.models import DiscriminatorDCGAN, DiscriminatorMLP, GeneratorDCGAN, GeneratorMLP
from shared.cli import ConfigError, make_parser, parse_args, run_experiment
from shared.data import BinarizedMNISTDataModule
from shared.evaluation import draw_samples, evaluate_samples, format_report
from shared.judge import DEFAULT_JUDGE_PATH, load_judge


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("part2_gan.train", __doc__, epochs=250, lr=2e-4, batch_size=128)
    add = parser.add_argument
    add("--model", choices=["mlp", "dcgan"], default="mlp")
    add("--z_dim", type=int, default=32)
    add("--hidden_dims_gen", type=int, nargs="+", default=[128, 256, 512], help="MLP generator hidden sizes")
    add("--hidden_dims_disc", type=int, nargs="+", default=[512, 256], help="MLP discriminator hidden sizes")
    add("--dp_rate_gen", type=float, default=0.1, help="MLP generator dropout")
    add("--dp_rate_disc", type=float, default=0.3, help="MLP discriminator dropout")
    add("--num_filters", type=int, default=32, help="DCGAN channels of the widest-resolution stage")
    add("--binarize", action=argparse.BooleanOptionalAction, default=False,
        help="train on threshold-binarized MNIST (pixels > 0.5) instead of grey-scale")
    add("--interpolation_steps", type=int, default=5, help="images between the ends of each logged interpolation")
    add_judge_flags(parser)
    return parser


def add_judge_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the judged evaluation after training (GAN, AAE)."""
    parser.add_argument("--eval_samples", type=int, default=10_000,
                        help="samples the judge scores after training (0: skip)")
    parser.add_argument("--judge", default=None,
                        help=f"judge checkpoint, trained there first if missing (default: {DEFAULT_JUDGE_PATH})")


def check_judge_flags(args: argparse.Namespace) -> None:
    if args.eval_samples == 1 or args.eval_samples < 0:
        raise ConfigError(f"--eval_samples must be 0 (skip) or at least 2, got {args.eval_samples}")


def check_adversarial_strategy(args: argparse.Namespace) -> None:
    """Plain DDP fails mid-step here: each optimizer step leaves the other network's parameters unused."""
    if args.strategy == "ddp":
        raise ConfigError("--strategy ddp: each of the adversarial steps leaves a network unused; "
                          "use --strategy ddp_find_unused_parameters_true")


def check(args: argparse.Namespace) -> None:
    for flag in ("z_dim", "num_filters"):
        if getattr(args, flag) <= 0:
            raise ConfigError(f"--{flag} must be positive, got {getattr(args, flag)}")
    for flag in ("hidden_dims_gen", "hidden_dims_disc"):
        sizes = getattr(args, flag)
        if not sizes or min(sizes) <= 0:
            raise ConfigError(f"--{flag} must be positive sizes, got {sizes}")
    for flag in ("dp_rate_gen", "dp_rate_disc"):
        if not 0.0 <= getattr(args, flag) < 1.0:
            raise ConfigError(f"--{flag} must be in [0, 1), got {getattr(args, flag)}")
    if args.interpolation_steps < 0:
        raise ConfigError(f"--interpolation_steps must be >= 0, got {args.interpolation_steps}")
    check_judge_flags(args)
    check_adversarial_strategy(args)


def default_name(args: argparse.Namespace) -> str:
    return f"gan_{args.model}" + ("_binarized" if args.binarize else "")


def build_model(args: argparse.Namespace) -> GAN:
    if args.model == "mlp":
        generator = GeneratorMLP(args.z_dim, args.hidden_dims_gen, [1, 28, 28], args.dp_rate_gen)
        discriminator = DiscriminatorMLP(784, args.hidden_dims_disc, args.dp_rate_disc)
    else:
        generator = GeneratorDCGAN(args.z_dim, args.num_filters)
        discriminator = DiscriminatorDCGAN(args.num_filters)
    return GAN(generator, discriminator, z_dim=args.z_dim, lr=args.lr, interpolation_steps=args.interpolation_steps)


def build_datamodule(args: argparse.Namespace) -> BinarizedMNISTDataModule:
    return BinarizedMNISTDataModule(args.data_dir, args.batch_size, args.num_workers, args.seed,
                                    binarize=args.binarize, value_range="pm1", train_on_all=True, subset=args.subset)


def judged_metrics(args: argparse.Namespace, model: GAN) -> dict:
    """The judge's figures for the trained model's samples, as the ``eval_*`` entries of metrics.json."""
    judge, record = load_judge(args.judge or DEFAULT_JUDGE_PATH, args.data_dir)
    samples = draw_samples(model, args.eval_samples, seed=args.seed)
    results = evaluate_samples(judge, samples, binarized=args.binarize, data_dir=args.data_dir, seed=args.seed)
    print(format_report(results, f"Sample quality of {args.name} (judge test accuracy {record['test_accuracy']:.4f})"))
    return {**{f"eval_{name}": value for name, value in results.items()},
            "eval_judge_test_accuracy": record["test_accuracy"]}


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(build_parser(), argv, check, default_name)
    pl.seed_everything(args.seed, verbose=False)
    model = build_model(args)
    judged = (lambda: judged_metrics(args, model)) if args.eval_samples else None
    return run_experiment(args, model, build_datamodule(args), monitor=None, extra_metrics=judged)


if __name__ == "__main__":
    main()

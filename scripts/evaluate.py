"""Score a run's samples with the judge, beside the same figures for real MNIST.

    python scripts/evaluate.py runs/gan_mlp/version_0
    python scripts/evaluate.py runs/vae_mlp_z20/version_0 --num_samples 10000 --json eval.json
    python scripts/evaluate.py runs/flow_mnist_c64_b4_s2/version_0 --temperature 1.0 --grid t1.png
    python scripts/evaluate.py runs/flow_mnist_c64_b4_s2_vardeq/version_0 --test_likelihood --raw_weights
    python scripts/evaluate.py runs/flow_mnist8bit_c64_b4_s2_vardeq/version_0 --test_likelihood --test_draws 8
    python scripts/evaluate.py runs/gan_dcgan_code/version_0 --per_digit --per_code

Works for a run of any command: its config.yaml names the command that made it, whose
build_model rebuilds the model; the checkpoint is the one the run's metrics.json names (the VAE's
best, the GAN's last), else last.ckpt, unless --checkpoint says otherwise. The model says what it
samples and which data it models (shared.generative): samples are compared with MNIST binarized as the
model's data was (by threshold, or dynamically), else with grey-scale MNIST; --reference overrides.
"""
from __future__ import annotations

import shared  # first: the OpenMP settings it makes (GOMP_SPINCOUNT) hold from torch's start, as in every command

import inspect
import json
import math
from pathlib import Path

from shared.checks import DEFAULT_JUDGE_PATH, bad_seed, unwritable
from shared.cli import OneLineArgumentParser
from shared.process import prepare_lightning_process, run_script
from shared.runs import DescriptionAndDefaultsFormatter, checkpoint_of, judge_file, load_run

# torch and Lightning (5 s to import) are imported once the flags are checked, as in the training commands: --help
# and a refused flag answer at once.

def test_likelihood(model, command, run_args) -> dict:
    """The run's test stage again, on this model: the same test set, the same seed first (shared.experiment)."""
    import pytorch_lightning as pl
    import torch

    from shared.callbacks import EvaluationProgress

    prepare_lightning_process()  # as a run's test stage
    datamodule = command.build_datamodule(run_args)
    # A run pinned to the CPU is tested there again: a GPU would draw other dequantization noise from the same seed.
    trainer = pl.Trainer(accelerator="cpu" if run_args.accelerator == "cpu" else "auto", devices=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[EvaluationProgress()])
    torch.manual_seed(run_args.seed)
    figures = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    print("Test stage: " + ", ".join(f"{key} {value:.4f}" for key, value in sorted(figures.items())), flush=True)
    return figures


def format_per_digit(samples: dict, real: dict) -> str:
    """Each digit's share and the judge's confidence, samples beside the test images, and the confidence with
    the digits drawn weighted alike (the mean max prob without the samples' digit mix)."""
    from shared.evaluation import NUM_DIGITS

    def shown(value, width):
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"

    lines = ["Per digit (as the judge names it)", f"  {'digit':<8}{'share':>10}{'real':>10}{'confidence':>12}{'real':>10}"]
    for digit in range(NUM_DIGITS):
        lines.append(f"  {digit:<8}{samples['share'][digit]:>10.3f}{real['share'][digit]:>10.3f}"
                     f"{shown(samples['confidence'][digit], 12)}{shown(real['confidence'][digit], 10)}")
    lines.append(f"  {'digits weighted alike':<28}{samples['confidence_digits_alike']:>12.4f}"
                 f"{real['confidence_digits_alike']:>10.4f}")
    return "\n".join(lines)


def per_code_figures(model, judge, samples_per_code: int, seed: int) -> list[dict]:
    """For each value of a GAN's categorical code, :func:`shared.evaluation.per_digit_figures` of
    ``samples_per_code`` samples drawn with it and the judge's mean confidence on them."""
    import torch

    from shared.evaluation import class_figures, per_digit_figures

    figures = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for code in range(model.hparams.num_categories):
            images = model.sample_with_code(samples_per_code, code)
            with torch.no_grad():
                logits = torch.cat([judge(batch) for batch in images.split(1000)])
            figures.append({**per_digit_figures(logits), "mean_max_prob": class_figures(logits)["mean_max_prob"]})
    return figures


def format_per_code(figures: list[dict], samples_per_code: int) -> str:
    """Each code value's two digits read most often, with their shares, and the judge's confidence."""
    from shared.evaluation import NUM_DIGITS

    lines = [f"Per code value ({samples_per_code:,} samples each; the digits the judge names most)",
             f"  {'code':<6}{'digit':>7}{'share':>8}{'next':>6}{'share':>8}{'confidence':>12}"]
    for code, digits in enumerate(figures):
        top = sorted(range(NUM_DIGITS), key=lambda digit: -digits["share"][digit])[:2]
        lines.append(f"  {code:<6}{top[0]:>7}{digits['share'][top[0]]:>8.3f}{top[1]:>6}{digits['share'][top[1]]:>8.3f}"
                     f"{digits['mean_max_prob']:>12.4f}")
    purity = sum(max(digits["share"]) for digits in figures) / len(figures)
    lines.append(f"  mean share of a code's most read digit: {purity:.3f}")
    # That share is near 1 for a code the generator ignores (every value drawing the same digit): InfoGAN's figure is
    # the share under the best one-to-one matching of code values to digits.
    matched, distinct = code_digit_matching([digits["share"] for digits in figures])
    lines.append(f"  share under the best one-to-one matching of code values to digits: {matched:.3f} "
                 f"({distinct} distinct most read digits)")
    return "\n".join(lines)


def code_digit_matching(shares: list[list[float]]) -> tuple[float, int]:
    """(the mean share of each code value's digit under the best one-to-one matching of values to digits, how many
    distinct digits the values' most read ones are), from each value's shares of the ten digits."""
    from scipy.optimize import linear_sum_assignment

    values, digits = linear_sum_assignment(shares, maximize=True)
    matched = sum(shares[value][digit] for value, digit in zip(values, digits)) / len(shares)
    return matched, len({max(range(len(row)), key=row.__getitem__) for row in shares})


def main(argv=None) -> dict:
    parser = OneLineArgumentParser(prog="scripts/evaluate.py", description=__doc__,
                                   formatter_class=DescriptionAndDefaultsFormatter)
    parser.add_argument("run_dir", type=Path, help="a run directory, runs/<name>/version_N")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="the checkpoint to score: a path, or a file of the run's checkpoints/ folder; none: "
                             "the one the run's metrics.json names, else last.ckpt")
    parser.add_argument("--num_samples", type=int, default=10_000, help="samples the judge scores")
    parser.add_argument("--seed", type=int, default=0, help="for the samples and the real training images drawn")
    parser.add_argument("--means", action="store_true",
                        help="score the per-pixel means the samples are drawn from (the VAE's) instead of the samples")
    parser.add_argument("--raw_weights", action="store_true",
                        help="for a model trained with --ema_decay (GAN, flow): score the trained weights, not their average")
    parser.add_argument("--test_likelihood", action="store_true",
                        help="also run the run's test stage on its checkpoint (the likelihood of the test set, from the "
                             "run's seed, as the run did); with --raw_weights, of the trained weights")
    parser.add_argument("--test_draws", type=int, default=None,
                        help="with --test_likelihood, for a flow: dequantization draws per test image instead of the "
                             "run's (the tutorial's protocol: 8)")
    parser.add_argument("--reference", choices=["auto", "grey", "binarized", "dynamic"], default="auto",
                        help="MNIST to compare with (auto: the run's own, binarized as it was, or grey-scale; binarized: "
                             "by threshold; dynamic: dynamically binarized)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="scale on the base noise, for a model that samples at one (the flow); none: the run's")
    parser.add_argument("--per_digit", action="store_true",
                        help="also each digit's share of the samples and the judge's mean confidence on it, beside "
                             "the test images'")
    parser.add_argument("--per_code", action="store_true",
                        help="for a GAN with a categorical code: the digits the judge reads in --num_samples / K "
                             "samples of each of its K code values")
    parser.add_argument("--judge", type=judge_file, default=DEFAULT_JUDGE_PATH, help="trained there first if missing")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument("--grid", type=Path, default=None, help="also save the first 64 samples as an 8x8 PNG grid")
    args = parser.parse_args(argv)
    if args.num_samples < 2:
        parser.error(f"--num_samples must be at least 2, got {args.num_samples}")
    if args.temperature is not None and not 0 < args.temperature < math.inf:  # NaN too (it crashed MKL)
        parser.error(f"--temperature must be positive and finite, got {args.temperature}")
    if problem := bad_seed(args.seed):
        parser.error(problem)
    if args.test_draws is not None and args.test_draws < 1:
        parser.error(f"--test_draws must be at least 1, got {args.test_draws}")
    if args.test_draws is not None and not args.test_likelihood:
        parser.error("--test_draws comes with --test_likelihood (the draws of its test stage)")
    for flag, path in (("--json", args.json), ("--grid", args.grid)):  # found now, not after minutes of scoring
        if path is None:
            continue
        if not path.parent.is_dir():
            parser.error(f"{flag} {path}: there is no folder {path.parent} to write it in")
        if path.is_dir():
            parser.error(f"{flag} {path} is a folder: pass a file name")
        if problem := unwritable(path.parent):
            parser.error(f"{flag} {path}: {problem}")
    if args.grid is not None and args.grid.suffix.lower() != ".png":
        parser.error(f"--grid {args.grid}: the grid is a PNG; pass a name ending in .png")

    from shared.data import DataFileError
    from shared.evaluation import draw_samples, evaluate_samples, format_report
    from shared.generative import GenerativeModel
    from shared.judge import load_judge
    from shared.utils import make_grid, save_grid

    model, command, run_args = load_run(args.run_dir, args.checkpoint)
    checkpoint = checkpoint_of(args.run_dir, args.checkpoint)
    if not isinstance(model, GenerativeModel):
        parser.error(f"{args.run_dir}: {type(model).__name__} does not sample images (it is no "
                     f"shared.generative.GenerativeModel): its run's figures are its metrics.json and samples/ plots")
    if args.per_code and not getattr(model, "hparams", {}).get("num_categories"):
        parser.error(f"--per_code: {args.run_dir} has no categorical code (trained without --categorical_code)")
    if args.per_code and args.num_samples < model.hparams.num_categories:  # before the scoring, not after it
        parser.error(f"--per_code: --num_samples {args.num_samples} leaves no sample for each of the "
                     f"{model.hparams.num_categories} code values; pass {model.hparams.num_categories} or more")
    if args.raw_weights:
        if not model.keeps_weight_average:
            parser.error(f"--raw_weights: {args.run_dir} keeps no weight average (trained without --ema_decay)")
        model.sample_from_average = False
    if args.test_draws is not None:
        if "test_dequant_samples" not in model.hparams:
            parser.error(f"--test_draws: {type(model).__name__} draws no dequantization noise")
        model.hparams.test_dequant_samples = args.test_draws
    if args.temperature is not None:
        if "temperature" not in model.hparams:
            parser.error(f"--temperature: {type(model).__name__} samples at no temperature")
        model.hparams.temperature = args.temperature
    if args.test_likelihood and getattr(model, "likelihood_kind", None) is None:
        parser.error(f"--test_likelihood: {type(model).__name__} defines no likelihood")
    if args.test_likelihood and not hasattr(command, "build_datamodule"):
        parser.error(f"--test_likelihood: {command.__name__} has no build_datamodule(args) to rebuild the run's data")
    if args.means and "means" not in inspect.signature(model.sample).parameters:  # before minutes of testing
        parser.error(f"--means: {type(model).__name__} samples no means (its sample() takes no 'means')")
    unfinished = "" if (args.run_dir / "metrics.json").is_file() else " (the run has not finished: no metrics.json)"
    print(f"Loaded {type(model).__name__} from {checkpoint}{unfinished}", flush=True)  # after the refusals: one line
    try:  # before minutes of testing and scoring, and before any output
        judge, record = load_judge(args.judge, run_args.data_dir)
    except DataFileError as err:
        raise SystemExit(f"error: {err}") from None
    likelihood = test_likelihood(model, command, run_args) if args.test_likelihood else {}
    try:
        samples = draw_samples(model, args.num_samples, seed=args.seed, means=args.means)
    except ValueError as err:
        raise SystemExit(f"error: cannot use the samples of {args.run_dir}: {err}") from None
    if args.reference == "auto":
        binarized = model.data == "binary"
        dynamic = binarized and getattr(run_args, "binarization", "threshold") == "dynamic"
    else:
        binarized, dynamic = args.reference != "grey", args.reference == "dynamic"
    results = evaluate_samples(judge, samples, binarized=binarized, data_dir=run_args.data_dir, seed=args.seed,
                               per_digit=args.per_digit, dynamic=dynamic)
    # How the figures were made, as the table's title says too: the same call gives the same figures.
    results.update(judge_test_accuracy=record["test_accuracy"], checkpoint=checkpoint.name, seed=args.seed,
                   raw_weights=args.raw_weights, means=args.means, **likelihood)
    made = [checkpoint.name, *["trained weights, not their average"] * args.raw_weights, *["means"] * args.means]
    if "temperature" in model.hparams:
        results["temperature"] = model.hparams.temperature
        made.append(f"temperature {model.hparams.temperature:g}")
    print(format_report(results, f"Sample quality of {args.run_dir} ({', '.join(made)}; seed {args.seed}; judge test "
                                 f"accuracy {record['test_accuracy']:.4f})"))
    if args.per_digit:
        print(format_per_digit(results["per_digit"], results["real_per_digit"]))
    if args.per_code:
        samples_per_code = args.num_samples // model.hparams.num_categories
        results["per_code"] = per_code_figures(model, judge, samples_per_code, args.seed)
        print(format_per_code(results["per_code"], samples_per_code))
    if args.grid:  # the outputs once every figure is in
        save_grid(make_grid(samples[:64]), args.grid)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return results


if __name__ == "__main__":
    run_script(main)

"""Compare every model on MNIST in one report: ``python scripts/compare.py`` -> ``reports/comparison-<time>/``.

Loads the latest finished run of each model under ``--log_dir`` (``runs/<name>/version_N`` with a metrics.json);
where a model has none, it trains a short default run first (or finishes the one an interrupt stopped) and the
report says so. Each call writes a new report, ``comparison.md`` and its figures in a new folder
``--out/comparison-YYYYmmdd-HHMMSS``, and deletes nothing;
``--replace`` rewrites the shipped one, ``--out/comparison.md`` and its figures in ``--out/comparison/`` (whose old
figures it removes). Nothing is written there until every figure and line is made. The report:

  1. likelihood on the test set, one table per MNIST variant: the mixture (exact), the VAEs (ELBO and the
     importance-weighted bound), the flows (dequantized bound); parameters and training time;
  2. sample quality of every generator by the judge of ``shared.evaluation`` against real images of its own variant
     (one table per reference, with that ceiling), and how fast each model samples;
  3. 8x8 sample grids; latent interpolations from the VAE, the GAN and the flow, and the VAE between two test images;
  4. latent maps: the 2-D VAE's posterior means and a t-SNE of the 20-D VAE's (scikit-learn), coloured by digit;
  5. Frankenstein digits: AUROC of each likelihood as a detector on digits of its own variant, ten of each shown;
  6. a reading of the tables, written from the numbers measured in this call, ranking within a variant only
     (variants are told apart by shared.report_variants).
"""
from __future__ import annotations

import shared  # first: the OpenMP settings it makes (GOMP_SPINCOUNT) hold from torch's start, as in every command
import argparse
import itertools
import shutil
import tempfile
import time
from importlib import import_module
from pathlib import Path

import torch

from shared.checks import bad_seed, unwritable
from shared.cli import OneLineArgumentParser
from shared.data import load_mnist
from shared.judge import DEFAULT_JUDGE_PATH, load_judge
from shared.report import (TSNE_PERPLEXITY, Loaded, Model, data_of, frankenstein_figure, has_likelihood, interpolation_figure,
                           interpolation_rows, latent_map_figure, load_tsne, mapped_vaes, phase, quality_tables, reading,
                           sample_figure)
from shared.report_variants import (frankenstein_scores, frankenstein_sets, frankenstein_tables, header, likelihood_tables,
                                    mark, sample_quality, variant_images)
from shared.process import run_script
from shared.runs import (DescriptionAndDefaultsFormatter, command_settings, finished_runs, folder, interrupted_run,
                         judge_file, load_run, positive_int, run_settings, run_versions)
from shared.yaml_file import read_json_record

REPO = Path(__file__).resolve().parent.parent

MODELS = (
    Model("mixture", "Bernoulli mixture (K=20)", "mixture", "mixture_k20", "part1_vae.train_mixture",
          (), ("--epochs", "2")),
    Model("vae", "VAE (MLP, z=20)", "VAE z=20", "vae_mlp_z20", "part1_vae.train",
          (), ("--epochs", "2", "--iw_samples", "100")),
    Model("vae", "VAE (MLP, z=2)", "VAE z=2", "vae_mlp_z2", "part1_vae.train",
          ("--config", "configs/vae_mlp_z2.yaml"), ("--epochs", "2", "--iw_samples", "100"), judged=False),
    Model("vae", "VAE (CNN, z=20)", "VAE CNN", "vae_cnn_z20", "part1_vae.train",
          ("--config", "configs/vae_cnn_z20.yaml"), ("--epochs", "1", "--iw_samples", "10")),
    Model("gan", "GAN (MLP)", "GAN", "gan_mlp", "part2_gan.train",
          (), ("--epochs", "2", "--eval_samples", "0")),
    Model("gan", "GAN (DCGAN)", "DCGAN", "gan_dcgan", "part2_gan.train",
          ("--config", "configs/gan_dcgan.yaml"), ("--epochs", "1", "--eval_samples", "0")),
    Model("gan", "GAN (DCGAN + categorical code)", "DCGAN code", "gan_dcgan_code", "part2_gan.train",
          ("--config", "configs/gan_dcgan_code.yaml"), ("--epochs", "1", "--eval_samples", "0")),
    Model("flow", "Flow (RealNVP)", "flow", "flow_mnist_c64_b4_s2_vardeq", "part3_flows.train",
          ("--config", "configs/flow_mnist.yaml"), ("--epochs", "1")),
    Model("flow", "Flow (RealNVP, 8-bit)", "flow 8-bit", "flow_mnist8bit_c64_b4_s2_vardeq", "part3_flows.train",
          ("--config", "configs/flow_mnist8bit.yaml"), ("--epochs", "1")),
)


def shipped_flags(spec: Model) -> list[str]:
    return [str(REPO / flag) if flag.startswith("configs/") else flag for flag in spec.flags]


# Settings that say where a run was written, not what it trained.
WHERE = ("log_dir", "name", "data_dir")


def planned_and_trained(spec: Model, run_dir: Path) -> tuple[argparse.ArgumentParser, dict, dict]:
    """(the command's parser, the settings of the shipped command, those the run trained with)."""
    module = import_module(spec.train_module)
    return module.build_parser(), vars(command_settings(module, shipped_flags(spec))), vars(run_settings(run_dir)[1])


def shortened(spec: Model, run_dir: Path, metrics: dict) -> str:
    """How a run falls short of its shipped command (fewer epochs, a subset of the images), whoever trained it."""
    _, planned, trained = planned_and_trained(spec, run_dir)
    short = [f"{metrics['epochs']} of {planned['epochs']} epochs"] * (metrics["epochs"] < planned["epochs"])
    return ", ".join(short + [f"--subset {trained['subset']}"] * bool(trained.get("subset")))


def command(loaded: Loaded) -> str:
    """The shipped command, with a flag added for each setting the run trained with another value of."""
    parser, planned, trained = planned_and_trained(loaded.spec, loaded.run_dir)
    actions = {action.dest: action for action in parser._actions}
    extra = [word for key, value in trained.items() if key in actions and key not in (*WHERE, *trained["unused"])
             and value != planned.get(key) for word in flag_words(actions[key], value)]
    return " ".join(["python -m", loaded.spec.train_module, *loaded.spec.flags, *extra])


def flag_words(action: argparse.Action, value) -> list[str]:
    flag = action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        return [flag if value else f"--no-{flag[2:]}"]
    if isinstance(action, argparse._StoreTrueAction):
        return [flag] if value else []
    if value is None:
        return [flag, "none"]
    return [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]


def load_or_train(spec: Model, log_dir: Path, subset: int | None) -> Loaded:
    """The latest finished run of ``spec``; a short default run trained now if there is none (finished, if an
    interrupt stopped one)."""
    trained_here = not finished_runs(log_dir, spec.name)
    if trained_here:
        module, extra = import_module(spec.train_module), ["--subset", str(subset)] if subset else []
        flags = [*shipped_flags(spec), *spec.short_flags, *extra, "--log_dir", str(log_dir), "--name", spec.name]
        interrupted = interrupted_run(module, flags)
        print(f"No finished run of {spec.name} under {log_dir}: " + (
            f"finishing the short run an interrupt stopped, {interrupted}" if interrupted else
            f"training a short default run ({' '.join(spec.short_flags)})"), flush=True)
        module.main(["--resume", str(interrupted)] if interrupted else flags)
    run_dir = finished_runs(log_dir, spec.name)[-1]
    versions = run_versions(log_dir, spec.name)
    newer = [run.name for run in versions[versions.index(run_dir) + 1:]]  # so unfinished
    if newer:
        print(f"{spec.name}: {', '.join(newer)} newer but unfinished (no metrics.json): {run_dir.name} is compared",
              flush=True)
    start = time.perf_counter()
    model = load_run(run_dir)[0]
    print(f"Loaded {spec.label} from {run_dir} ({time.perf_counter() - start:.1f} s)", flush=True)
    try:
        timing = read_json_record(run_dir / "timing.json") if (run_dir / "timing.json").is_file() else {}
        metrics = read_json_record(run_dir / "metrics.json")
    except ValueError as err:
        raise SystemExit(f"error: {err}: delete it, and --resume the run to test it and write both records anew") from None
    fit_seconds = timing.get("total_fit_seconds", timing.get("fit_seconds"))
    return Loaded(spec, model, run_dir, metrics, fit_seconds, trained_here, shortened(spec, run_dir, metrics))


# --- The command ------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="scripts/compare.py", description=__doc__,
                                   formatter_class=DescriptionAndDefaultsFormatter)
    parser.add_argument("--log_dir", type=folder, default=Path("runs"),
                        help="folder of the runs compared (the commands' --log_dir); missing ones are trained there")
    parser.add_argument("--out", type=folder, default=Path("reports"),
                        help="the folder that holds the reports: a new comparison-YYYYmmdd-HHMMSS/ each call")
    parser.add_argument("--replace", action="store_true",
                        help="rewrite the shipped report instead: OUT/comparison.md and its figures in OUT/comparison/")
    parser.add_argument("--num_samples", type=int, default=10_000, help="samples per generator for the judge")
    parser.add_argument("--frankenstein", type=int, default=500, help="natural and Frankenstein images scored")
    parser.add_argument("--iw_samples", type=int, default=100,
                        help="importance samples per image for the Frankenstein scores of importance-weighted bounds")
    parser.add_argument("--subset", type=positive_int, default=None, help="images per split for short runs trained here")
    parser.add_argument("--judge", type=judge_file, default=DEFAULT_JUDGE_PATH, help="trained there first if missing")
    parser.add_argument("--seed", type=int, default=0, help="for the samples, the digits scored and the figures")
    parser.add_argument("--models", nargs="+", choices=[spec.name for spec in MODELS], metavar="NAME",
                        help="only these models, by run name: " + ", ".join(spec.name for spec in MODELS) +
                        " (default: every one)")
    parser.add_argument("--tsne_points", type=int, default=3000,
                        help="test images in the t-SNE map of the 20-D VAE (3,000: about 20 s on a 2-core CPU)")
    return parser


def destination(out: Path, replace: bool) -> tuple[Path, Path]:
    """(the report's path, its figures' folder), both ready to write: a new folder (no call overwrites a report), or
    with ``replace`` the shipped report's, whose old figures (its PNGs, nothing else there) are removed."""
    if replace:
        figures = out / "comparison"
        figures.mkdir(parents=True, exist_ok=True)
        for old in (png for png in figures.glob("*.png") if png.is_file()):
            old.unlink()
        return out / "comparison.md", figures
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in itertools.count(1):
        folder = out / (f"comparison-{stamp}" if attempt == 1 else f"comparison-{stamp}-{attempt}")
        try:
            folder.mkdir(parents=True)  # fails if the folder exists: a call in the same second took that name
        except FileExistsError:
            continue
        return folder / "comparison.md", folder


def main(argv=None, specs: tuple[Model, ...] = MODELS) -> Path:
    """Write the report on ``specs`` (default: every model of the project)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("num_samples", "frankenstein", "iw_samples"):
        if getattr(args, flag) < 2:
            parser.error(f"--{flag} must be at least 2, got {getattr(args, flag)}")
    if problem := bad_seed(args.seed):
        parser.error(problem)
    if args.tsne_points <= TSNE_PERPLEXITY:
        parser.error(f"--tsne_points must be more than t-SNE's perplexity ({TSNE_PERPLEXITY}), got {args.tsne_points}")
    if args.replace and ((args.out / "comparison.md").is_dir() or (args.out / "comparison").is_file()):  # found now
        parser.error(f"--replace: {args.out} holds a folder comparison.md or a file comparison: move it away")
    if problem := unwritable(args.out):
        parser.error(f"--out {args.out}: {problem}")
    if not args.log_dir.is_dir():  # a mistyped folder would start hours of training
        parser.error(f"--log_dir {args.log_dir}: no such folder; compare.py trains each model that has no finished run "
                     f"there (hours on a CPU): make the folder first to have them trained")
    torch.manual_seed(args.seed)
    models = [load_or_train(spec, args.log_dir, args.subset) for spec in specs
              if args.models is None or spec.name in args.models]
    if any(m.model.hparams.z_dim > 2 for m in mapped_vaes(models)):
        load_tsne()  # a missing scikit-learn fails here, not after minutes of sampling

    judge, record = load_judge(args.judge)
    quality = sample_quality(models, judge, args.num_samples, args.seed)

    test_uint8, test_labels = load_mnist("test")
    test_images = {variant: variant_images(variant, test_uint8) for variant in sorted(set(map(data_of, models)))}
    scored = [m for m in models if has_likelihood(m)]  # (--models may name none, or no judged model)
    sets = frankenstein_sets(sorted(set(map(data_of, scored))), test_uint8, test_labels, args.frankenstein,
                             args.seed) if scored else {}  # each variant's own digits, spliced alike
    scores, aurocs = frankenstein_scores(models, sets, args.iw_samples, args.seed) if scored else ({}, {})

    drawn = Path((staging := tempfile.TemporaryDirectory()).name)  # staged: a call that fails writes nothing to --out
    with phase("Figures"):
        names = {
            "samples": quality and sample_figure(quality, drawn / "samples.png"),
            "interpolations": interpolation_figure(interpolation_rows(models, test_images), drawn / "interpolations.png"),
            "frankenstein": scored and frankenstein_figure(sets, models, scores, drawn / "frankenstein.png"),
        }
        latent_map = latent_map_figure(models, test_images, test_labels, drawn / "latent_maps.png",
                                       args.tsne_points, args.seed)  # (file name, caption), or None
    figures_prefix = "comparison/" if args.replace else ""  # links are relative to the report
    short = [m for m in models if m.trained_here]
    report = [
        "# Model comparison on MNIST",
        "",
        f"Written by `python scripts/compare.py` on {time.strftime('%Y-%m-%d %H:%M')}; every number below was "
        f"measured in that call or read from the runs' `metrics.json`. {header(models)}",
        "",
    ]
    if short:
        report += ["**Short runs:** no finished run existed for " + ", ".join(m.spec.label for m in short) +
                   ", so this call trained a short default run of each; their figures say little. Train them with "
                   "the commands below and run this script again.", ""]
    report += ["## Runs", "", "| model | data | run | epochs | command |", "| --- | --- | --- | ---: | --- |"]
    report += [f"| {m.spec.label} | {data_of(m)} | `{m.run_dir}`{mark(m)} | {m.metrics['epochs']} | `{command(m)}` |"
               for m in models]
    report += [""]
    if scored:
        report += ["## Likelihood", "", *likelihood_tables(models),
                   "bpd = NLL / (784 ln 2). The VAE's test bpd is the importance-weighted bound "
                   "(its run's `--iw_samples`); the GAN has no likelihood.", ""]
    if quality:
        report += ["## Sample quality", "",
                   f"{args.num_samples:,} samples per model, scored by the judge (test accuracy "
                   f"{record['test_accuracy']:.4f}); the Fréchet distance is between judge features of the samples "
                   "and of the 10,000 test images of the MNIST variant the model models (one table per variant); the "
                   f"ceiling row scores {args.num_samples:,} real training images of that variant the same way. "
                   "Samples/s: drawing on this machine's CPU, batches of 1,000.",
                   *[f"{m.spec.label} samples at temperature {m.model.hparams.temperature} (its run's scale on the "
                     "base noise)." for m in models if "temperature" in m.model.hparams], "",
                   *quality_tables(quality), f"![samples]({figures_prefix}{names['samples']})", ""]
    if names["interpolations"]:
        report += ["## Interpolations", "",
                   "Linear paths in latent space, ends included: between prior draws (VAE, GAN) and between the "
                   "codes of two test images, each model's in its own MNIST variant (VAE encoder means; the flow's exact "
                   "inverse).", "",
                   f"![interpolations]({figures_prefix}{names['interpolations']})", ""]
    if latent_map:
        report += ["## Latent spaces", "", latent_map[1], "", f"![latent maps]({figures_prefix}{latent_map[0]})", ""]
    if scored:
        report += ["## Frankenstein digits", "",
                   f"{args.frankenstein} test digits and as many Frankenstein digits (left half of one test digit, "
                   "right half of a digit of another class). AUROC of -log p(x) as a detector of Frankenstein digits "
                   f"(VAE: importance-weighted bound with k = {args.iw_samples}). Each model scores the digits of its "
                   "own MNIST variant (the same digits, spliced alike), and AUROCs are ranked within a variant only.",
                   "", *frankenstein_tables(models, scores, aurocs),
                   f"![frankenstein]({figures_prefix}{names['frankenstein']})", ""]
    report += ["## Reading", "", *reading(models, quality, aurocs), ""]
    path, figures = destination(args.out, args.replace)  # once every figure and line is made
    shutil.copytree(drawn, figures, dirs_exist_ok=True)
    path.write_text("\n".join(report))
    staging.cleanup()
    print(f"Report: {path} (figures in {figures})", flush=True)
    return path


if __name__ == "__main__":
    run_script(main)

"""Compare every model on MNIST in one report: ``python scripts/compare.py`` -> ``reports/comparison.md``.

Loads the latest finished run of each model under ``--log_dir`` (``runs/<name>/version_N`` with a
metrics.json). Where a model has none, it trains a short default run first and the report says so
(train the real thing with the command in the table's last column). The report and its figures are
written from scratch on every call:

  1. likelihood on the threshold-binarized test set: the mixture (exact), the VAEs (ELBO and the
     importance-weighted bound), the flow (exact dequantized bound); parameters and training time;
  2. sample quality of every generator with the judge of ``shared.evaluation``, real images as the ceiling,
     and how fast each model samples;
  3. 8x8 sample grids side by side; latent interpolations from the VAE, the GAN and the flow, and the
     VAE between two *encoded* test images;
  4. latent maps: the 2-D VAE's posterior means and a PCA of the 20-D VAE's, coloured by digit;
  5. Frankenstein digits: AUROC of each likelihood as a detector, and ten of each with their log p;
  6. a reading of the tables, written from the numbers measured in this call.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from importlib import import_module
from pathlib import Path

import torch
import yaml

from shared.data import load_mnist, to_model_range
from shared.evaluation import draw_samples, evaluate_samples, real_reference
from shared.cli import parse_args
from shared.frankenstein import frankenstein_auroc, frankenstein_digits
from shared.judge import DEFAULT_JUDGE_PATH, load_judge
from shared.report import (Loaded, Model, frankenstein_figure, interpolation_figure, interpolation_rows,
                           latent_map_figure, sample_figure)
from shared.runs import finished_runs, load_run

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
    Model("flow", "Flow (RealNVP)", "flow", "flow_mnist_c64_b4_s2", "part3_flows.train",
          ("--config", "configs/flow_mnist.yaml"), ("--epochs", "1")),
)


def shipped_flags(spec: Model) -> list[str]:
    return [str(REPO / flag) if flag.startswith("configs/") else flag for flag in spec.flags]


def command(loaded: Loaded) -> str:
    """The shipped command, with ``--epochs`` added where the run trained for another number of epochs."""
    module = import_module(loaded.spec.train_module)
    planned = parse_args(module.build_parser(), shipped_flags(loaded.spec), module.check, module.default_name,
                         getattr(module, "task_defaults", None)).epochs
    trained = yaml.safe_load((loaded.run_dir / "config.yaml").read_text())["epochs"]
    extra = ["--epochs", str(trained)] if planned != trained else []
    return " ".join(["python -m", loaded.spec.train_module, *loaded.spec.flags, *extra])


def load_or_train(spec: Model, log_dir: Path, subset: int | None) -> Loaded:
    """The latest finished run of ``spec``; a short default run trained now if there is none."""
    trained_here = not finished_runs(log_dir, spec.name)
    if trained_here:
        print(f"No finished run of {spec.name} under {log_dir}: training a short default run "
              f"({' '.join(spec.short_flags)})", flush=True)
        flags = shipped_flags(spec)
        extra = ["--subset", str(subset)] if subset else []
        import_module(spec.train_module).main([*flags, *spec.short_flags, *extra, "--log_dir", str(log_dir),
                                               "--name", spec.name])
    run_dir = finished_runs(log_dir, spec.name)[-1]
    model = load_run(run_dir)[0]
    timing = json.loads((run_dir / "timing.json").read_text()) if (run_dir / "timing.json").is_file() else {}
    fit_seconds = timing.get("total_fit_seconds", timing.get("fit_seconds"))
    return Loaded(spec, model, run_dir, json.loads((run_dir / "metrics.json").read_text()), fit_seconds, trained_here)


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- Likelihoods --------------------------------------------------------------------------------------

@torch.no_grad()
def log_likelihood(model, images: torch.Tensor, iw_samples: int, batch_size: int = 500) -> torch.Tensor:
    """log p(x) in nats per image as the model computes it (shared.generative), with ``iw_samples``
    importance samples for an importance-weighted bound and the model's own test setting otherwise."""
    samples = iw_samples if model.likelihood_kind == "importance-weighted bound" else None
    return torch.cat([model.log_likelihood(batch, samples) for batch in images.split(batch_size)])


def has_likelihood(loaded: Loaded) -> bool:
    return loaded.model.likelihood_kind is not None


def test_bpd(loaded: Loaded) -> float:
    """The model's headline test figure: its likelihood's, as it names the metric."""
    return loaded.metrics[loaded.model.likelihood_metric]


def likelihood_rows(models: list[Loaded]) -> list[str]:
    rows = ["| model | test bpd | test NLL (nats) | kind of figure | other test figures (bpd) | parameters | epochs "
            "| training time | run |",
            "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | --- |"]
    for loaded in filter(has_likelihood, models):
        model, metrics = loaded.model, loaded.metrics
        bpd = test_bpd(loaded)
        nats = bpd * model.num_dims * math.log(2)
        others = ", ".join(f"{key}: {value:.4f}" for key, value in sorted(metrics.items())
                           if key.startswith("test_") and key.endswith("bpd") and key != model.likelihood_metric)
        rows.append(f"| {loaded.spec.label} | {bpd:.4f} | {nats:.1f} | {model.likelihood_kind} | {others} | "
                    f"{num_parameters(model):,} | {metrics['epochs']} | {seconds(loaded.fit_seconds)} | "
                    f"`{loaded.run_dir}`{mark(loaded)} |")
    return rows


def seconds(value: float | None) -> str:
    return "?" if value is None else (f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min")


def mark(loaded: Loaded) -> str:
    return " (short run trained by compare.py)" if loaded.trained_here else ""


# --- Sample quality -------------------------------------------------------------------------------------

def sample_quality(models: list[Loaded], judge, num_samples: int, seed: int) -> list[dict]:
    references = {}
    results = []
    for loaded in (m for m in models if m.spec.judged):
        start = time.perf_counter()
        samples = draw_samples(loaded.model, num_samples, seed=seed)
        rate = num_samples / (time.perf_counter() - start)
        binary = loaded.model.data == "binary"
        if binary not in references:
            references[binary] = real_reference(judge, binary, num_samples, seed=seed)
        figures = evaluate_samples(judge, samples, binarized=binary, reference=references[binary])
        results.append({"loaded": loaded, "samples": samples, "images_per_second": rate, **figures})
    return results


def quality_rows(results: list[dict]) -> list[str]:
    rows = ["| model | compared with | Fréchet distance | Inception score | digits covered | KL(classes ‖ uniform) "
            "| mean max prob | samples / s |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    ceilings = {}
    for r in results:
        rows.append(f"| {r['loaded'].spec.label} | {r['reference']} | {r['frechet_distance']:.2f} | "
                    f"{r['inception_score']:.2f} | {r['digits_covered']} | {r['class_kl_to_uniform']:.3f} | "
                    f"{r['mean_max_prob']:.3f} | {r['images_per_second']:,.0f} |")
        ceilings[r["reference"]] = r
    for reference, r in ceilings.items():
        rows.append(f"| *real MNIST ({reference})* | ceiling | {r['real_frechet_distance']:.2f} | "
                    f"{r['real_inception_score']:.2f} | {r['real_digits_covered']} | "
                    f"{r['real_class_kl_to_uniform']:.3f} | {r['real_mean_max_prob']:.3f} | |")
    return rows


# --- The written reading ------------------------------------------------------------------------------------

def reading(models: list[Loaded], quality: list[dict], aurocs: dict[str, float]) -> list[str]:
    """Sentences built from this call's numbers; the 'why' is what each model's structure implies."""
    lines = []
    likelihoods = {m.spec.label: test_bpd(m) for m in models if has_likelihood(m)}
    if likelihoods:
        best = min(likelihoods, key=likelihoods.get)
        worst = max(likelihoods, key=likelihoods.get)
        lines.append(f"- **Likelihood.** {best} assigns the test set the highest probability "
                     f"({likelihoods[best]:.4f} bpd); {worst} the lowest ({likelihoods[worst]:.4f} bpd). "
                     "The mixture and the flow report exact figures (the flow's for its dequantized density); the "
                     "VAE's are bounds, and the gap between its ELBO and importance-weighted figures is what the "
                     "ELBO hides. The GAN defines no density, so it has no entry.")
    if quality:
        best = min(quality, key=lambda r: r["frechet_distance"] / r["real_frechet_distance"])
        covered = [r["loaded"].spec.label for r in quality if r["digits_covered"] == 10]
        lines.append(f"- **Samples.** Relative to its real ceiling, {best['loaded'].spec.label} has the lowest "
                     f"Fréchet distance ({best['frechet_distance']:.2f} against {best['real_frechet_distance']:.2f} "
                     f"for real images). All ten digits are covered by: {', '.join(covered) or 'none'}. Binary "
                     "samples (mixture, VAE, flow) are scored against threshold-binarized MNIST and grey-scale "
                     "ones (GAN) against grey-scale MNIST, so compare within a reference. A good likelihood does "
                     "not imply good samples: pixel-independent decoders add salt-and-pepper noise that a "
                     "likelihood barely charges for but a classifier notices.")
        fastest = max(quality, key=lambda r: r["images_per_second"])
        slowest = min(quality, key=lambda r: r["images_per_second"])
        lines.append(f"- **Sampling speed.** {fastest['loaded'].spec.label} draws "
                     f"{fastest['images_per_second']:,.0f} images/s, {slowest['loaded'].spec.label} "
                     f"{slowest['images_per_second']:,.0f} images/s on this machine. Every model samples in one pass through its networks; the cost "
                     "follows their size and depth (the flow inverts its couplings one after another, each with its own convolutional network).")
    if aurocs:
        best = max(aurocs, key=aurocs.get)
        lines.append(f"- **Spotting unnatural digits.** {best} separates Frankenstein digits from natural ones best "
                     f"(AUROC {aurocs[best]:.3f}; 0.5 is chance). " + ", ".join(
                         f"{name}: {value:.3f}" for name, value in aurocs.items()) + ".")
    lines.append("- **Inference of z.** Only the VAE (and the AAE) has an encoder that gives a code for an image "
                 "in one pass; the flow's code is exact but as large as the image; the GAN and the mixture give "
                 "none (the mixture's posterior over its 20 classes is the closest thing).")
    return lines


# --- The command ------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log_dir", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("reports"),
                        help="where comparison.md and its figures (comparison/) go")
    parser.add_argument("--num_samples", type=int, default=10_000, help="samples per generator for the judge")
    parser.add_argument("--frankenstein", type=int, default=500, help="natural and Frankenstein images scored")
    parser.add_argument("--iw_samples", type=int, default=100,
                        help="importance samples per image for the Frankenstein scores of importance-weighted bounds")
    parser.add_argument("--subset", type=int, default=None, help="images per split for short runs trained here")
    parser.add_argument("--judge", type=Path, default=DEFAULT_JUDGE_PATH)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None, specs: tuple[Model, ...] = MODELS) -> Path:
    """Write the report on ``specs`` (default: every model of the project)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("num_samples", "frankenstein", "iw_samples"):
        if getattr(args, flag) < 2:
            parser.error(f"--{flag} must be at least 2, got {getattr(args, flag)}")
    torch.manual_seed(args.seed)
    models = [load_or_train(spec, args.log_dir, args.subset) for spec in specs]
    figures = args.out / "comparison"  # this script's own folder: rewritten from scratch on every call
    shutil.rmtree(figures, ignore_errors=True)
    figures.mkdir(parents=True)

    judge, record = load_judge(args.judge)
    quality = sample_quality(models, judge, args.num_samples, args.seed)

    test_uint8, test_labels = load_mnist("test")
    test_images = to_model_range(test_uint8)
    generator = torch.Generator().manual_seed(args.seed)
    chosen = torch.randperm(len(test_images), generator=generator)[:args.frankenstein]
    natural, natural_labels = test_images[chosen], test_labels[chosen]
    spliced = frankenstein_digits(natural, natural_labels, generator)[0]
    scores, aurocs = {}, {}
    for loaded in filter(has_likelihood, models):
        scores[loaded.spec] = (log_likelihood(loaded.model, natural, args.iw_samples),
                               log_likelihood(loaded.model, spliced, args.iw_samples))
        aurocs[loaded.spec.label] = frankenstein_auroc(*scores[loaded.spec])

    names = {
        "samples": sample_figure(quality, figures / "samples.png"),
        "interpolations": interpolation_figure(interpolation_rows(models, test_images), figures / "interpolations.png"),
        "latents": latent_map_figure(models, test_images, test_labels, figures / "latent_maps.png"),
        "frankenstein": frankenstein_figure(natural, spliced, scores, figures / "frankenstein.png"),
    }
    short = [m for m in models if m.trained_here]
    report = [
        "# Model comparison on MNIST",
        "",
        f"Written by `python scripts/compare.py` on {time.strftime('%Y-%m-%d %H:%M')}; every number below was "
        "measured in that call or read from the runs' `metrics.json`. Likelihoods are on **threshold-binarized "
        "MNIST** (pixels > 0.5), test set of 10,000 images.",
        "",
    ]
    if short:
        report += ["**Short runs:** no finished run existed for " + ", ".join(m.spec.label for m in short) +
                   ", so this call trained a short default run of each; their figures say little. Train them with "
                   "the commands below and run this script again.", ""]
    report += ["## Runs", "", "| model | run | epochs | command |", "| --- | --- | ---: | --- |"]
    report += [f"| {m.spec.label} | `{m.run_dir}`{mark(m)} | {m.metrics['epochs']} | `{command(m)}` |"
               for m in models]
    report += ["", "## Likelihood (test set, threshold-binarized MNIST)", "", *likelihood_rows(models), "",
               "bpd = NLL / (784 ln 2). The VAE's test bpd is the importance-weighted bound "
               "(its run's `--iw_samples`); the GAN has no likelihood.", ""]
    report += ["## Sample quality", "",
               f"{args.num_samples:,} samples per model, scored by the judge (test accuracy "
               f"{record['test_accuracy']:.4f}); the Fréchet distance is between judge features of the samples and "
               f"of the 10,000 test images; the ceiling row scores {args.num_samples:,} real training images the "
               "same way. Samples/s: drawing on this machine's CPU, batches of 1,000.",
               *[f"{m.spec.label} samples at temperature {m.model.hparams.temperature} (its run's scale on the base "
                 "noise)." for m in models if "temperature" in m.model.hparams], "",
               *quality_rows(quality), "",
               f"![samples](comparison/{names['samples']})", "",
               ]
    if names["interpolations"]:
        report += ["## Interpolations", "",
                   "Linear paths in latent space, ends included: between prior draws (VAE, GAN) and between the "
                   "codes of two test images (VAE encoder means; the flow's exact inverse).", "",
                   f"![interpolations](comparison/{names['interpolations']})", ""]
    if names["latents"]:
        report += ["## Latent spaces", "", "Posterior means of the 10,000 test images, coloured by digit.", "",
                   f"![latent maps](comparison/{names['latents']})", ""]
    report += ["## Frankenstein digits", "",
               f"{args.frankenstein} test digits and as many Frankenstein digits (left half of one test digit, right "
               "half of a digit of another class). AUROC of -log p(x) as a detector of Frankenstein digits "
               f"(VAE: importance-weighted bound with k = {args.iw_samples}).", "",
               "| model | AUROC | mean log p natural | mean log p Frankenstein |", "| --- | ---: | ---: | ---: |"]
    report += [f"| {spec.label} | {aurocs[spec.label]:.3f} | {nat.mean():.1f} | {fr.mean():.1f} |"
               for spec, (nat, fr) in scores.items()]
    report += ["", f"![frankenstein](comparison/{names['frankenstein']})", "",
               "## Reading", "", *reading(models, quality, aurocs), ""]
    path = args.out / "comparison.md"
    path.write_text("\n".join(report))
    print(f"Report: {path}")
    return path


if __name__ == "__main__":
    main()

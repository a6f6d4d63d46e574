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
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from shared.data import load_mnist, to_model_range  # noqa: E402
from shared.evaluation import draw_samples, evaluate_samples, real_reference  # noqa: E402
from shared.frankenstein import frankenstein_auroc, frankenstein_digits  # noqa: E402
from shared.judge import DEFAULT_JUDGE_PATH, load_judge  # noqa: E402
from shared.runs import finished_runs, load_run  # noqa: E402
from shared.utils import interpolate_latents, make_grid  # noqa: E402

IMAGE_SHAPE = (1, 1, 28, 28)
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Model:
    """One model of the comparison and how to train it."""
    key: str  # kind: mixture, vae, gan or flow (decides how it is scored)
    label: str
    short: str  # for crowded figures
    name: str  # run name under --log_dir
    train_module: str
    flags: tuple[str, ...] = ()  # the shipped experiment
    short_flags: tuple[str, ...] = ()  # what compare adds when it trains a short default run itself
    binary: bool = True  # samples are binary images (scored against threshold-binarized MNIST)


MODELS = (
    Model("mixture", "Bernoulli mixture (K=20)", "mixture", "mixture_k20", "part1_vae.train_mixture",
          ("--config", "configs/mixture_k20.yaml"), ("--epochs", "2")),
    Model("vae", "VAE (MLP, z=20)", "VAE z=20", "vae_mlp_z20", "part1_vae.train",
          (), ("--epochs", "2", "--iw_samples", "100")),
    Model("vae", "VAE (MLP, z=2)", "VAE z=2", "vae_mlp_z2", "part1_vae.train",
          ("--config", "configs/vae_mlp_z2.yaml"), ("--epochs", "2", "--iw_samples", "100")),
    Model("vae", "VAE (CNN, z=20)", "VAE CNN", "vae_cnn_z20", "part1_vae.train",
          ("--config", "configs/vae_cnn_z20.yaml"), ("--epochs", "1", "--iw_samples", "10")),
    Model("gan", "GAN (MLP)", "GAN", "gan_mlp", "part2_gan.train",
          ("--config", "configs/gan_mlp.yaml"), ("--epochs", "2", "--eval_samples", "0"), binary=False),
    Model("gan", "GAN (DCGAN)", "DCGAN", "gan_dcgan", "part2_gan.train",
          ("--config", "configs/gan_dcgan.yaml"), ("--epochs", "1", "--eval_samples", "0"), binary=False),
    Model("flow", "Flow (RealNVP)", "flow", "flow_mnist_c64_b4_s2", "part3_flows.train",
          ("--config", "configs/flow_mnist.yaml"), ("--epochs", "1")),
)


@dataclass
class Loaded:
    spec: Model
    model: torch.nn.Module
    run_dir: Path
    metrics: dict
    fit_seconds: float | None  # the whole fit, over every resumed call
    trained_here: bool


def command(loaded: Loaded) -> str:
    """The shipped command, with ``--epochs`` added where the run trained for another number of epochs."""
    flags = list(loaded.spec.flags)
    planned = yaml.safe_load((REPO / flags[1]).read_text()).get("epochs") if flags[:1] == ["--config"] else None
    trained = yaml.safe_load((loaded.run_dir / "config.yaml").read_text())["epochs"]
    if planned is not None and planned != trained:
        flags += ["--epochs", str(trained)]
    return " ".join(["python -m", loaded.spec.train_module, *flags])


def load_or_train(spec: Model, log_dir: Path, subset: int | None) -> Loaded:
    """The latest finished run of ``spec``; a short default run trained now if there is none."""
    trained_here = not finished_runs(log_dir, spec.name)
    if trained_here:
        print(f"No finished run of {spec.name} under {log_dir}: training a short default run "
              f"({' '.join(spec.short_flags)})", flush=True)
        flags = [str(REPO / flag) if flag.startswith("configs/") else flag for flag in spec.flags]
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
def log_likelihood(loaded: Loaded, images: torch.Tensor, iw_samples: int, batch_size: int = 500) -> torch.Tensor:
    """log p(x) in nats per image: exact (mixture), importance-weighted bound (VAE), dequantized bound (flow)."""
    model, key = loaded.model, loaded.spec.key
    parts = []
    for batch in images.split(batch_size):
        if key == "mixture":
            parts.append(model.log_prob(batch))
        elif key == "vae":
            parts.append(-model.importance_weighted_nll(batch, iw_samples))
        else:  # the dequantization bound, averaged over the draws its test figure uses
            parts.append(-model.nll_draws(batch).mean(0))
    return torch.cat(parts)


def likelihood_rows(models: list[Loaded]) -> list[str]:
    rows = ["| model | test bpd | test NLL (nats) | bound | parameters | epochs | training time | run |",
            "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    for loaded in models:
        metrics, key = loaded.metrics, loaded.spec.key
        if key == "gan":
            continue
        bpd = test_bpd(loaded)
        nats = bpd * math.prod(IMAGE_SHAPE[1:]) * math.log(2)
        bound = {"mixture": "exact",
                 "flow": "exact for the dequantized model, an upper bound on the discrete NLL "
                         f"(multi-draw bound: {metrics.get('test_iw_bpd', float('nan')):.4f})",
                 "vae": f"importance-weighted bound (ELBO: {metrics['test_bpd']:.4f})"}[key]
        rows.append(f"| {loaded.spec.label} | {bpd:.4f} | {nats:.1f} | {bound} | {num_parameters(loaded.model):,} | "
                    f"{metrics['epochs']} | {seconds(loaded.fit_seconds)} | `{loaded.run_dir}`{mark(loaded)} |")
    return rows


def test_bpd(loaded: Loaded) -> float:
    """The model's headline test figure: the VAE's importance-weighted bound, else its test bpd."""
    return loaded.metrics["test_iw_bpd"] if loaded.spec.key == "vae" else loaded.metrics["test_bpd"]


def seconds(value: float | None) -> str:
    return "?" if value is None else (f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min")


def mark(loaded: Loaded) -> str:
    return " (short run trained by compare.py)" if loaded.trained_here else ""


# --- Sample quality -------------------------------------------------------------------------------------

def sample_quality(models: list[Loaded], judge, num_samples: int, seed: int) -> list[dict]:
    references = {}
    results = []
    for loaded in models:
        if loaded.spec.key == "vae" and loaded.model.hparams.z_dim == 2:
            continue  # the 2-D VAE is there for its latent map
        start = time.perf_counter()
        samples = draw_samples(loaded.model, num_samples, seed=seed)
        rate = num_samples / (time.perf_counter() - start)
        binary = loaded.spec.binary
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


# --- Figures ----------------------------------------------------------------------------------------------

def show(ax, grid: torch.Tensor, title: str) -> None:
    ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def save(fig, path: Path) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path.name


def sample_figure(results: list[dict], path: Path) -> str:
    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.6), squeeze=False)
    for ax, r in zip(axes[0], results):
        show(ax, make_grid(r["samples"][:64]), r["loaded"].spec.label)
    return save(fig, path)


@torch.no_grad()
def interpolation_rows(models: list[Loaded], test_images: torch.Tensor, steps: int = 5, lines: int = 2,
                       seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """(label, images ``[lines * (steps + 2), 1, 28, 28]`` in [0, 1]) for each model that has a latent space."""
    rows = []
    generator = torch.Generator().manual_seed(seed)
    pairs = test_images[torch.randperm(len(test_images), generator=generator)[:2 * lines]]
    for loaded in models:
        model, key = loaded.model, loaded.spec.key
        if key == "vae" and model.hparams.z_dim != 2:
            z_dim = model.hparams.z_dim
            ends = torch.randn(2, lines, z_dim, generator=generator)
            prior = torch.sigmoid(model.decoder(interpolate_latents(ends[0], ends[1], steps).flatten(0, 1)))
            rows.append((f"{loaded.spec.label}: prior latents", prior))
            codes = model.encoder(pairs)[0].view(2, lines, z_dim)
            encoded = torch.sigmoid(model.decoder(interpolate_latents(codes[0], codes[1], steps).flatten(0, 1)))
            rows.append((f"{loaded.spec.label}: encoded test images", encoded))
        elif key == "gan":
            ends = torch.randn(2, lines, model.hparams.z_dim, generator=generator)
            images = model.interpolate(lines, steps, ends[0], ends[1]).flatten(0, 1)
            rows.append((f"{loaded.spec.label}: prior latents", (images + 1) / 2))
        elif key == "flow":
            rows.append((f"{loaded.spec.label}: encoded test images",
                         model.interpolate(pairs[:lines], pairs[lines:], steps).flatten(0, 1)))
    return rows


def interpolation_figure(rows: list[tuple[str, torch.Tensor]], path: Path, steps: int = 5) -> str:
    fig, axes = plt.subplots(len(rows), 1, figsize=(6, 1.9 * len(rows)), squeeze=False)
    for ax, (label, images) in zip(axes[:, 0], rows):
        show(ax, make_grid(images.clamp(0, 1), nrow=steps + 2), label)
    return save(fig, path)


@torch.no_grad()
def latent_map_figure(models: list[Loaded], images: torch.Tensor, labels: torch.Tensor, path: Path) -> str | None:
    vaes = [m for m in models if m.spec.key == "vae" and m.spec.name in ("vae_mlp_z2", "vae_mlp_z20")]
    if not vaes:
        return None
    fig, axes = plt.subplots(1, len(vaes), figsize=(5.5 * len(vaes), 5), squeeze=False)
    for ax, loaded in zip(axes[0], vaes):
        means = torch.cat([loaded.model.encoder(batch)[0] for batch in images.split(1000)])
        if means.shape[1] > 2:  # PCA: the two directions of largest variance
            centred = means - means.mean(0)
            means = centred @ torch.linalg.svd(centred, full_matrices=False).Vh[:2].T
            title = f"{loaded.spec.label}: PCA of posterior means"
        else:
            title = f"{loaded.spec.label}: posterior means"
        points = ax.scatter(means[:, 0], means[:, 1], c=labels, cmap="tab10", s=2, alpha=0.6)
        ax.set_title(title, fontsize=10)
        fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
    return save(fig, path)


def frankenstein_figure(natural: torch.Tensor, spliced: torch.Tensor, scores: dict[Model, tuple], path: Path) -> str:
    fig, axes = plt.subplots(2, 10, figsize=(17, 6))
    for row, (images, which) in enumerate(((natural, 0), (spliced, 1))):
        for i in range(10):
            ax = axes[row, i]
            ax.imshow(images[i, 0].numpy(), cmap="gray")
            ax.set_title("\n".join(f"{spec.short}: {values[which][i]:.0f}" for spec, values in scores.items()), fontsize=7)
            ax.axis("off")
    fig.suptitle("log p(x) in nats: natural test digits (top), Frankenstein digits (bottom)")
    return save(fig, path)


# --- The written reading ------------------------------------------------------------------------------------

def reading(models: list[Loaded], quality: list[dict], aurocs: dict[str, float]) -> list[str]:
    """Sentences built from this call's numbers; the 'why' is what each model's structure implies."""
    lines = []
    likelihoods = {m.spec.label: test_bpd(m) for m in models if m.spec.key != "gan"}
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
                        help="importance samples per image for the VAE's Frankenstein scores")
    parser.add_argument("--subset", type=int, default=None, help="images per split for short runs trained here")
    parser.add_argument("--judge", type=Path, default=DEFAULT_JUDGE_PATH)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None) -> Path:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("num_samples", "frankenstein", "iw_samples"):
        if getattr(args, flag) < 2:
            parser.error(f"--{flag} must be at least 2, got {getattr(args, flag)}")
    torch.manual_seed(args.seed)
    models = [load_or_train(spec, args.log_dir, args.subset) for spec in MODELS]
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
    for loaded in models:
        if loaded.spec.key == "gan":
            continue
        scores[loaded.spec] = (log_likelihood(loaded, natural, args.iw_samples),
                               log_likelihood(loaded, spliced, args.iw_samples))
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
                 "noise)." for m in models if m.spec.key == "flow"], "",
               *quality_rows(quality), "",
               f"![samples](comparison/{names['samples']})", "",
               "## Interpolations", "",
               "Linear paths in latent space, ends included: between prior draws (VAE, GAN) and between the codes "
               "of two test images (VAE encoder means; the flow's exact inverse).", "",
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

"""The pieces of the comparison report (scripts/compare.py) that are not the command: which model a row
is, a loaded run, the report's progress lines, its sample-quality table, its written reading and its figures.
Figures are drawn with matplotlib's Agg backend to PNG.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from shared.data import variant_name  # noqa: E402
from shared.utils import interpolate_latents, make_grid  # noqa: E402
from shared.yaml_file import read_yaml_mapping  # noqa: E402


@dataclass(frozen=True)
class Model:
    """One model of the comparison and how to train it. What the model samples, which data it models
    and what its likelihood is, the model itself says (shared.generative)."""
    key: str  # which interpolations and latent maps the report draws: vae, gan, flow, or any other word for none
    label: str
    short: str  # for crowded figures
    name: str  # run name under --log_dir
    train_module: str
    flags: tuple[str, ...] = ()  # the shipped experiment
    short_flags: tuple[str, ...] = ()  # what compare adds when it trains a short default run itself
    judged: bool = True  # its samples are scored (the 2-D VAE is there for its latent map)


@dataclass
class Loaded:
    spec: Model
    model: torch.nn.Module
    run_dir: Path
    metrics: dict
    fit_seconds: float | None  # the whole fit, over every resumed call
    trained_here: bool
    shortened: str = ""  # how the run falls short of its shipped command ("1 of 20 epochs, --subset 128"), if it does


def has_likelihood(loaded: Loaded) -> bool:
    return loaded.model.likelihood_kind is not None


def run_config(loaded: Loaded) -> dict:
    """The run's config.yaml ({} where there is none)."""
    path = Path(loaded.run_dir) / "config.yaml"
    return read_yaml_mapping(path) if path.is_file() else {}  # read when the run was loaded: no new refusal


def data_of(loaded: Loaded) -> str:
    """The MNIST variant a run was trained and tested on (threshold-binarized, dynamically binarized, 8-bit grey),
    as its metrics.json says, else its config.yaml's data, else what its model models (runs before either said)."""
    described = loaded.metrics.get("data") or (run_config(loaded).get("data") or {}).get("pixels")
    return described or variant_name(loaded.model.data == "binary")


def test_bpd(loaded: Loaded) -> float:
    """The model's headline test figure: its likelihood's, as it names the metric."""
    return loaded.metrics[loaded.model.likelihood_metric]


@contextmanager
def phase(what: str):
    """A line on stdout as a phase of the report starts and one with its duration as it ends, flushed, so that
    a user watching a long compare run sees what it is doing (the judge's own progress lines may come between)."""
    print(f"{what} ...", flush=True)
    start = time.perf_counter()
    yield
    print(f"{what}: done in {time.perf_counter() - start:.1f} s", flush=True)


def quality_tables(results: list[dict]) -> list[str]:
    """One table per real reference the samples were judged against (the variant each model models), with its
    ceiling: figures measured against different real images never share a ranking."""
    lines = []
    for reference in sorted({r["reference"] for r in results}):
        lines += [f"### Compared with {reference} MNIST", "",
                  *quality_rows([r for r in results if r["reference"] == reference]), ""]
    return lines


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


def by_variant(models: list[Loaded], figures: dict[str, float]) -> dict[str, dict[str, float]]:
    """{variant: {label: figure}} of the models that have a figure in ``figures`` (keyed by label)."""
    grouped = {}
    for m in models:
        if m.spec.label in figures:
            grouped.setdefault(data_of(m), {})[m.spec.label] = figures[m.spec.label]
    return dict(sorted(grouped.items()))


def reading(models: list[Loaded], quality: list[dict], aurocs: dict[str, float]) -> list[str]:
    """Sentences built from this call's numbers; the 'why' is what each model's structure implies. Each ranking
    is within one data variant: figures of different variants never share one."""
    lines = []
    likelihoods = by_variant(models, {m.spec.label: test_bpd(m) for m in models if has_likelihood(m)})
    if likelihoods:
        lines.append("- **Likelihood.** " + " ".join(
            f"On {variant} MNIST, {min(f, key=f.get)} assigns the test set the highest probability "
            f"({min(f.values()):.4f} bpd)" + (f"; {max(f, key=f.get)} the lowest ({max(f.values()):.4f} bpd)."
                                               if len(f) > 1 else ", the only model tested on it.")
            for variant, f in likelihoods.items()) +
            " The table says which figures are exact (the mixture's; a flow's with uniform dequantization, for "
            "its dequantized density) and which are bounds (the VAE's, where the gap between the ELBO and the "
            "importance-weighted figure is what the ELBO hides; a flow's with variational dequantization, on the "
            "discrete NLL). The GAN defines no density, so it has no entry.")
    if quality:
        bests = []
        for reference in sorted({r["reference"] for r in quality}):
            best = min((r for r in quality if r["reference"] == reference),
                       key=lambda r: r["frechet_distance"] / r["real_frechet_distance"])
            bests.append(f"against {reference} MNIST, {best['loaded'].spec.label} ({best['frechet_distance']:.2f} "
                         f"against {best['real_frechet_distance']:.2f} for real images)")
        covered = [r["loaded"].spec.label for r in quality if r["digits_covered"] == 10]
        lines.append(f"- **Samples.** Relative to its real ceiling, the lowest Fréchet distance: {'; '.join(bests)}. "
                     f"All ten digits are covered by: {', '.join(covered) or 'none'}. Each model's samples are "
                     "scored against real MNIST of the variant it models, and figures against different references "
                     "are not ranked together. A good likelihood does not imply good samples: pixel-independent "
                     "decoders add salt-and-pepper noise that a likelihood barely charges for but a classifier "
                     "notices.")
        fastest = max(quality, key=lambda r: r["images_per_second"])
        slowest = min(quality, key=lambda r: r["images_per_second"])
        slower = (f", {slowest['loaded'].spec.label} {slowest['images_per_second']:,.0f} images/s"
                  if len(quality) > 1 else "")
        lines.append(f"- **Sampling speed.** {fastest['loaded'].spec.label} draws "
                     f"{fastest['images_per_second']:,.0f} images/s{slower} on this machine. Every model samples in one pass through its networks; the cost "
                     "follows their size and depth (the flow inverts its couplings one after another, each with its own convolutional network).")
    for variant, found in by_variant(models, aurocs).items():
        best = max(found, key=found.get)
        lines.append(f"- **Spotting unnatural digits ({variant}).** On {variant} digits, " + (
            f"{best} separates Frankenstein digits from natural ones best (AUROC {found[best]:.3f}; 0.5 is chance). "
            + ", ".join(f"{name}: {value:.3f}" for name, value in found.items()) + "." if len(found) > 1 else
            f"{best}, the only model scored on them, has an AUROC of {found[best]:.3f} (0.5 is chance)."))
    lines.append("- **Inference of z.** Only the VAE (and the AAE) has an encoder that gives a code for an image "
                 "in one pass; the flow's code is exact but as large as the image; the GAN and the mixture give "
                 "none (the mixture's posterior over its 20 classes is the closest thing).")
    return lines


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
        show(ax, make_grid(r["samples"][:64]), f"{r['loaded'].spec.label}\n({r['reference']})")
    return save(fig, path)


@torch.no_grad()
def interpolation_rows(models: list[Loaded], test_images: dict[str, torch.Tensor], steps: int = 5, lines: int = 2,
                       seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """(label, images ``[lines * (steps + 2), 1, 28, 28]`` in [0, 1]) for each model that has a latent space;
    ``test_images``: the test set in each variant, of which each model encodes the same digits in its own."""
    rows = []
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(next(iter(test_images.values()))), generator=generator)[:2 * lines]
    for loaded in models:
        model, key, pairs = loaded.model, loaded.spec.key, test_images[data_of(loaded)][chosen]
        label = f"{loaded.spec.label} ({data_of(loaded)})"  # every figure names its data variant
        if key == "vae" and model.hparams.z_dim != 2:
            z_dim = model.hparams.z_dim
            ends = torch.randn(2, lines, z_dim, generator=generator)
            prior = torch.sigmoid(model.decoder(interpolate_latents(ends[0], ends[1], steps).flatten(0, 1)))
            rows.append((f"{label}: prior latents", prior))
            codes = model.encoder(pairs)[0].view(2, lines, z_dim)
            encoded = torch.sigmoid(model.decoder(interpolate_latents(codes[0], codes[1], steps).flatten(0, 1)))
            rows.append((f"{label}: encoded test images", encoded))
        elif key == "gan":
            noise = torch.randn(2, lines, model.hparams.z_dim, generator=generator)
            # A GAN with a categorical code keeps each line's code value: the line varies the noise only.
            categories = model.hparams.num_categories
            codes = torch.randint(categories, (lines,), generator=generator).expand(2, lines) if categories else None
            ends = model.latents(noise, codes)
            images = model.interpolate(lines, steps, ends[0], ends[1]).flatten(0, 1)
            rows.append((f"{label}: prior latents", images))
        elif key == "flow":
            rows.append((f"{label}: encoded test images",
                         model.interpolate(pairs[:lines], pairs[lines:], steps).flatten(0, 1)))
    return rows


def interpolation_figure(rows: list[tuple[str, torch.Tensor]], path: Path, steps: int = 5) -> str | None:
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 1, figsize=(6, 1.9 * len(rows)), squeeze=False)
    for ax, (label, images) in zip(axes[:, 0], rows):
        show(ax, make_grid(images.clamp(0, 1), nrow=steps + 2), label)
    return save(fig, path)


TSNE_PERPLEXITY = 30  # scikit-learn's default, fixed here so every report's map is drawn alike


def load_tsne():
    """scikit-learn's t-SNE, imported only when a map needs it so that the rest of the project runs without it."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise SystemExit("t-SNE needs scikit-learn: pip install -e '.[report]'") from None
    return TSNE


def tsne(points: torch.Tensor, seed: int) -> torch.Tensor:
    """2-D t-SNE coordinates of ``points`` ``[N, D]``: scikit-learn's, seeded, initialised by PCA."""
    TSNE = load_tsne()
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    # One thread: the Barnes-Hut gradient waits for all its threads at each of 1,000 iterations, and on a 2-core
    # machine shared with other work a descheduled thread costs more than a second thread gains (measured
    # there: 3,000 points 21 s with one thread, 55 s with two; 200 points 1 s and 24 s).
    with threadpool_limits(limits=1, user_api="openmp"):
        return torch.from_numpy(TSNE(perplexity=TSNE_PERPLEXITY, init="pca", random_state=seed).fit_transform(
            points.numpy()))


def mapped_vaes(models: list[Loaded]) -> list[Loaded]:
    """The VAEs whose latent spaces the report maps."""
    return [m for m in models if m.spec.key == "vae" and m.spec.name in ("vae_mlp_z2", "vae_mlp_z20")]


@torch.no_grad()
def latent_map_figure(models: list[Loaded], test_images: dict[str, torch.Tensor], labels: torch.Tensor, path: Path,
                      tsne_points: int, seed: int) -> tuple[str, str] | None:
    """(file name, caption) of the latent maps: a 2-D latent space as it is, a larger one by t-SNE of
    ``tsne_points`` images drawn with ``seed`` (t-SNE's cost grows faster than the number of points); each
    VAE encodes the test set in its own variant (``test_images``)."""
    vaes = mapped_vaes(models)
    if not vaes:
        return None
    fig, axes = plt.subplots(1, len(vaes), figsize=(5.5 * len(vaes), 5), squeeze=False)
    captions = []
    for ax, loaded in zip(axes[0], vaes):
        images = test_images[data_of(loaded)]
        if loaded.model.hparams.z_dim > 2:
            chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:tsne_points]
            settings = f"{len(chosen):,} points, perplexity {TSNE_PERPLEXITY}, seed {seed}"
            means = loaded.model.encoder(images[chosen])[0]
            with phase(f"t-SNE of {loaded.spec.label} ({settings})"):
                points = tsne(means, seed)
            colours = labels[chosen]
            ax.set_title(f"{loaded.spec.label}: t-SNE of posterior means\n{settings}", fontsize=10)
            captions.append(f"{loaded.spec.label}: t-SNE (scikit-learn; perplexity {TSNE_PERPLEXITY}, PCA "
                            f"initialisation, seed {seed}) of the posterior means of {len(chosen):,} test images "
                            "drawn with the same seed.")
        else:
            points = torch.cat([loaded.model.encoder(batch)[0] for batch in images.split(1000)])
            colours = labels
            ax.set_title(f"{loaded.spec.label}: posterior means", fontsize=10)
            captions.append(f"{loaded.spec.label}: the posterior means of the {len(images):,} test images.")
        scatter = ax.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab10", s=2, alpha=0.6)
        fig.colorbar(scatter, ax=ax, ticks=range(10), label="digit")
    return save(fig, path), " ".join(captions) + " Coloured by digit."


def frankenstein_figure(sets: dict[str, tuple[torch.Tensor, torch.Tensor]], models: list[Loaded],
                        scores: dict[Model, tuple], path: Path) -> str:
    """Ten natural and ten Frankenstein digits of each variant, titled with the log p of that variant's models."""
    fig, axes = plt.subplots(2 * len(sets), 10, figsize=(17, 6 * len(sets)), squeeze=False)
    for v, (variant, images) in enumerate(sets.items()):
        specs = [m.spec for m in models if m.spec in scores and data_of(m) == variant]
        for which, kind in enumerate(("natural", "Frankenstein")):
            for i, ax in enumerate(axes[2 * v + which]):
                ax.imshow(images[which][i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_title("\n".join(f"{spec.short}: {scores[spec][which][i]:.0f}" for spec in specs), fontsize=7)
                ax.axis("off")
            axes[2 * v + which, 0].text(-0.1, 0.5, f"{variant}\n{kind}", transform=axes[2 * v + which, 0].transAxes,
                                        ha="right", va="center", fontsize=9)
    fig.suptitle("log p(x) in nats, each model on digits of its own MNIST variant: natural test digits, "
                 "Frankenstein digits")
    return save(fig, path)

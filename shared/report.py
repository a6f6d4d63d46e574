"""The pieces of the comparison report (scripts/compare.py) that are not the command: which model a row
is, a loaded run, and the report's figures. Figures are drawn with matplotlib's Agg backend to PNG.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from shared.utils import interpolate_latents, make_grid  # noqa: E402


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
            rows.append((f"{loaded.spec.label}: prior latents", images))
        elif key == "flow":
            rows.append((f"{loaded.spec.label}: encoded test images",
                         model.interpolate(pairs[:lines], pairs[lines:], steps).flatten(0, 1)))
    return rows


def interpolation_figure(rows: list[tuple[str, torch.Tensor]], path: Path, steps: int = 5) -> str | None:
    if not rows:
        return None
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

"""Pictures every part uses: image grids, the 2-D latent manifold, latent interpolations, latent maps coloured by
digit, figures as tensors.

(``elbo_to_bpd``, ``dequantize`` and ``quantize`` live in :mod:`shared.densities`; they are imported here too because
the course assignment and older code import them from ``shared.utils``.)
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from scipy.stats import norm

from shared.densities import dequantize, elbo_to_bpd, quantize  # noqa: F401  (public names of this module once)
from shared.generative import evaluating


def make_grid(images: torch.Tensor, nrow: int = 8, value_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """``[B, C, H, W]`` images in ``value_range`` -> one ``[3, H', W']`` grid in [0, 1]."""
    if images.dim() != 4 or not len(images):
        raise ValueError(f"make_grid takes a batch of images [B, C, H, W], B >= 1; got shape {tuple(images.shape)}")
    if nrow < 1:
        raise ValueError(f"make_grid: nrow must be at least 1, got {nrow}")
    return torchvision.utils.make_grid(images.detach().float().cpu(), nrow=nrow, normalize=True,
                                       value_range=value_range, pad_value=0.5)


def pairs_grid(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Each image left of its reconstruction, four pairs a row."""
    return make_grid(torch.stack([images, reconstructions], dim=1).flatten(0, 1), nrow=8)


def save_grid(grid: torch.Tensor, path: str | Path) -> Path:
    """Write a grid from :func:`make_grid` as an image in the format of ``path``'s suffix (.png), creating the folder."""
    path = Path(path)
    if not path.suffix:
        raise ValueError(f"save_grid: {path} has no suffix to tell the image format by; e.g. {path}.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(grid, str(path))
    return path


def log_grid(logger, tag: str, grid: torch.Tensor, step: int) -> None:
    """Log a grid to TensorBoard when the run has a TensorBoard logger (no-op otherwise)."""
    experiment = getattr(logger, "experiment", None)
    if experiment is not None and hasattr(experiment, "add_image"):
        experiment.add_image(tag, grid, global_step=step)


@torch.no_grad()
def visualize_manifold(decoder: Callable[[torch.Tensor], torch.Tensor], grid_size: int = 20) -> torch.Tensor:
    """Decode a ``grid_size`` x ``grid_size`` grid of 2-D latents into one image grid.

    The latents sit at the standard-normal quantiles of ``grid_size`` percentiles spaced evenly
    from 0.5 / (grid_size + 1) to (grid_size + 0.5) / (grid_size + 1), so the grid covers where the
    prior has mass and is centred on its mean (percentiles (i + 0.5) / (grid_size + 1) for
    i < grid_size would stop short of the upper mirror and shift the grid towards negative z).
    Each cell shows the Bernoulli means (sigmoid of the decoder's logits), not a sample; a decoder module decodes
    in eval mode, each of its modules back in its own after.
    """
    if grid_size < 1:
        raise ValueError(f"visualize_manifold: grid_size must be at least 1, got {grid_size}")
    percentiles = (torch.linspace(0.5, grid_size + 0.5, grid_size, dtype=torch.float64) / (grid_size + 1)
                   if grid_size > 1 else torch.tensor([0.5], dtype=torch.float64))  # a linspace of 1 is its start
    quantiles = torch.tensor(norm.ppf(percentiles), dtype=torch.float32)
    z1, z2 = torch.meshgrid(quantiles, quantiles, indexing="xy")
    z = torch.stack([z1.flatten(), z2.flatten()], dim=1)
    device = next(decoder.parameters()).device if isinstance(decoder, torch.nn.Module) else "cpu"
    try:
        with evaluating(decoder) if isinstance(decoder, torch.nn.Module) else nullcontext(decoder) as decode:
            means = torch.sigmoid(decode(z.to(device)))
    except RuntimeError as err:  # torch's shape error names matrices, not the latent size
        raise ValueError(f"visualize_manifold decodes a grid of 2-D latents: the decoder must take z of size 2 "
                         f"({err})") from err
    return make_grid(means, nrow=grid_size)


def interpolate_latents(z_start: torch.Tensor, z_end: torch.Tensor, steps: int) -> torch.Tensor:
    """``[B, ...]`` endpoints -> ``[B, steps + 2, ...]``: linear path, start and end included."""
    if steps < 0:
        raise ValueError(f"interpolate_latents: steps (images between the ends) must be >= 0, got {steps}")
    weights = torch.linspace(0.0, 1.0, steps + 2, device=z_start.device, dtype=z_start.dtype)
    weights = weights.view(1, -1, *([1] * (z_start.dim() - 1)))
    return torch.lerp(z_start.unsqueeze(1), z_end.unsqueeze(1), weights)


def figure_to_tensor(figure: Figure) -> torch.Tensor:
    """Render a matplotlib figure off-screen (Agg: no display, no pyplot state) to RGB ``[3, H, W]`` in [0, 1],
    so plots travel through ``logged_images()`` to TensorBoard and PNG like any sample grid."""
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).float() / 255.0


def render_latent_map(codes: torch.Tensor, labels: torch.Tensor, prior_samples: torch.Tensor,
                      title: str = "") -> torch.Tensor:
    """The first two code dimensions as dots coloured by digit over a grey hexbin of prior samples."""
    tab10 = list(colormaps["tab10"].colors)
    figure = Figure(figsize=(6, 6), dpi=100)
    ax = figure.add_subplot()
    prior_samples, codes = prior_samples.cpu().numpy(), codes.cpu().numpy()
    ax.hexbin(prior_samples[:, 0], prior_samples[:, 1], gridsize=50, cmap="Greys", bins="log", mincnt=1,
              linewidths=0, alpha=0.4)
    digits = ListedColormap([*tab10[:7], "black", *tab10[8:]])  # tab10's grey 7 would vanish in the hexbin
    points = ax.scatter(codes[:, 0], codes[:, 1], c=labels.cpu().numpy(), cmap=digits, vmin=-0.5, vmax=9.5, s=3,
                        alpha=0.8, linewidths=0)
    figure.colorbar(points, ax=ax, ticks=range(10), label="digit", fraction=0.046, pad=0.04)
    ax.set(xlabel="$z_1$", ylabel="$z_2$", title=title, aspect="equal")
    figure.tight_layout()
    return figure_to_tensor(figure)

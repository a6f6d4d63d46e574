"""Figures of Part 2 rendered off-screen (Agg, no pyplot state) to ``[3, H, W]`` tensors in [0, 1], so
they travel through ``logged_images()`` to TensorBoard and PNG like any sample grid."""
from __future__ import annotations

import torch
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from shared.utils import figure_to_tensor


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

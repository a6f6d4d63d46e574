"""Matplotlib figures of the toy task rendered to ``[3, H, W]`` tensors in [0, 1].

They are returned from ``logged_images()`` like any sample grid, so LoggedImagesCallback writes them
to TensorBoard and PNG with no plotting code of its own. Drawn off-screen, without pyplot.
"""
from __future__ import annotations

import torch
from matplotlib.figure import Figure

from shared.utils import figure_to_tensor


def density_contours(densities: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One filled-contour panel per ``name -> [n, n]`` density on the mesh ``x, y`` (each ``[n, n]``)."""
    fig = Figure(figsize=(3.6 * len(densities), 3.4))
    axes = fig.subplots(1, len(densities), squeeze=False)
    for ax, (name, density) in zip(axes[0], densities.items()):
        ax.contourf(x.cpu().numpy(), y.cpu().numpy(), density.cpu().numpy(), levels=20, cmap="viridis")
        ax.set_title(name)
        ax.set_aspect("equal")
    fig.tight_layout()
    return figure_to_tensor(fig)


def scatter_with_modes(points: torch.Tensor, modes: torch.Tensor, limit: float, title: str = "") -> torch.Tensor:
    """Flow samples ``[N, 2]`` as dots, the target's modes ``[K, 2]`` as red crosses."""
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    points, modes = points.cpu().numpy(), modes.cpu().numpy()
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.4, label="flow samples")
    ax.scatter(modes[:, 0], modes[:, 1], marker="x", s=120, c="red", linewidths=3, label="true modes")
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return figure_to_tensor(fig)


def bpd_curve(history: dict[str, list[float]], floor: float | None = None) -> torch.Tensor:
    """Bits per dimension against epoch for each named series, with the target's entropy as a floor line."""
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for name, values in history.items():
        ax.plot(range(1, len(values) + 1), values, marker=".", label=name)
    if floor is not None:
        ax.axhline(floor, color="gray", linestyle="--", label=f"target entropy {floor:.3f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("bits / dim")
    ax.legend()
    fig.tight_layout()
    return figure_to_tensor(fig)

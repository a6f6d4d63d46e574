"""Encoders and decoders of the VAE: plain ``nn.Module``s that know nothing of training.

Encoders map images ``[B, C, 28, 28]`` to ``(mean, log_std)``, each ``[B, z_dim]``; decoders map
latents ``[B, z_dim]`` to per-pixel Bernoulli logits ``[B, C, 28, 28]`` (no sigmoid).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    def __init__(self, input_dim: int = 784, hidden_dims: Sequence[int] = (512,), z_dim: int = 20):
        super().__init__()
        self.net = mlp([input_dim, *hidden_dims, 2 * z_dim])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(x.flatten(1)).chunk(2, dim=-1)
        return mean, log_std


class MLPDecoder(nn.Module):
    def __init__(self, z_dim: int = 20, hidden_dims: Sequence[int] = (512,), output_shape: Sequence[int] = (1, 28, 28)):
        super().__init__()
        self.output_shape = tuple(output_shape)
        self.net = mlp([z_dim, *hidden_dims, math.prod(output_shape)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.output_shape)


class CNNEncoder(nn.Module):
    """Three stride-2 stages 28 -> 14 -> 7 -> 4, then a linear layer to ``(mean, log_std)``."""

    def __init__(self, num_input_channels: int = 1, num_filters: int = 32, z_dim: int = 20):
        super().__init__()
        c = num_filters
        self.net = nn.Sequential(
            nn.Conv2d(num_input_channels, c, 3, padding=1, stride=2), nn.GELU(),
            nn.Conv2d(c, c, 3, padding=1), nn.GELU(),
            nn.Conv2d(c, 2 * c, 3, padding=1, stride=2), nn.GELU(),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.GELU(),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1, stride=2), nn.GELU(),
            nn.Flatten(),
            nn.Linear(2 * c * 4 * 4, 2 * z_dim),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(x).chunk(2, dim=-1)
        return mean, log_std


class CNNDecoder(nn.Module):
    """Mirror of :class:`CNNEncoder`: a linear layer to 4x4 maps, then 4 -> 7 -> 14 -> 28."""

    def __init__(self, num_input_channels: int = 1, num_filters: int = 32, z_dim: int = 20):
        super().__init__()
        c = num_filters
        self.linear = nn.Sequential(nn.Linear(z_dim, 2 * c * 4 * 4), nn.GELU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * c, 2 * c, 3, padding=1, stride=2), nn.GELU(),  # 4 -> 7
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.GELU(),
            nn.ConvTranspose2d(2 * c, c, 3, padding=1, output_padding=1, stride=2), nn.GELU(),  # 7 -> 14
            nn.Conv2d(c, c, 3, padding=1), nn.GELU(),
            nn.ConvTranspose2d(c, num_input_channels, 3, padding=1, output_padding=1, stride=2),  # 14 -> 28
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.linear(z).view(z.shape[0], -1, 4, 4))

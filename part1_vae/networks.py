"""Part 1's networks, plain ``nn.Module``s that know nothing of training: the VAE's encoders and
decoders, and the Bernoulli mixture's parameters.

Encoders map images ``[B, C, 28, 28]`` to ``(mean, log_std)``, each ``[B, z_dim]``; decoders map
latents ``[B, z_dim]`` to one unbounded output per pixel ``[B, C, 28, 28]``, which the VAE reads as
Bernoulli logits or as the pre-sigmoid mean of a Gaussian, depending on its likelihood.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def mlp(sizes: Sequence[int], activation: str = "relu") -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` (a key of :data:`ACTIVATIONS`) between them
    (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    def __init__(self, input_dim: int = 784, hidden_dims: Sequence[int] = (512,), z_dim: int = 20,
                 activation: str = "relu"):
        super().__init__()
        self.net = mlp([input_dim, *hidden_dims, 2 * z_dim], activation)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(x.flatten(1)).chunk(2, dim=-1)
        return mean, log_std


class MLPDecoder(nn.Module):
    def __init__(self, z_dim: int = 20, hidden_dims: Sequence[int] = (512,), output_shape: Sequence[int] = (1, 28, 28),
                 activation: str = "relu"):
        super().__init__()
        self.output_shape = tuple(output_shape)
        self.net = mlp([z_dim, *hidden_dims, math.prod(output_shape)], activation)

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


class BernoulliMixture(nn.Module):
    """p(z = k) = softmax(b)_k and p(x_d = 1 | z = k) = sigmoid(w_kd + c_d), pixels independent given z.

    With ``w`` near 0 and ``c = 0`` every pixel starts as a fair coin, so an untrained model scores
    D log(1/2) = -543 nats per MNIST image.
    """

    def __init__(self, num_components: int = 20, image_shape: Sequence[int] = (1, 28, 28)):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.mixture_logits = nn.Parameter(torch.zeros(num_components))  # b
        # Small random w breaks the symmetry between components; c is shared by all of them.
        self.component_logits = nn.Parameter(0.01 * torch.randn(num_components, math.prod(image_shape)))  # w
        self.pixel_bias = nn.Parameter(torch.zeros(math.prod(image_shape)))  # c

    def pixel_logits(self) -> torch.Tensor:
        """``[K, D]`` logits of p(x_d = 1 | z = k)."""
        return self.component_logits + self.pixel_bias

    def log_prob(self, images: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) in nats for images ``[B, ...]`` in {0, 1}: logsumexp over components, never a product."""
        x = images.flatten(1).float()
        # In float32 under any autocast: bf16 matrix products moved an image's "exact" figure by up to 1.8 nats (QA).
        with torch.autocast(x.device.type, enabled=False):
            logits = self.pixel_logits().float()
            # log p(x | k) = sum_d x_d log s(l_kd) + (1 - x_d) log s(-l_kd), as two matrix products.
            log_px_given_k = x @ F.logsigmoid(logits).T + (1 - x) @ F.logsigmoid(-logits).T
            return torch.logsumexp(log_px_given_k + F.log_softmax(self.mixture_logits.float(), dim=0), dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.log_prob(images)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Binary images ``[n, *image_shape]``: a component from p(z), then independent pixels."""
        components = torch.multinomial(F.softmax(self.mixture_logits, dim=0), n, replacement=True,
                                       generator=generator)
        probs = torch.sigmoid(self.pixel_logits()[components])
        return torch.bernoulli(probs, generator=generator).view(n, *self.image_shape)

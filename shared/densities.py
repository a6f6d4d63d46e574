"""The project's probability arithmetic, one function per quantity: log-densities, the KL of a diagonal
Gaussian to the prior, reparameterised sampling, per-image negative log-likelihoods, (de)quantization
and the conversion of nats per image to bits per dimension.

Densities reduce over the last dimension; the per-image likelihoods over every non-batch dimension.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def log_normal_diag(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag(exp(log_std)^2)), summed over the last dimension."""
    return -0.5 * (((x - mean) * torch.exp(-log_std)).pow(2) + 2 * log_std + LOG_2PI).sum(dim=-1)


def log_standard_normal(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, I), summed over the last dimension."""
    return -0.5 * (x.pow(2) + LOG_2PI).sum(dim=-1)


def sample_reparameterize(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """z = mean + std * eps with eps ~ N(0, I): a sample whose gradients flow to ``mean`` and ``std``.

    ``std`` must be non-negative (callers pass ``exp(log_std)``); it is not checked, since the check would
    read a value back from the GPU in every training step. Each entry of z gets its own eps, also where ``std``
    is broadcast over ``mean`` (a scalar std).
    """
    return mean + std * torch.randn_like(torch.broadcast_to(std, torch.broadcast_shapes(mean.shape, std.shape)))


def KLD(mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_std)^2) || N(0, I)) in closed form, summed over the last dimension.

    (The course assignment's name for it.)
    """
    return 0.5 * (torch.exp(2 * log_std) + mean.pow(2) - 1 - 2 * log_std).sum(dim=-1)


def bernoulli_nll(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """-log p(x) of images in {0, 1} under per-pixel Bernoulli logits, summed per image (nats)."""
    return F.binary_cross_entropy_with_logits(logits, images, reduction="none").flatten(1).sum(dim=1)


def gaussian_nll(means: torch.Tensor, log_std: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """-log N(x; mean, exp(log_std)^2) per pixel, summed per image (nats): the exact density, not a bare MSE."""
    return -log_normal_diag(images.flatten(1), means.flatten(1), torch.broadcast_to(log_std, means.shape).flatten(1))


def nll_to_bpd(nll: torch.Tensor, num_dims: int) -> torch.Tensor:
    """A negative log-likelihood (or any bound on one, such as a negative ELBO) in nats per image, to bits
    per dimension of an image of ``num_dims`` dimensions."""
    if num_dims < 1:
        raise ValueError(f"nll_to_bpd: num_dims must be at least 1, got {num_dims}")
    return nll * math.log2(math.e) / num_dims


def elbo_to_bpd(elbo: torch.Tensor, img_shape: Sequence[int]) -> torch.Tensor:
    """The course assignment's name and signature for :func:`nll_to_bpd`: ``elbo`` is a *negative* ELBO
    (or NLL) in nats per image, ``img_shape`` a batch shape ``[B, C, H, W]`` whose ``C * H * W`` are counted."""
    return nll_to_bpd(elbo, math.prod(img_shape[1:]))


def dequantize(levels: torch.Tensor, num_levels: int, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Discrete values k in {0, ..., num_levels - 1} -> (k + u) / num_levels in [0, 1), u ~ U[0, 1) per
    entry unless ``noise`` gives it.

    Each k owns the cell [k, k + 1) / num_levels, so a density p fitted to these values bounds the
    discrete probability: log P(k) >= E_u log p((k + u) / num_levels) - log num_levels per entry. Integer
    levels (MNIST as loaded, uint8) are taken as floats; a k + u that float rounding would carry onto k + 1 (u
    within a rounding step of 1: 2^-17 for k = 255 in float32) is kept in k's cell, exactly so for a power-of-two
    ``num_levels``.
    """
    levels = levels if levels.is_floating_point() else levels.float()
    shifted = levels + (torch.rand_like(levels) if noise is None else noise)
    return torch.minimum(shifted, torch.nextafter(levels + 1, levels)) / num_levels


def quantize(y: torch.Tensor, num_levels: int) -> torch.Tensor:
    """The level k whose cell [k, k + 1) / num_levels holds y (clipped to 0..num_levels - 1): undoes
    :func:`dequantize` up to its noise."""
    return torch.floor(y * num_levels).clamp_(0, num_levels - 1)

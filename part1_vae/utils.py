"""The VAE's probability pieces: reparameterised sampling, KL to the prior, diagonal-Gaussian densities."""
from __future__ import annotations

import math

import torch

_LOG_2PI = math.log(2 * math.pi)


def sample_reparameterize(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """z = mean + std * eps with eps ~ N(0, I): a sample whose gradients flow to ``mean`` and ``std``."""
    if (std < 0).any():
        raise ValueError("std must be non-negative")
    return mean + std * torch.randn_like(std)


def KLD(mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_std)^2) || N(0, I)) in closed form, summed over the last dimension."""
    return 0.5 * (torch.exp(2 * log_std) + mean.pow(2) - 1 - 2 * log_std).sum(dim=-1)


def log_normal_diag(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag(exp(log_std)^2)), summed over the last dimension."""
    return -0.5 * (((x - mean) * torch.exp(-log_std)).pow(2) + 2 * log_std + _LOG_2PI).sum(dim=-1)


def log_standard_normal(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, I), summed over the last dimension."""
    return -0.5 * (x.pow(2) + _LOG_2PI).sum(dim=-1)

"""The toy task of Part 3: its densities, written out by hand (no ``torch.distributions``) so the formulas
are in plain view, and its DataModule of seeded draws from the target.

The densities are ``nn.Module``s whose parameters are buffers: they move with the flow to the GPU and
are saved in its checkpoint, but the optimizer never sees them. ``log_prob`` reduces over the last
dimension only, so it works on points ``[N, dims]`` and on plotting meshes ``[n, n, dims]`` alike.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from shared.batches import TensorBatchDataset, TensorSplitsDataModule
from shared.densities import log_normal_diag


def _vector(value: float | Sequence[float], dims: int) -> torch.Tensor:
    """A scalar or a length-``dims`` sequence -> float tensor ``[dims]``."""
    vector = torch.as_tensor(value, dtype=torch.get_default_dtype()).flatten()
    if vector.numel() not in (1, dims):
        raise ValueError(f"expected a scalar or {dims} values, got {vector.numel()}")
    return vector.expand(dims).clone()


class MultivariateGaussianDiag(nn.Module):
    """N(mu, diag(sigma^2)) in ``dims`` dimensions; ``mu`` and ``sigma`` are scalars or ``dims`` values."""

    def __init__(self, mu: float | Sequence[float], sigma: float | Sequence[float], dims: int):
        super().__init__()
        self.dims = dims
        self.register_buffer("mu", _vector(mu, dims))
        self.register_buffer("sigma", _vector(sigma, dims))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return log_normal_diag(x, self.mu, self.sigma.log())

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[num_samples, dims]`` as mu + sigma * eps (differentiable in mu and sigma)."""
        eps = torch.randn(num_samples, self.dims, device=self.mu.device, dtype=self.mu.dtype, generator=generator)
        return self.mu + self.sigma * eps


class BimodalGaussianDiag(nn.Module):
    """Equal-weight mixture of N(mu[0], diag(sigma[0]^2)) and N(mu[1], diag(sigma[1]^2)).

    ``mu = [mu1, mu2]`` and ``sigma = [s1, s2]``; each entry is a scalar or ``dims`` values.
    """

    def __init__(self, mu: Sequence, sigma: Sequence, dims: int):
        super().__init__()
        if len(mu) != 2 or len(sigma) != 2:
            raise ValueError("BimodalGaussianDiag needs two means and two sigmas")
        self.dims = dims
        self.register_buffer("mu", torch.stack([_vector(m, dims) for m in mu]))          # [2, dims]
        self.register_buffer("sigma", torch.stack([_vector(s, dims) for s in sigma]))    # [2, dims]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        # log(0.5 N_1 + 0.5 N_2) by logsumexp: the modes are many sigmas apart, so exp would underflow.
        per_mode = torch.stack([log_normal_diag(x, self.mu[k], self.sigma[k].log()) for k in range(2)], dim=-1)
        return torch.logsumexp(per_mode, dim=-1) - math.log(2)

    def sample(self, num_samples: int, generator: torch.Generator | None = None,
               return_modes: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``[num_samples, dims]``: a fair coin picks the mode, then mu + sigma * eps.

        ``return_modes`` also returns the picked mode of each point (int64 ``[num_samples]``).
        """
        device = self.mu.device
        modes = torch.randint(0, 2, (num_samples,), device=device, generator=generator)
        eps = torch.randn(num_samples, self.dims, device=device, dtype=self.mu.dtype, generator=generator)
        samples = self.mu[modes] + self.sigma[modes] * eps
        return (samples, modes) if return_modes else samples

    @torch.no_grad()
    def entropy_bits_per_dim(self, num_samples: int = 100_000, seed: int = 0) -> float:
        """The entropy -E[log p(x)] in bits per dimension: the floor a perfect model's bpd reaches.

        With p = (N_k + N_j) / 2, -log p(x) = -log N_k(x) + log 2 - log(1 + N_j(x) / N_k(x)): under mode k the first
        term's mean is N_k's entropy, in closed form; only the last, the modes' overlap (0 for modes far apart), is a
        Monte-Carlo mean over ``num_samples`` draws from each mode (all of it was until 2026-12-06: 0.8116 bits for
        the toy target, whose entropy is 0.8101)."""
        generator = torch.Generator(device=self.mu.device).manual_seed(seed)
        mu, log_sigma = self.mu.double(), self.sigma.double().log()
        nats = 0.0
        for k, j in ((0, 1), (1, 0)):
            x = mu[k] + log_sigma[k].exp() * torch.randn(num_samples, self.dims, device=mu.device, dtype=mu.dtype,
                                                         generator=generator)
            gaussian_entropy = 0.5 * self.dims * (1 + math.log(2 * math.pi)) + log_sigma[k].sum().item()
            log_ratio = log_normal_diag(x, mu[j], log_sigma[j]) - log_normal_diag(x, mu[k], log_sigma[k])
            nats += 0.5 * (gaussian_entropy + math.log(2) - F.softplus(log_ratio).mean().item())
        return nats / (self.dims * math.log(2))


class ToyDataModule(TensorSplitsDataModule):
    """Seeded draws from ``target``: ``num_train`` / ``num_val`` / ``num_test`` points.

    Batches are ``(points [B, dims], mode index [B])``, the same (inputs, labels) shape as MNIST's.
    """

    def __init__(self, target: BimodalGaussianDiag, batch_size: int = 256, seed: int = 42, num_train: int = 10_000,
                 num_val: int = 2_000, num_test: int = 2_000, num_workers: int = 0, batches_per_call: int = 1):
        super().__init__(batch_size, seed, num_workers, batches_per_call)
        self.target = target
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}

    def description(self) -> dict:
        """What a run's config.yaml records about its data."""
        return {"dataset": "toy: equal mixture of two 2-D Gaussians", "modes": self.target.mu.tolist(),
                "sigmas": self.target.sigma.tolist(), **self.sizes}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        for offset, (split, size) in enumerate(self.sizes.items()):
            generator = torch.Generator().manual_seed(self.seed + offset)  # independent, reproducible splits
            points, modes = self.target.sample(size, generator=generator, return_modes=True)
            self.splits[split] = TensorBatchDataset(points, modes)

"""Affine coupling layers (Dinh et al., RealNVP) and the toy 2-D flow built from them.

Direction convention used throughout Part 3: the *forward* transform maps data x to the base
space z, and returns log|det dz/dx|, so that log p(x) = log p_base(z) + log_det. ``inverse=True``
maps z back to x and returns the log-determinant of that inverse map, so x -> z -> x gives log-dets
that cancel exactly.
"""
from __future__ import annotations

import torch
from torch import nn


class AffineCoupling(nn.Module):
    """z = x * exp(log_s) + t on the entries where ``mask`` is 0; entries where it is 1 pass unchanged.

    ``net`` sees only the unchanged entries (``x * mask``) and outputs raw log-scales and
    translations for every entry, stacked along dimension 1 (features or channels); the entries
    under the mask get log_s = t = 0. The log-scale is ``scale * tanh(raw)``: bounded, so one
    coupling cannot blow up the Jacobian early in training, with a learnable bound ``scale``
    (RealNVP's choice). The last layer of ``net`` is zero-initialised: a new coupling is the identity.
    """

    def __init__(self, net: nn.Module, mask: torch.Tensor, scale_shape: tuple[int, ...]):
        super().__init__()
        self.net = net
        self.register_buffer("mask", mask.float())
        self.scale = nn.Parameter(torch.ones(scale_shape))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, z: torch.Tensor, log_det: torch.Tensor, inverse: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        free = 1 - self.mask
        raw_log_s, t = self.net(z * self.mask).chunk(2, dim=1)
        log_s = self.scale * torch.tanh(raw_log_s) * free
        t = t * free
        if inverse:
            return (z - t) * torch.exp(-log_s), log_det - log_s.flatten(1).sum(dim=1)
        return z * torch.exp(log_s) + t, log_det + log_s.flatten(1).sum(dim=1)


class Coupling(AffineCoupling):
    """Affine coupling on vectors ``[N, dim]`` with an MLP conditioner of two hidden layers."""

    def __init__(self, dim: int, num_hidden: int, mask: torch.Tensor):
        net = nn.Sequential(nn.Linear(dim, num_hidden), nn.ReLU(), nn.Linear(num_hidden, num_hidden), nn.ReLU(),
                            nn.Linear(num_hidden, 2 * dim))
        super().__init__(net, mask, (dim,))


def alternating_mask(dim: int, parity: int) -> torch.Tensor:
    """[1, 0, 1, 0, ...] for parity 0 and [0, 1, 0, 1, ...] for parity 1: every entry changes every two layers."""
    return (torch.arange(dim) % 2 == parity).float()


class NormalizingFlow(nn.Module):
    """``num_flows`` affine couplings with alternating masks on top of ``base_density``.

    ``base_density`` needs ``log_prob`` and ``sample`` (e.g. :class:`MultivariateGaussianDiag`).
    """

    def __init__(self, base_density: nn.Module, dim: int, num_flows: int, num_hidden: int):
        super().__init__()
        self.base_density, self.dim = base_density, dim
        self.flows = nn.ModuleList([Coupling(dim, num_hidden, alternating_mask(dim, k % 2)) for k in range(num_flows)])

    def transform(self, z: torch.Tensor, inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> base space (``inverse=False``) or back, with the log|det| of the map applied."""
        log_det = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        for flow in (reversed(self.flows) if inverse else self.flows):
            z, log_det = flow(z, log_det, inverse=inverse)
        return z, log_det

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z, log_det = self.transform(x)
        return self.base_density.log_prob(z) + log_det

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of each point ``[N, dim]`` -> ``[N]``, in nats."""
        return -self.log_prob(x)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = self.base_density.sample(num_samples, generator=generator)
        return self.transform(z, inverse=True)[0]

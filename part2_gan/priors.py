"""Priors the adversarial autoencoder imposes on its codes, and the MMD that tells how well it did.

Each prior draws ``sample(n)`` points ``[n, z_dim]`` and walks a path through its mass with
``walk(n)`` (the latents of the decoded "prior walk" grid). Only the samples are needed to plot
a prior (the latent map draws them as a hexbin background), so no density is implemented: the
swiss roll has none in closed form, and one code path for all three keeps the picture honest
about what the discriminator actually sees.
"""
from __future__ import annotations

import math

import torch


class GaussianPrior:
    """N(0, I) in ``z_dim`` >= 2 dimensions (the latent map and the walk use the first two)."""

    def __init__(self, z_dim: int = 2):
        self.z_dim = z_dim

    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        return torch.randn(n, self.z_dim, generator=generator, device=device)

    def walk(self, n: int = 100) -> torch.Tensor:
        """A ``sqrt(n)`` x ``sqrt(n)`` grid of the standard-normal quantiles 5%..95% in the first two
        dimensions (the others 0), row by row: the VAE's manifold picture, for the AAE."""
        side = math.isqrt(n)
        quantiles = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, side))
        rows, cols = torch.meshgrid(-quantiles, quantiles, indexing="ij")  # first row: top of the plane
        z = torch.zeros(side * side, self.z_dim)
        z[:, 0], z[:, 1] = cols.flatten(), rows.flatten()
        return z


class MixtureOfGaussiansPrior:
    """``num_modes`` equally weighted isotropic Gaussians (std ``std``) evenly spaced on a circle of ``radius``.

    With the defaults neighbouring modes are 2.5 apart, five standard deviations: separate
    clusters, one per digit if the encoder learns to use them that way.
    """

    z_dim = 2

    def __init__(self, num_modes: int = 10, radius: float = 4.0, std: float = 0.5):
        self.num_modes, self.radius, self.std = num_modes, radius, std

    def modes(self, device=None) -> torch.Tensor:
        """The ``[num_modes, 2]`` centres."""
        angles = torch.arange(self.num_modes, device=device) * (2 * math.pi / self.num_modes)
        return self.radius * torch.stack([angles.cos(), angles.sin()], dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        which = torch.randint(self.num_modes, (n,), generator=generator, device=device)
        return self.modes(device)[which] + self.std * torch.randn(n, 2, generator=generator, device=device)

    def walk(self, n: int = 100) -> torch.Tensor:
        """For each mode in turn, ``n // num_modes`` points on the ray from the centre through it,
        from ``radius - 2 std`` to ``radius + 2 std``: one row of the grid per mode."""
        steps = n // self.num_modes
        radii = torch.linspace(self.radius - 2 * self.std, self.radius + 2 * self.std, steps)
        directions = self.modes() / self.radius
        return (directions[:, None, :] * radii[None, :, None]).reshape(-1, 2)


class SwissRollPrior:
    """A 2-D swiss roll: points ``scale * t * (cos t, sin t)`` plus Gaussian noise of std ``noise``.

    ``t`` runs over [``t_min``, ``t_max``] (1.5 turns by default) with density proportional to
    ``t``, which is uniform along the roll's length (an arc element is about ``scale * t * dt``),
    so the outer arm is not starved of mass. Without noise the radius lies in
    [``scale * t_min``, ``scale * t_max``] = [1.33, 4] by default.
    """

    z_dim = 2

    def __init__(self, t_min: float = 1.5 * math.pi, t_max: float = 4.5 * math.pi, scale: float = 4.0 / (4.5 * math.pi),
                 noise: float = 0.1):
        self.t_min, self.t_max, self.scale, self.noise = t_min, t_max, scale, noise

    def _points(self, t: torch.Tensor) -> torch.Tensor:
        return self.scale * t[:, None] * torch.stack([t.cos(), t.sin()], dim=1)

    def _t(self, u: torch.Tensor) -> torch.Tensor:
        """The inverse CDF of t's density (proportional to t) at ``u`` in [0, 1]."""
        return (self.t_min ** 2 + u * (self.t_max ** 2 - self.t_min ** 2)).sqrt()

    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        t = self._t(torch.rand(n, generator=generator, device=device))
        return self._points(t) + self.noise * torch.randn(n, 2, generator=generator, device=device)

    def walk(self, n: int = 100) -> torch.Tensor:
        """``n`` noise-free points along the roll from its centre outwards, evenly spaced in length."""
        return self._points(self._t(torch.linspace(0.0, 1.0, n)))


PRIORS = {"gaussian": GaussianPrior, "mog": MixtureOfGaussiansPrior, "swiss_roll": SwissRollPrior}


def make_prior(name: str, z_dim: int = 2):
    """The prior called ``name`` (a key of :data:`PRIORS`); only the Gaussian has more than 2 dimensions."""
    if name == "gaussian":
        return GaussianPrior(z_dim)
    if z_dim != 2:
        raise ValueError(f"the {name} prior is 2-D, got z_dim={z_dim}")
    return PRIORS[name]()


def median_bandwidths(points: torch.Tensor, multiples=(0.25, 0.5, 1.0, 2.0), max_points: int = 1000) -> list[float]:
    """RBF bandwidths: the median pairwise distance of (up to ``max_points`` of) ``points`` times ``multiples``.

    Taken from prior samples alone, so every run with the same prior is measured with the same
    kernel; several multiples so both the overall spread and the finer structure (the roll's arms,
    the separate modes) count.
    """
    sample = points[:max_points]
    distances = torch.cdist(sample, sample)
    median = distances[~torch.eye(len(sample), dtype=torch.bool, device=sample.device)].median().item()
    return [median * m for m in multiples]


def _kernel_sum(x: torch.Tensor, y: torch.Tensor, bandwidths: list[float], chunk: int = 2048) -> torch.Tensor:
    """Sum over all pairs of the mean of the RBF kernels exp(-|x - y|^2 / (2 h^2)), in row chunks (memory)."""
    total = x.new_zeros((), dtype=torch.float64)
    for start in range(0, len(x), chunk):
        squared = torch.cdist(x[start:start + chunk], y).pow(2)
        total += sum(torch.exp(-squared / (2 * h * h)).sum(dtype=torch.float64) for h in bandwidths) / len(bandwidths)
    return total


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, bandwidths: list[float]) -> float:
    """Unbiased estimate of MMD^2 between the distributions of ``x`` ``[m, d]`` and ``y`` ``[n, d]``.

    MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y) with the i = j terms left out of the first two
    sums (each is exactly 1), so the estimate is 0 in expectation, and can be slightly negative,
    when both samples come from one distribution.
    """
    m, n = len(x), len(y)
    xx = (_kernel_sum(x, x, bandwidths) - m) / (m * (m - 1))
    yy = (_kernel_sum(y, y, bandwidths) - n) / (n * (n - 1))
    xy = _kernel_sum(x, y, bandwidths) / (m * n)
    return (xx + yy - 2 * xy).item()

"""Part 3's flows, plain ``nn.Module``s built from :mod:`part3_flows.layers`: the toy 2-D flow and the
RealNVP/Glow image flow.

Direction convention: ``forward(x)`` (= ``transform(x)``) maps data to the base space and returns
``(z, log|det dz/dx|)``, so that log p(x) = log p_base(z) + log_det (``log_prob``);
``transform(z, inverse=True)`` maps back. ``sample`` draws base noise and inverts.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from part3_flows.layers import (ActNorm, ConvCoupling, InvertibleConv1x1, LogitTransform, MLPCoupling, Squeeze,
                                alternating_mask, channel_mask, checkerboard_mask)
from part3_flows.layers import AffineCoupling, Coupling  # noqa: F401  (the first layout's part3_flows.model had them)
from shared.densities import log_standard_normal


class NormalizingFlow(nn.Module):
    """``num_flows`` affine couplings with alternating masks on top of ``base_density``.

    ``base_density`` needs ``log_prob`` and ``sample`` (e.g. :class:`MultivariateGaussianDiag`).
    """

    def __init__(self, base_density: nn.Module, dim: int, num_flows: int, num_hidden: int):
        super().__init__()
        self.base_density, self.dim = base_density, dim
        self.flows = nn.ModuleList([MLPCoupling(dim, num_hidden, alternating_mask(dim, k % 2))
                                    for k in range(num_flows)])

    def transform(self, z: torch.Tensor, inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> base space (``inverse=False``) or back, with the log|det| of the map applied."""
        log_det = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        for flow in (reversed(self.flows) if inverse else self.flows):
            z, log_det = flow(z, log_det, inverse=inverse)
        return z, log_det

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z, log_det = self(x)  # through __call__, so that a compiled forward runs
        return self.base_density.log_prob(z) + log_det

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(x)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = self.base_density.sample(num_samples, generator=generator)
        return self.transform(z, inverse=True)[0]


class ImageFlow(nn.Module):
    """RealNVP/Glow on ``shape`` images in (0, 1), base N(0, I) over all C*H*W dimensions.

    Each of ``num_scales`` scales squeezes first (every 2x2 block becomes 4 channels), then runs
    ``num_blocks`` checkerboard couplings and ``num_blocks`` channel couplings (alternating which
    half is transformed), each after an actnorm (when ``actnorm``) and a 1x1 invertible conv.
    Squeezing before the first coupling keeps every conditioner at a quarter of the pixels, where a
    CPU can afford wide ones. Between scales half the channels are factored out straight to the
    base, so later scales are cheaper and model coarser structure. 1x28x28 with two scales:
    1x28x28 -> 4x14x14 (2 factored out) -> 2x14x14 -> 8x7x7.
    """

    def __init__(self, shape: tuple[int, int, int] = (1, 28, 28), num_channels: int = 64, num_blocks: int = 4,
                 num_scales: int = 2, actnorm: bool = True, alpha: float = 0.05):
        super().__init__()
        self.shape, self.dims = tuple(shape), math.prod(shape)
        self.logit = LogitTransform(alpha)
        self.scales = nn.ModuleList()
        self.out_shapes: list[tuple[int, int, int]] = []  # shapes of the pieces sent to the base, in order
        c, h, w = shape
        for scale in range(num_scales):
            if h % 2 or w % 2:
                raise ValueError(f"cannot squeeze a {h}x{w} image: {num_scales} scales are too many for {shape}")
            c, h, w = 4 * c, h // 2, w // 2
            masks = [checkerboard_mask(c, h, w, k % 2) for k in range(num_blocks)]
            masks += [channel_mask(c, h, w, k % 2) for k in range(num_blocks)]
            layers: list[nn.Module] = [Squeeze()]
            for mask in masks:
                layers += [ActNorm(c)] if actnorm else []
                layers += [InvertibleConv1x1(c), ConvCoupling(mask, num_channels)]
            self.scales.append(nn.ModuleList(layers))
            if scale < num_scales - 1:
                self.out_shapes.append((c // 2, h, w))
                c -= c // 2
        self.out_shapes.append((c, h, w))

    def transform(self, y: torch.Tensor, inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[B, *shape]`` in (0, 1) -> base points ``[B, D]`` (or back with ``inverse``), and log|det|."""
        log_det = torch.zeros(y.shape[0], device=y.device, dtype=y.dtype)
        if inverse:
            pieces = [p.reshape(-1, *s) for p, s in zip(y.split([math.prod(s) for s in self.out_shapes], 1),
                                                        self.out_shapes)]
            x = pieces[-1]
            for scale in reversed(range(len(self.scales))):
                if scale < len(self.scales) - 1:
                    x = torch.cat([x, pieces[scale]], dim=1)
                for layer in reversed(self.scales[scale]):
                    x, log_det = layer(x, log_det, inverse=True)
            return self.logit(x, log_det, inverse=True)
        x, log_det = self.logit(y, log_det)
        pieces = []
        for scale, layers in enumerate(self.scales):
            for layer in layers:
                x, log_det = layer(x, log_det)
            if scale < len(self.scales) - 1:
                keep = x.shape[1] - x.shape[1] // 2
                pieces.append(x[:, keep:])
                x = x[:, :keep]
        pieces.append(x)
        return torch.cat([p.flatten(1) for p in pieces], dim=1), log_det

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """log p(y) of images in (0, 1), nats per image ``[B]``."""
        z, log_det = self(y)  # through __call__, so that a compiled forward runs
        return log_standard_normal(z) + log_det

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(y)

    @torch.no_grad()
    def sample(self, num_samples: int, temperature: float = 1.0, z: torch.Tensor | None = None) -> torch.Tensor:
        """Images from base noise ``z`` (default: N(0, I) draws) scaled by ``temperature``: in (0, 1) but for a sliver
        the logit's inverse reaches beyond it, to (-alpha, 1 - alpha) / (1 - 2 alpha), which the module's quantization
        clamps (ImageFlowModule.sample)."""
        if z is None:
            z = torch.randn(num_samples, self.dims, device=next(self.parameters()).device)
        return self.transform(z * temperature, inverse=True)[0]

    @torch.no_grad()
    def data_init(self, y: torch.Tensor) -> None:
        """Data-dependent actnorm initialisation from one batch of dequantized images."""
        actnorms = [m for m in self.modules() if isinstance(m, ActNorm)]
        for actnorm in actnorms:
            actnorm.init_pending = True
        self.transform(y)

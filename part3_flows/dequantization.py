"""Dequantizers for the image flow: given discrete images x, the noise u in (0, 1)^D that places each pixel
inside its cell (``shared.densities.dequantize``: y = (k + u) / L for level k of L), and log q(u | x), the
log-density u was drawn from, in nats per image. The flow's bound on -log P(x) is then
E_q[-log p(y) + log q(u | x)] + D log L (see :mod:`part3_flows.modules`).

Both take images ``[B, C, H, W]`` in [0, 1] (levels k / (L - 1)) and optionally ``noise``, the base draw
eps in [0, 1)^D (default: fresh U(0, 1) draws), so that two dequantizers can be compared on the same draw.
"""
from __future__ import annotations

import torch
from torch import nn

from part3_flows.layers import ConvCoupling, LogitTransform, checkerboard_mask

# torch.rand can return exactly 0, whose logit is -inf; squeezing eps into [EDGE, 1 - EDGE] first keeps the
# logit finite at float32's resolution near 0 and moves log q by only D * 2 * EDGE nats.
EDGE = 2.0 ** -24


class UniformDequantizer(nn.Module):
    """u = eps ~ U(0, 1)^D, whatever the image: q(u | x) = 1 on the cell, log q = 0."""

    bound = "dequantized bound (exact for the dequantized model, an upper bound on the discrete NLL)"

    def forward(self, images: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.rand_like(images) if noise is None else noise
        return noise, images.new_zeros(len(images))


class VariationalDequantizer(nn.Module):
    """Variational dequantization (Ho et al. 2019, Flow++; the UvA tutorial 11's): a conditional flow
    u = sigmoid(f_x(logit(eps))), eps ~ U(0, 1)^D, where f_x is ``num_couplings`` checkerboard affine
    couplings whose conv conditioners (``num_channels`` wide) also see the image, mapped to [-1, 1].

    Uniform noise charges the flow for spreading its density evenly over each cell; q learns where in
    the cell the flow's density is, which tightens the bound. eps has density 1, so
    log q(u | x) = -log|det du/deps|. The couplings start as the identity, so a new dequantizer is
    uniform (up to :data:`EDGE`).
    """

    bound = "variational dequantization bound (an upper bound on the discrete NLL)"

    def __init__(self, shape: tuple[int, int, int] = (1, 28, 28), num_channels: int = 16, num_couplings: int = 4):
        super().__init__()
        channels, height, width = shape
        self.entry, self.exit = LogitTransform(alpha=EDGE), LogitTransform(alpha=0.0)
        self.couplings = nn.ModuleList([ConvCoupling(checkerboard_mask(channels, height, width, k % 2), num_channels,
                                                     context_channels=channels) for k in range(num_couplings)])

    def forward(self, images: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.rand_like(images) if noise is None else noise
        context = 2 * images - 1
        s, log_det = self.entry(noise, images.new_zeros(len(images)))
        for coupling in self.couplings:
            s, log_det = coupling(s, log_det, context=context)
        u, log_det = self.exit(s, log_det, inverse=True)  # the logit's inverse: the sigmoid onto (0, 1)
        return u, -log_det

"""The layers of Part 3's flows. Each maps ``(x, log_det)`` to ``(z, log_det + log|det dz/dx|)``, or back
with ``inverse=True`` (returning the log-determinant of that inverse map, so x -> z -> x gives
log-dets that cancel exactly): affine couplings (Dinh et al., RealNVP) with MLP or convolutional
conditioners and their masks, and the image flow's logit pre-transform, actnorm, 1x1 invertible
convolution (both Glow) and squeeze.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class AffineCoupling(nn.Module):
    """z = x * exp(log_s) + t on the entries where ``mask`` is 0; entries where it is 1 pass unchanged.

    ``net`` sees only the unchanged entries (``x * mask``) and outputs raw log-scales and
    translations for every entry, stacked along dimension 1 (features or channels); the entries
    under the mask get log_s = t = 0. The log-scale is ``scale * tanh(raw)``: bounded, so one
    coupling cannot blow up the Jacobian early in training, with a learnable bound ``scale``
    (RealNVP's choice). The last layer of ``net`` is zero-initialised: a new coupling is the identity.
    A ``context`` given to ``forward`` is appended to what ``net`` sees (along dimension 1), making the
    coupling conditional on it while staying invertible in ``z`` (the variational dequantizer's, given the image).
    """

    def __init__(self, net: nn.Module, mask: torch.Tensor, scale_shape: tuple[int, ...]):
        super().__init__()
        self.net = net
        self.register_buffer("mask", mask.float())
        self.scale = nn.Parameter(torch.ones(scale_shape))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, z: torch.Tensor, log_det: torch.Tensor, inverse: bool = False,
                context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        free, kept = 1 - self.mask, z * self.mask
        raw_log_s, t = self.net(kept if context is None else torch.cat([kept, context], dim=1)).chunk(2, dim=1)
        log_s = self.scale * torch.tanh(raw_log_s) * free
        t = t * free
        if inverse:
            return (z - t) * torch.exp(-log_s), log_det - log_s.flatten(1).sum(dim=1)
        return z * torch.exp(log_s) + t, log_det + log_s.flatten(1).sum(dim=1)


class MLPCoupling(AffineCoupling):
    """Affine coupling on vectors ``[N, dim]`` with an MLP conditioner of two hidden layers (the toy flow's)."""

    def __init__(self, dim: int, num_hidden: int, mask: torch.Tensor):
        net = nn.Sequential(nn.Linear(dim, num_hidden), nn.ReLU(), nn.Linear(num_hidden, num_hidden), nn.ReLU(),
                            nn.Linear(num_hidden, 2 * dim))
        super().__init__(net, mask, (dim,))


def alternating_mask(dim: int, parity: int) -> torch.Tensor:
    """[1, 0, 1, 0, ...] for parity 0 and [0, 1, 0, 1, ...] for parity 1: every entry changes every two layers."""
    return (torch.arange(dim) % 2 == parity).float()


# The name of the first layout.
Coupling = MLPCoupling


class LogitTransform(nn.Module):
    """y in (0, 1) -> logit(alpha + (1 - 2 alpha) y), with its log-determinant.

    Couplings work best on unbounded, roughly Gaussian inputs; squeezing into [alpha, 1 - alpha]
    first keeps the logit (and its Jacobian) finite at y = 0.
    """

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        self.alpha = alpha

    def forward(self, y: torch.Tensor, log_det: torch.Tensor, inverse: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if inverse:
            s = y
            log_p, log_1mp = F.logsigmoid(s), F.logsigmoid(-s)
            out = (torch.sigmoid(s) - self.alpha) / (1 - 2 * self.alpha)
        else:
            p = self.alpha + (1 - 2 * self.alpha) * y
            log_p, log_1mp = torch.log(p), torch.log1p(-p)
            out = log_p - log_1mp
        # d logit(p) / dy = (1 - 2 alpha) / (p (1 - p)) per pixel.
        ld = (math.log(1 - 2 * self.alpha) - log_p - log_1mp).flatten(1).sum(dim=1)
        return out, (log_det - ld) if inverse else (log_det + ld)


class ActNorm(nn.Module):
    """Per-channel affine map (x + bias) * exp(log_scale) (Glow).

    With data-dependent init, :meth:`ImageFlow.data_init` sets bias and scale once from a batch so
    every coupling starts on zero-mean, unit-variance inputs; without it they stay learnable from
    the identity.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.init_pending = False

    def forward(self, x: torch.Tensor, log_det: torch.Tensor, inverse: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.init_pending and not inverse:
            with torch.no_grad():
                self.bias.copy_(-x.mean(dim=(0, 2, 3), keepdim=True))
                self.log_scale.copy_(-torch.log(x.std(dim=(0, 2, 3), keepdim=True) + 1e-6))
            self.init_pending = False
        ld = self.log_scale.sum() * x.shape[2] * x.shape[3]
        if inverse:
            return x * torch.exp(-self.log_scale) - self.bias, log_det - ld
        return (x + self.bias) * torch.exp(self.log_scale), log_det + ld


class InvertibleConv1x1(nn.Module):
    """Glow's learned channel mix z = W x at every pixel, W initialised to a random rotation.

    Fixed channel masks always pair the same halves; a learned rotation in front of each coupling
    lets every channel condition on every other one. log|det| = H W log|det W|, cheap for the few
    channels here.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(channels, channels))[0])

    def forward(self, x: torch.Tensor, log_det: torch.Tensor, inverse: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        ld = torch.linalg.slogdet(self.weight)[1] * x.shape[2] * x.shape[3]
        weight = torch.linalg.inv(self.weight) if inverse else self.weight
        out = F.conv2d(x, weight.view(*weight.shape, 1, 1))
        return out, (log_det - ld) if inverse else (log_det + ld)


class Squeeze(nn.Module):
    """[B, C, H, W] -> [B, 4C, H/2, W/2] (each 2x2 block becomes 4 channels); volume-preserving."""

    def forward(self, x: torch.Tensor, log_det: torch.Tensor, inverse: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return (F.pixel_shuffle(x, 2) if inverse else F.pixel_unshuffle(x, 2)), log_det


class ConvCoupling(AffineCoupling):
    """Affine coupling on images ``[B, C, H, W]`` with a Glow-style conditioner: 3x3 conv, 1x1 conv, 3x3 conv.

    The 1x1 middle layer keeps the cost of a wide conditioner low on a CPU; the zero-initialised
    last 3x3 conv outputs C log-scales and C translations per pixel. ``context_channels``: the channels
    of the ``context`` that a conditional coupling's ``forward`` is given.
    """

    def __init__(self, mask: torch.Tensor, num_channels: int, context_channels: int = 0):
        channels = mask.shape[0]
        net = nn.Sequential(nn.Conv2d(channels + context_channels, num_channels, 3, padding=1), nn.ReLU(),
                            nn.Conv2d(num_channels, num_channels, 1), nn.ReLU(),
                            nn.Conv2d(num_channels, 2 * channels, 3, padding=1))
        # Channels-last weights make the convolutions pick the NHWC kernels: a training step of the 8-bit
        # flow took 266 ms instead of 353 ms on one CPU thread, with the same loss (scripts/flow_step_timing.py).
        net.to(memory_format=torch.channels_last)
        super().__init__(net, mask, (channels, 1, 1))


def checkerboard_mask(channels: int, height: int, width: int, parity: int) -> torch.Tensor:
    """1 where (row + column) % 2 == parity, on every channel: ``[C, H, W]``."""
    rows, cols = torch.arange(height).view(-1, 1), torch.arange(width).view(1, -1)
    return ((rows + cols) % 2 == parity).float().expand(channels, height, width).clone()


def channel_mask(channels: int, height: int, width: int, parity: int) -> torch.Tensor:
    """1 on the first half of the channels (parity 0) or the second half (parity 1): ``[C, H, W]``."""
    first_half = (torch.arange(channels) < channels // 2).float()
    keep = first_half if parity == 0 else 1 - first_half
    return keep.view(-1, 1, 1).expand(channels, height, width).clone()

"""A RealNVP-style flow for binary images: dequantization, logit pre-transform, actnorm and 1x1
invertible convolutions (Glow), checkerboard and channel couplings with convolutional conditioners,
squeeze and multi-scale factoring-out.

Likelihood of binary data (2 levels per pixel). A flow has a density p(y) on continuous y, not a
probability for x in {0, 1}^D, so each pixel value x owns the cell [x/2, (x+1)/2) of (0, 1) and
P(x) = integral of p(y) over the cell of x. Uniform dequantization draws y = (x + u) / 2 with
u ~ U(0, 1)^D, i.e. y has density q(y | x) = 2^D on the cell, and by Jensen

    log P(x) = log E_u[p(y) / q(y | x)] >= E_u[log p(y)] - D log 2,

so  -log P(x) <= E_u[-log p(y)] + D log 2  (nats per image). Training minimises the right-hand
side with one u per image; the test figure averages it over several u (same bound, less noise)
and also reports the tighter -log mean_k p(y_k) 2^-D, still an upper bound on -log P(x) by Jensen.

Direction convention as in :mod:`part3_flows.model`: ``transform(y)`` maps image space to base
space and returns log|det dz/dy|, every pre-transform included.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from part3_flows.distributions import LOG_2PI
from part3_flows.model import AffineCoupling

LEVELS = 2  # binary pixels


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
    last 3x3 conv outputs C log-scales and C translations per pixel.
    """

    def __init__(self, mask: torch.Tensor, num_channels: int):
        channels = mask.shape[0]
        net = nn.Sequential(nn.Conv2d(channels, num_channels, 3, padding=1), nn.ReLU(),
                            nn.Conv2d(num_channels, num_channels, 1), nn.ReLU(),
                            nn.Conv2d(num_channels, 2 * channels, 3, padding=1))
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
        z, log_det = self.transform(y)
        return -0.5 * (z ** 2 + LOG_2PI).sum(dim=1) + log_det

    @torch.no_grad()
    def sample(self, num_samples: int, temperature: float = 1.0, z: torch.Tensor | None = None) -> torch.Tensor:
        """Images in (0, 1) from base noise ``z`` (default: N(0, I) draws) scaled by ``temperature``."""
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

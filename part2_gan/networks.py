"""Part 2's networks, plain ``nn.Module``s that know nothing of training: the GAN's generators and
discriminators, and the adversarial autoencoder's encoder, decoder and latent discriminator.

GAN generators map latents ``[B, z_dim]`` to images ``[B, 1, 28, 28]`` in [-1, 1] (tanh output);
discriminators map images ``[B, 1, 28, 28]`` (or flat ``[B, 784]``) to logits ``[B, num_outputs]``, the first
real-or-fake, any others InfoGAN's code logits (no sigmoid: the losses use the numerically stable
``binary_cross_entropy_with_logits``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def _hidden_blocks(sizes: Sequence[int], dp_rate: float) -> list[nn.Module]:
    """Linear, Dropout, LeakyReLU(0.2) for every consecutive pair of ``sizes``."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.Dropout(dp_rate), nn.LeakyReLU(0.2)]
    return layers


class GeneratorMLP(nn.Module):
    def __init__(self, z_dim: int = 32, hidden_dims: Sequence[int] = (128, 256, 512),
                 output_shape: Sequence[int] = (1, 28, 28), dp_rate: float = 0.1):
        super().__init__()
        self.output_shape = tuple(output_shape)
        sizes = [z_dim, *hidden_dims]
        self.net = nn.Sequential(*_hidden_blocks(sizes, dp_rate), nn.Linear(sizes[-1], math.prod(output_shape)),
                                 nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.output_shape)


class DiscriminatorMLP(nn.Module):
    def __init__(self, input_dims: int = 784, hidden_dims: Sequence[int] = (512, 256), dp_rate: float = 0.3,
                 num_outputs: int = 1):
        super().__init__()
        sizes = [input_dims, *hidden_dims]
        self.net = nn.Sequential(*_hidden_blocks(sizes, dp_rate), nn.Linear(sizes[-1], num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


def dcgan_init_(module: nn.Module) -> nn.Module:
    """DCGAN's initialisation (Radford et al., 2016), in place: conv and linear weights from N(0, 0.02),
    batch-norm scales from N(1, 0.02), biases and shifts zero."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    return module


DCGAN_INITS = ("default", "dcgan")
DISCRIMINATOR_NORMS = ("batch", "spectral", "none")


class GeneratorDCGAN(nn.Module):
    """A linear layer to ``2c`` maps of 7x7, then two stride-2 transposed convolutions 7 -> 14 -> 28.

    Batch normalisation after every layer but the output, as in DCGAN (Radford et al., 2016).
    ``init``: "default" (PyTorch's) or "dcgan" (:func:`dcgan_init_`). ``conv_blocks``: 3x3 stride-1
    convolutions (batch norm, ReLU) added at 7x7 and at 14x14 each; one of each gave the best 3-epoch
    judge figure of the DCGAN tries (README: Part 2).
    """

    def __init__(self, z_dim: int = 32, num_filters: int = 32, init: str = "default", conv_blocks: int = 0):
        super().__init__()
        c = num_filters
        self.linear = nn.Sequential(nn.Linear(z_dim, 2 * c * 7 * 7, bias=False), nn.BatchNorm1d(2 * c * 7 * 7),
                                    nn.ReLU())
        self.net = nn.Sequential(
            *_conv_bn_relu(2 * c, conv_blocks),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),  # 7 -> 14
            *_conv_bn_relu(c, conv_blocks),
            nn.ConvTranspose2d(c, 1, 4, stride=2, padding=1), nn.Tanh(),  # 14 -> 28
        )
        if init == "dcgan":
            dcgan_init_(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.linear(z).view(z.shape[0], -1, 7, 7))


class DiscriminatorDCGAN(nn.Module):
    """Two stride-2 convolutions 28 -> 14 -> 7 with LeakyReLU(0.2), then a linear layer to ``num_outputs`` logits.

    ``norm``: "batch" after the second convolution (DCGAN's, none on the first layer), "spectral" on
    every layer (each weight divided by its largest singular value, Miyato et al., 2018) or "none".
    ``dp_rate``: dropout after each convolution. ``init`` as for :class:`GeneratorDCGAN`.
    """

    def __init__(self, num_filters: int = 32, norm: str = "batch", dp_rate: float = 0.0, init: str = "default",
                 num_outputs: int = 1):
        super().__init__()
        c = num_filters
        # Dropout layers only when asked for, so the default's parameter names match older checkpoints.
        dropout = [nn.Dropout(dp_rate)] if dp_rate > 0 else []
        batch_norm = [nn.BatchNorm2d(2 * c)] if norm == "batch" else []
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2), *dropout,  # 28 -> 14
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1, bias=not batch_norm), *batch_norm, nn.LeakyReLU(0.2),  # -> 7
            *dropout, nn.Flatten(),
            nn.Linear(2 * c * 7 * 7, num_outputs),
        )
        if init == "dcgan":
            dcgan_init_(self)
        if norm == "spectral":  # after the initialisation: it reparametrizes the weights it reads
            for layer in self.net:
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    nn.utils.parametrizations.spectral_norm(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.view(-1, 1, 28, 28))


def _conv_bn_relu(channels: int, blocks: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for _ in range(blocks):
        layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]
    return layers


def _linear_bn_relu(sizes: Sequence[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU()]
    return layers


class AAEEncoder(nn.Module):
    """Images ``[B, 1, 28, 28]`` -> codes ``[B, z_dim]``: ``num_layers`` Linear-BatchNorm-ReLU blocks, then linear."""

    def __init__(self, input_dim: int = 784, hidden_dim: int = 512, z_dim: int = 2, num_layers: int = 2):
        super().__init__()
        sizes = [input_dim] + [hidden_dim] * num_layers
        self.net = nn.Sequential(*_linear_bn_relu(sizes), nn.Linear(hidden_dim, z_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class AAEDecoder(nn.Module):
    """Codes ``[B, z_dim]`` -> Bernoulli logits ``[B, 1, 28, 28]`` (the encoder's mirror; no sigmoid)."""

    def __init__(self, z_dim: int = 2, hidden_dim: int = 512, output_shape: Sequence[int] = (1, 28, 28),
                 num_layers: int = 2):
        super().__init__()
        self.output_shape = tuple(output_shape)
        sizes = [z_dim] + [hidden_dim] * num_layers
        self.net = nn.Sequential(*_linear_bn_relu(sizes), nn.Linear(hidden_dim, math.prod(output_shape)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.output_shape)


class LatentDiscriminator(nn.Module):
    """Codes ``[B, z_dim]`` -> logits ``[B, 1]`` (prior sample vs encoder code).

    No batch norm: real and fake batches go through separately, and normalising each by its own
    statistics would erase exactly what tells them apart (a shifted or squeezed cloud of codes).
    """

    def __init__(self, z_dim: int = 2, hidden_dim: int = 512, num_layers: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        for n_in in [z_dim] + [hidden_dim] * (num_layers - 1):
            layers += [nn.Linear(n_in, hidden_dim), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Linear(hidden_dim, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

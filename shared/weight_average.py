"""A moving average of a network's weights to sample from (Yazici et al., 2019: averaging damps the
oscillation of adversarial training), kept on the device."""
from __future__ import annotations

import copy
from itertools import chain

import torch
from torch import nn


def averaged_copy(network: nn.Module) -> nn.Module:
    """A frozen copy of ``network`` to hold its average, starting at its current weights."""
    return copy.deepcopy(network).requires_grad_(False)


def _floating(network: nn.Module) -> list[torch.Tensor]:
    return [t for t in chain(network.parameters(), network.buffers()) if t.is_floating_point()]


@torch.no_grad()
def update_average(average: nn.Module, network: nn.Module, updates: torch.Tensor, decay: float) -> None:
    """Move ``average``'s weights and batch-norm statistics towards ``network``'s, and count the update in
    ``updates`` (a 0-d tensor). After ``n`` updates the decay is ``min(decay, (1 + n) / (10 + n))``, so the
    average follows closely at first instead of remembering the initial weights; it stays a tensor, so the
    update never waits for the device."""
    updates += 1
    weight = 1.0 - torch.clamp((1.0 + updates) / (10.0 + updates), max=decay)
    for averaged, current in zip(_floating(average), _floating(network)):
        averaged.lerp_(current, weight)

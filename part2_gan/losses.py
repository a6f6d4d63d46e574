"""The adversarial losses of Part 2's models and the discriminator's R1 gradient penalty."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def adversarial_bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """The adversarial loss of a batch of discriminator logits that should all say ``target`` (1 or 0)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def r1_penalty(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``E ||d logit / d x||^2`` over a batch of real images ``inputs`` (R1, Mescheder et al., 2018).

    ``inputs`` must require grad and ``logits`` be computed from them; the penalty keeps its graph, so
    its gradient reaches the discriminator's weights. It pulls the discriminator's surface flat on the
    data, which keeps its gradients to the generator from growing without bound.
    """
    (grad,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()

"""The adversarial losses of Part 2's models, the generator's top-k loss and the discriminator's R1 gradient penalty."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def adversarial_bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """The adversarial loss of a batch of discriminator logits that should all say ``target`` (1 or 0)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def top_k_generator_loss(fake_logits: torch.Tensor, k: int) -> torch.Tensor:
    """The non-saturating generator loss on only the ``k`` fakes the discriminator finds most real.

    Top-k training (Sinha et al., 2020): the fakes it scores as least realistic get no gradient, since
    their gradients can push samples away from the nearest mode rather than towards it.
    """
    if k < len(fake_logits):
        fake_logits = fake_logits.flatten().topk(k).values
    return adversarial_bce(fake_logits, 1.0)


def top_k_kept(batch_size: int, epoch: int, top_k: float, decay: float) -> int:
    """How many fakes of a batch top-k training keeps in ``epoch`` (from 0): ``ceil(B * max(decay ** epoch,
    top_k))``, all of them at first, while the discriminator's scores still say little (Sinha et al.'s schedule)."""
    return math.ceil(batch_size * max(decay ** epoch, top_k))


def r1_penalty(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``E ||d logit / d x||^2`` over a batch of real images ``inputs`` (R1, Mescheder et al., 2018).

    ``inputs`` must require grad and ``logits`` be computed from them; the penalty keeps its graph, so
    its gradient reaches the discriminator's weights. It pulls the discriminator's surface flat on the
    data, which keeps its gradients to the generator from growing without bound.
    """
    (grad,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()

"""Frankenstein digits: the left half of one digit joined to the right half of a digit of another class.

A density model that has learnt what digits look like should give them low likelihood; the AUROC of
the negative log-likelihood as a detector says how well each model notices.
"""
from __future__ import annotations

from scipy.stats import mannwhitneyu
import torch


def frankenstein_digits(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[N, C, H, W]`` images -> (spliced images, labels of left halves, labels of right halves).

    Image i keeps its columns left of W // 2 and takes the rest from a random partner of a
    different class.
    """
    n = len(images)
    partner = torch.randperm(n, generator=generator)
    clash = labels[partner] == labels
    while clash.any():  # about 1 in 10 pairs share a class; redraw only those
        partner[clash] = torch.randint(n, (int(clash.sum()),), generator=generator)
        clash = labels[partner] == labels
    spliced = images.clone()
    half = images.shape[-1] // 2
    spliced[..., half:] = images[partner][..., half:]
    return spliced, labels, labels[partner]


def frankenstein_auroc(natural_log_prob: torch.Tensor, frankenstein_log_prob: torch.Tensor) -> float:
    """AUROC of -log p(x) as a score that flags Frankenstein digits (1.0: perfect, 0.5: chance).

    Computed as the Mann-Whitney U statistic, P(-log p of a Frankenstein digit > that of a natural
    one), ties counting half. (torchmetrics' AUROC squashes scores outside [0, 1] through a sigmoid,
    which turns log-likelihoods of hundreds of nats into ties.)
    """
    u_statistic = mannwhitneyu(-frankenstein_log_prob.double().cpu().numpy(),
                               -natural_log_prob.double().cpu().numpy()).statistic
    return float(u_statistic) / (len(natural_log_prob) * len(frankenstein_log_prob))

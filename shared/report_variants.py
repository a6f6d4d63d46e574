"""The comparison report's MNIST variants (scripts/compare.py): which variant each run modelled, the test images
of each variant, the real reference its samples are judged against, the Frankenstein digits it scores, and the
likelihood tables, one per variant.

The project's standard: every figure is labelled with its data variant, and figures of different variants
never share a ranking. A model is scored on the data it was trained on: threshold-binarized (pixels > 0.5),
dynamically binarized (each pixel drawn from Bernoulli(grey); the test set is the project's one fixed draw,
``shared.data.DYNAMIC_EVAL_SEEDS``) or 8-bit grey (the 256 levels as k / 255, as the DataModule serves them).
"""
from __future__ import annotations

import math
import time

import torch

from shared.data import DYNAMIC, DYNAMIC_EVAL_SEEDS, GREY, THRESHOLD, dynamically_binarized, to_model_range
from shared.evaluation import draw_samples, evaluate_samples, real_reference
from shared.frankenstein import frankenstein_auroc, frankenstein_digits
from shared.report import Loaded, data_of, has_likelihood, phase, run_config, test_bpd

DESCRIPTIONS = {THRESHOLD: "pixels > 0.5",
                DYNAMIC: f"pixels drawn from Bernoulli(grey); the test set is one fixed draw, seed "
                         f"{DYNAMIC_EVAL_SEEDS['test']}",
                GREY: "the 256 grey levels, k / 255"}
FULL_TEST_SET = 10_000


def variant_images(variant: str, images: torch.Tensor) -> torch.Tensor:
    """uint8 MNIST ``[N, 28, 28]`` -> ``[N, 1, 28, 28]`` in [0, 1] as a model of ``variant`` reads them. A
    dynamically binarized set is the test set's fixed draw: the draw every run of that variant was tested on when
    ``images`` is the whole test set."""
    if variant == DYNAMIC:
        return dynamically_binarized(images, DYNAMIC_EVAL_SEEDS["test"])
    if variant not in (THRESHOLD, GREY):
        raise ValueError(f"no MNIST variant {variant!r}: one of {', '.join(DESCRIPTIONS)}")
    return to_model_range(images, binarize=variant == THRESHOLD)


def test_size(loaded: Loaded) -> int:
    """How many test images the run's test figures are over: all 10,000, or the first --subset of them."""
    subset = (run_config(loaded).get("data") or {}).get("subset")
    return min(subset, FULL_TEST_SET) if subset else FULL_TEST_SET


def header(models: list[Loaded]) -> str:
    """The report's sentence on the data: the variants of the runs with a likelihood and their test sets."""
    parts = []
    for variant in sorted({data_of(m) for m in filter(has_likelihood, models)}):
        runs = [m for m in filter(has_likelihood, models) if data_of(m) == variant]
        sizes = {test_size(m) for m in runs}
        tested = (f"test set of {sizes.pop():,} images" if len(sizes) == 1 else "test sets of " + ", ".join(
            f"{test_size(m):,} images ({m.spec.label})" for m in runs))
        parts.append(f"**{variant} MNIST** ({DESCRIPTIONS.get(variant, 'as its runs describe it')}; "
                     f"{', '.join(m.spec.label for m in runs)}), {tested}")
    if not parts:
        return "No model here has a likelihood."
    return ("Likelihoods are on " + "; and on ".join(parts) + ". Every figure is labelled with its data variant: "
            "figures of different variants never share a ranking.")


def sample_quality(models: list[Loaded], judge, num_samples: int, seed: int) -> list[dict]:
    """The judge's figures for ``num_samples`` samples of each judged model, against real MNIST of its variant;
    each result's ``reference`` names that variant."""
    references = {}
    results = []
    for loaded in (m for m in models if m.spec.judged):
        variant = data_of(loaded)
        if variant not in references:
            with phase(f"Judging real MNIST ({variant}), the ceiling"):
                references[variant] = real_reference(judge, variant != GREY, num_samples, seed=seed,
                                                     dynamic=variant == DYNAMIC)
        with phase(f"Sampling {num_samples:,} images from {loaded.spec.label} and judging them"):
            start = time.perf_counter()
            samples = draw_samples(loaded.model, num_samples, seed=seed)
            rate = num_samples / (time.perf_counter() - start)
            figures = evaluate_samples(judge, samples, binarized=variant != GREY, reference=references[variant],
                                       dynamic=variant == DYNAMIC)
        results.append({"loaded": loaded, "samples": samples, "images_per_second": rate, **figures})
    return results


def frankenstein_sets(variants: list[str], images: torch.Tensor, labels: torch.Tensor, count: int, seed: int
                      ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{variant: (``count`` natural test digits, as many Frankenstein digits)}: the same digits and the same
    splices in every variant, each made of that variant's pixels. ``images``: the uint8 test set."""
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(images), generator=generator)[:count]
    natural = torch.cat([variant_images(v, images)[chosen] for v in variants], dim=1)  # a channel per variant
    spliced = frankenstein_digits(natural, labels[chosen], generator)[0]  # one partner per digit for all of them
    return {v: (natural[:, i:i + 1], spliced[:, i:i + 1]) for i, v in enumerate(variants)}


@torch.no_grad()
def log_likelihood(model, images: torch.Tensor, iw_samples: int, seed: int, batch_size: int = 500) -> torch.Tensor:
    """log p(x) in nats per image as the model computes it (shared.generative), with ``iw_samples``
    importance samples for an importance-weighted bound and the model's own test setting otherwise.
    Its random draws come from ``seed`` alone, so a model's figures do not depend on which other models
    the report loaded before it (building each one draws from the global random state)."""
    samples = iw_samples if model.likelihood_kind == "importance-weighted bound" else None
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torch.cat([model.log_likelihood(batch, samples) for batch in images.split(batch_size)])


def frankenstein_scores(models: list[Loaded], sets: dict[str, tuple[torch.Tensor, torch.Tensor]], iw_samples: int,
                        seed: int) -> tuple[dict, dict[str, float]]:
    """({spec: (log p of the natural digits, of the Frankenstein ones)}, {label: AUROC}), each model scoring
    the digits of its own variant."""
    scores, aurocs = {}, {}
    for loaded in filter(has_likelihood, models):
        natural, spliced = sets[data_of(loaded)]
        with phase(f"Frankenstein scores of {loaded.spec.label} ({2 * len(natural):,} images)"):
            scores[loaded.spec] = (log_likelihood(loaded.model, natural, iw_samples, seed),
                                   log_likelihood(loaded.model, spliced, iw_samples, seed))
        aurocs[loaded.spec.label] = frankenstein_auroc(*scores[loaded.spec])
    return scores, aurocs


def frankenstein_tables(models: list[Loaded], scores: dict, aurocs: dict[str, float]) -> list[str]:
    """One table of AUROCs per variant: each ranks only the models scored on digits of that variant."""
    lines = []
    for variant in sorted({data_of(m) for m in models if m.spec in scores}):
        lines += [f"### Digits: {variant} MNIST", "", "| model | AUROC | mean log p natural | mean log p Frankenstein |",
                  "| --- | ---: | ---: | ---: |"]
        lines += [f"| {m.spec.label} | {aurocs[m.spec.label]:.3f} | {scores[m.spec][0].mean():.1f} | "
                  f"{scores[m.spec][1].mean():.1f} |" for m in models if m.spec in scores and data_of(m) == variant]
        lines.append("")
    return lines


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)  # not a weight average's copy again


def likelihood_tables(models: list[Loaded]) -> list[str]:
    """One table per data set the runs were tested on (threshold- or dynamically binarized, or 8-bit grey MNIST):
    figures of different data never share a ranking."""
    lines = []
    for data in sorted({data_of(m) for m in filter(has_likelihood, models)}):
        lines += [f"### Test set: {data} MNIST", "", *likelihood_rows([m for m in models if data_of(m) == data]), ""]
    return lines


def likelihood_rows(models: list[Loaded]) -> list[str]:
    rows = ["| model | test bpd | test NLL (nats) | kind of figure | other test figures (bpd) | parameters | epochs "
            "| training time | run |",
            "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | --- |"]
    for loaded in filter(has_likelihood, models):
        model, metrics, bpd = loaded.model, loaded.metrics, test_bpd(loaded)
        nats = bpd * model.num_dims * math.log(2)
        others = ", ".join(f"{key}: {value:.4f}" for key, value in sorted(metrics.items())
                           if key.startswith("test_") and key.endswith("bpd") and key != model.likelihood_metric)
        rows.append(f"| {loaded.spec.label} | {bpd:.4f} | {nats:.1f} | {model.likelihood_kind} | {others} | "
                    f"{num_parameters(model):,} | {metrics['epochs']} | {seconds(loaded.fit_seconds)} | "
                    f"`{loaded.run_dir}`{mark(loaded)} |")
    return rows


def seconds(value: float | None) -> str:
    return "?" if value is None else (f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min")


def mark(loaded: Loaded) -> str:
    by = " trained by compare.py" if loaded.trained_here else ""
    return f" (short run{by}: {loaded.shortened})" if loaded.shortened or loaded.trained_here else ""

"""Sample quality as judged by the project's own MNIST classifier, usable by every part.

The judge is the one bundled with the package (``shared/datasets/judge/judge.pt``, see ``shared.judge``),
so scoring needs no training; judging 10,000 images takes seconds on a CPU, and the scoring functions
print progress lines with an ETA while they run (``progress=False`` silences them).

Figures on N generated images, each beside the same figure for real images as the ceiling:
  frechet_distance     Fréchet distance between the judge's penultimate-layer features of the
                       samples and of the 10,000 real test images (torchmetrics, custom feature
                       extractor); the ceiling is N real *training* images against the same test set;
  inception_score      exp(E_x KL(p(y|x) || p(y))) with the judge as the classifier, mean over
                       10 splits (``inception_score_std``: their spread); at most 10;
  digits_covered       how many of the 10 digits the judge predicts for at least 1% of samples;
  class_kl_to_uniform  KL(histogram of predicted digits || uniform), nats;
  mean_max_prob        the judge's mean top softmax probability (how recognisable samples are).
The class figures' ceiling is their value on the real test images.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from shared.data import DYNAMIC_EVAL_SEEDS, dynamically_binarized, load_mnist, to_model_range, variant_name
from shared.generative import GenerativeModel, evaluating
from shared.judge import DigitClassifier, load_judge
from shared.progress import Progress

NUM_DIGITS = 10
COVERAGE_FRACTION = 0.01
FIGURES = ("frechet_distance", "inception_score", "inception_score_std", "digits_covered", "class_kl_to_uniform",
           "mean_max_prob")


class JudgeFeatures(nn.Module):
    """The judge's penultimate layer as the feature extractor torchmetrics' Fréchet distance calls. The
    judge's logits of the same images are kept in ``logits``: the class figures need them, and running the
    judge's body a second time for them would double the cost of every judged evaluation."""

    def __init__(self, judge: DigitClassifier):
        super().__init__()
        self.judge = judge
        self.num_features = judge.num_features
        self.logits: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.judge.features(images)
        self.logits = self.judge.head(features)
        return features


def to_unit_range(images: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """Map images from ``value_range`` to [0, 1]; values outside the declared range are an error."""
    low, high = value_range
    found_low, found_high = images.min().item(), images.max().item()
    margin = 1e-4 * (high - low)
    if found_low < low - margin or found_high > high + margin:
        raise ValueError(f"samples lie in [{found_low:.3g}, {found_high:.3g}], outside their declared range "
                         f"[{low:g}, {high:g}]")
    return ((images - low) / (high - low)).clamp_(0.0, 1.0)


@torch.no_grad()
def draw_samples(model: GenerativeModel, n: int, seed: int = 0, batch_size: int = 1000, means: bool = False
                 ) -> torch.Tensor:
    """``n`` images ``[n, 1, 28, 28]`` in [0, 1] on the CPU from ``model.sample``, reproducible given ``seed``.

    ``means``: the per-pixel means the samples are drawn from instead (``model.sample(k, means=True)``,
    the VAE's). The model is put in eval mode for sampling (no dropout) and the global random state is
    left as it was.
    """
    if means and "means" not in inspect.signature(model.sample).parameters:
        raise ValueError(f"{type(model).__name__} has no means to sample: its sample() takes no 'means'")
    chunks, progress = [], Progress("drawing samples", n, "samples")  # silent unless it takes more than 2 s
    with torch.random.fork_rng(), evaluating(model):
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            k = min(batch_size, n - start)
            chunks.append((model.sample(k, means=True) if means else model.sample(k)).float().cpu())
            progress.advance(k)
    progress.finish()
    return to_unit_range(torch.cat(chunks), (0.0, 1.0))


def class_counts(logits: torch.Tensor) -> torch.Tensor:
    """How many of the images the judge names each digit, ``[NUM_DIGITS]``."""
    return torch.bincount(logits.argmax(1), minlength=NUM_DIGITS)


def class_figures(logits: torch.Tensor, splits: int = 10) -> dict[str, float]:
    """Inception score, digit coverage, class-histogram KL to uniform and confidence from judge logits."""
    log_probs = logits.double().log_softmax(dim=1)
    probs = log_probs.exp()
    scores, splits = [], min(splits, len(logits))  # splits as even as can be (chunk made 9 of 25 images, one of 1)
    for part_log_probs, part_probs in zip(log_probs.tensor_split(splits), probs.tensor_split(splits)):
        log_marginal = part_probs.mean(0).log()
        scores.append((part_probs * (part_log_probs - log_marginal)).sum(1).mean().exp())
    scores = torch.stack(scores)
    histogram = class_counts(logits).double() / len(logits)
    present = histogram[histogram > 0]
    return {"inception_score": scores.mean().item(),
            "inception_score_std": scores.std().item() if len(scores) > 1 else 0.0,  # ddof 1, as torchmetrics'
            "digits_covered": int((histogram >= COVERAGE_FRACTION).sum()),
            "class_kl_to_uniform": (present * (present * NUM_DIGITS).log()).sum().item(),
            "mean_max_prob": probs.max(1).values.mean().item()}


def per_digit_figures(logits: torch.Tensor) -> dict[str, list[float | None] | float]:
    """For each digit, the share of the images the judge names it and its mean confidence (max softmax) on them
    (None for a digit it never names): where the mean max prob comes from, since a model that draws more of the
    digits the judge reads easily scores higher without drawing any digit better. ``confidence_digits_alike``:
    the mean of the digits' confidences (over the digits named), the mean max prob without the digit mix."""
    confidence, digit = logits.double().softmax(dim=1).max(1)
    counts = class_counts(logits).double()
    sums = torch.zeros(NUM_DIGITS, dtype=torch.float64).index_add_(0, digit, confidence)
    per_digit = [total / count if count else None for total, count in zip(sums.tolist(), counts.tolist())]
    named = [value for value in per_digit if value is not None]
    return {"share": (counts / len(logits)).tolist(), "confidence": per_digit,
            "confidence_digits_alike": sum(named) / len(named)}


class SampleQualityEvaluator:
    """Scores image sets against one real reference set, whose judge features are computed once.

    Args:
        judge: the classifier (kept in eval mode).
        reference: real images ``[M, 1, 28, 28]`` in [0, 1] (the test set).
        progress: print progress lines while the judge reads the reference (see :meth:`evaluate`).
    """

    def __init__(self, judge: DigitClassifier, reference: torch.Tensor, batch_size: int = 1000,
                 progress: bool = False):
        self.judge, self.batch_size = judge.eval(), batch_size
        # One process scores all its images: under DDP only rank zero judges during training, and torchmetrics'
        # default all-gather of the states at compute would wait for the other ranks forever.
        self.frechet = FrechetInceptionDistance(feature=JudgeFeatures(self.judge), reset_real_features=False,
                                                normalize=True, sync_on_compute=False)
        self.reference_logits = self._judge(reference, real=True, progress=progress, what="reference images")
        self.reference_figures = class_figures(self.reference_logits)

    @torch.no_grad()
    def _judge(self, images: torch.Tensor, real: bool, progress: bool, what: str) -> torch.Tensor:
        """The judge's logits for ``images``, whose features go to the real or the sample side of the
        Fréchet distance."""
        shown = Progress(f"judging {len(images):,} {what}", len(images), "images", enabled=progress)
        logits = []
        for batch in images.split(self.batch_size):
            self.frechet.update(batch, real=real)
            logits.append(self.frechet.inception.logits)
            shown.advance(len(batch))
        shown.finish()
        return torch.cat(logits)

    def evaluate(self, images: torch.Tensor, progress: bool = False, what: str = "samples") -> dict[str, float]:
        """The figures for ``images`` ``[N, 1, 28, 28]`` in [0, 1] (N >= 2 for the Fréchet distance).

        ``progress``: once the work has taken 2 s, a line on stdout every 10 s ("judging 10,000 samples:
        3,000/10,000 images, 4 s elapsed, ETA 9 s"), then the time taken; the figures are the same either way.
        """
        return self.evaluate_with_logits(images, progress, what)[0]

    def evaluate_with_logits(self, images: torch.Tensor, progress: bool = False, what: str = "samples"
                             ) -> tuple[dict[str, float], torch.Tensor]:
        """:meth:`evaluate`'s figures and the judge's logits ``[N, NUM_DIGITS]`` they came from (one pass)."""
        self.frechet.reset()
        images = to_unit_range(images, (0.0, 1.0))  # refused outside it: a GAN's [-1, 1] output scored as FD 728, not 19
        logits = self._judge(images, real=False, progress=progress, what=what)
        return {"frechet_distance": self.frechet.compute().item(), **class_figures(logits)}, logits


def real_images(split: str, binarized: bool, data_dir: str | Path | None = None, count: int | None = None,
                seed: int = 0, dynamic: bool = False) -> torch.Tensor:
    """MNIST images of ``split`` in [0, 1], grey-scale or binarized: all, or ``count`` drawn with ``seed``.

    Binarized by threshold, or with ``dynamic`` drawn as dynamically binarized images (the test set as a run's,
    from :data:`shared.data.DYNAMIC_EVAL_SEEDS`; training images from ``seed``)."""
    images = load_mnist(split, data_dir)[0]
    if count is not None:
        images = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count]]
    if binarized and dynamic:
        return dynamically_binarized(images, DYNAMIC_EVAL_SEEDS.get(split, seed))
    return to_model_range(images, binarize=binarized)


def real_reference(judge: DigitClassifier, binarized: bool, num_samples: int, data_dir: str | Path | None = None,
                   seed: int = 0, progress: bool = True, dynamic: bool = False
                   ) -> tuple[SampleQualityEvaluator, dict[str, float]]:
    """An evaluator holding the real test set, and the real ceiling of every figure for ``num_samples`` samples.

    The ceiling is the class figures of the test images themselves and the Fréchet distance of
    ``num_samples`` real training images (drawn with ``seed``) to the test images; the Fréchet
    distance is biased by the sample count, so compare sets of the same size only. ``progress``: see
    :meth:`SampleQualityEvaluator.evaluate`.
    """
    evaluator = SampleQualityEvaluator(judge, real_images("test", binarized, data_dir, dynamic=dynamic), progress=progress)
    train = real_images("train", binarized, data_dir, count=num_samples, seed=seed, dynamic=dynamic)
    real_frechet = evaluator.evaluate(train, progress=progress, what="real training images")["frechet_distance"]
    return evaluator, {**evaluator.reference_figures, "frechet_distance": real_frechet}


def evaluate_samples(judge: DigitClassifier, samples: torch.Tensor, binarized: bool = False,
                     data_dir: str | Path | None = None, seed: int = 0,
                     reference: tuple[SampleQualityEvaluator, dict[str, float]] | None = None,
                     progress: bool = True, per_digit: bool = False, dynamic: bool = False) -> dict:
    """The figures for ``samples`` (in [0, 1]) and their real ceilings, as one flat dict.

    Keys: each figure of :data:`FIGURES`, the same with prefix ``real_`` (the ceiling, see
    :func:`real_reference`; pass one already built to score several sample sets of the same size),
    ``num_samples`` and ``reference`` (which MNIST the samples were compared with: "8-bit grey",
    "threshold-binarized" or with ``dynamic`` "dynamically binarized"). ``progress``: lines on stdout with the time taken and an ETA while the judge
    reads the images, for work that takes more than 2 s (see :meth:`SampleQualityEvaluator.evaluate`).
    ``per_digit``: also ``per_digit`` and ``real_per_digit``, :func:`per_digit_figures` of the samples and of
    the test images, from the same pass of the judge.
    """
    evaluator, ceiling = reference or real_reference(judge, binarized, len(samples), data_dir, seed, progress, dynamic)
    figures, logits = evaluator.evaluate_with_logits(samples, progress=progress)
    results = {**{name: figures[name] for name in FIGURES}, **{f"real_{name}": ceiling[name] for name in FIGURES},
               "num_samples": len(samples), "reference": variant_name(binarized, dynamic)}
    if per_digit:
        results.update(per_digit=per_digit_figures(logits), real_per_digit=per_digit_figures(evaluator.reference_logits))
    return results


def format_report(results: dict, title: str) -> str:
    """A table of the figures beside their real ceilings."""
    labels = {"frechet_distance": "Fréchet distance (judge features)", "inception_score": "Inception score (judge)",
              "digits_covered": "digits covered (>= 1% of samples)",
              "class_kl_to_uniform": "KL(class histogram || uniform)", "mean_max_prob": "mean max softmax"}
    lines = [title, f"  {'figure':<36}{'samples':>10}{'real':>10}"]
    for name, label in labels.items():
        sample, real = results[name], results[f"real_{name}"]
        lines.append(f"  {label:<36}{sample:>10.4g}{real:>10.4g}")
    lines.append(f"  ({results['num_samples']} samples against the 10,000 {results['reference']} MNIST test images; "
                 f"real: the test images themselves, and for the Fréchet distance "
                 f"{results['num_samples']} training images)")
    return "\n".join(lines)


def judged_metrics(model: GenerativeModel, num_samples: int, seed: int, title: str,
                   judge_path: str | Path | None = None, data_dir: str | Path | None = None) -> dict:
    """The judge's figures for ``num_samples`` of the model's samples against the MNIST variant it models,
    printed as a table and returned as the ``eval_*`` entries of a run's metrics.json. ``judge_path``:
    None for the bundled judge (see :func:`shared.judge.load_judge`)."""
    judge, record = load_judge(judge_path, data_dir)
    samples = draw_samples(model, num_samples, seed=seed)
    results = evaluate_samples(judge, samples, binarized=model.data == "binary", data_dir=data_dir, seed=seed)
    print(format_report(results, f"Sample quality of {title} (judge test accuracy {record['test_accuracy']:.4f})"))
    return {**{f"eval_{name}": value for name, value in results.items()},
            "eval_judge_test_accuracy": record["test_accuracy"]}

"""The judge's figures while a generator trains (its flags: part2_gan.settings): every few epochs, the figures of
metrics.json and the class histogram of a fixed draw of samples go to TensorBoard, and a generator collapsed onto
few digits is warned about.

The draw is the same every time (the run's seed), so the curve moves with the model, not with the draw.
Its Fréchet distance is biased upwards by the sample count (2,000 samples read higher than the 10,000 of
metrics.json's ``eval_frechet_distance``): compare points of one curve, or curves of the same count.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from pytorch_lightning.utilities import rank_zero_warn

from shared.callbacks import batch_step
from shared.evaluation import COVERAGE_FRACTION, NUM_DIGITS, SampleQualityEvaluator, class_counts, draw_samples, \
    real_images
from shared.judge import load_judge
from shared.utils import figure_to_tensor, log_grid

# One digit in more than half of the samples (five times its fair share) is a collapse even when every digit
# still shows up; a digit in under COVERAGE_FRACTION of them (the judge's "digits covered") counts as missing.
DOMINANT_SHARE = 0.5


def collapse_message(counts: torch.Tensor, epoch: int) -> str | None:
    """One line naming the missing digits and a dominant one when ``counts`` (per digit) show a collapse."""
    shares = counts.double() / counts.sum()
    missing = [digit for digit, share in enumerate(shares.tolist()) if share < COVERAGE_FRACTION]
    top = int(shares.argmax())
    found = []
    if missing:
        found.append(f"digit{'s' * (len(missing) > 1)} {', '.join(map(str, missing))} in under "
                     f"{COVERAGE_FRACTION:.0%} of them")
    if shares[top] > DOMINANT_SHARE:
        found.append(f"digit {top} in {shares[top]:.0%} (over {DOMINANT_SHARE:.0%})")
    if not found:
        return None
    return (f"mode collapse in epoch {epoch}: of {int(counts.sum()):,} fixed-noise samples the judge reads "
            f"{' and '.join(found)}; see judge_class_histogram in TensorBoard")


def render_class_histogram(counts: torch.Tensor, title: str) -> torch.Tensor:
    """Bars of the share of samples read as each digit, missing and dominant digits in red, over the dashed
    uniform share; ``[3, H, W]`` in [0, 1]."""
    shares = (counts.double() / counts.sum()).numpy()
    figure = Figure(figsize=(4.5, 2.8), dpi=100)
    ax = figure.add_subplot()
    colours = ["tab:red" if share < COVERAGE_FRACTION or share > DOMINANT_SHARE else "tab:blue" for share in shares]
    ax.bar(range(NUM_DIGITS), shares * 100, color=colours)
    ax.axhline(100 / NUM_DIGITS, color="grey", linestyle="--", linewidth=1)
    # Fixed at 25% unless a digit needs more, so the bars of different epochs compare on TensorBoard's slider.
    ax.set(xticks=range(NUM_DIGITS), xlabel="digit (judge)", ylabel="% of samples", title=title,
           ylim=(0, max(25.0, 110 * shares.max())))
    figure.tight_layout()
    return figure_to_tensor(figure)


class JudgeCurveCallback(pl.Callback):
    """After every ``every`` epochs (rank zero only), the judge scores ``num_samples`` samples of the model,
    drawn with ``seed`` as by :func:`shared.evaluation.draw_samples`, against the MNIST test images
    (threshold-binarized for a model of binary data), and logs on the step axis of the sample grids:
    ``judge_fd`` (Fréchet distance), ``judge_inception_score``, ``judge_mean_max_prob`` (the judge's confidence),
    ``judge_class_kl_to_uniform``, ``judge_digits_covered``,
    ``judge_top_class_share`` and the picture ``judge_class_histogram``; a collapse (see
    :data:`DOMINANT_SHARE`) is warned about. ``history`` maps each judged epoch to its figures and
    ``class_counts``. A GAN that samples from a moving average of its generator's weights (``--ema_decay``)
    also gets ``judge_fd_trained_weights``, the same draw from the trained generator, so that the curve
    shows what the average gains.

    The training is the same with the callback as without: the model's mode and the random state are
    restored. The judge (``judge_path``, see :func:`shared.judge.load_judge`) and the test images' features
    are read once, at the first evaluation.
    """

    def __init__(self, every: int, num_samples: int, seed: int = 0, judge_path: str | Path | None = None,
                 data_dir: str | Path | None = None):
        self.every, self.num_samples, self.seed = every, num_samples, seed
        self.judge_path, self.data_dir = judge_path, data_dir
        self.evaluator: SampleQualityEvaluator | None = None
        self.history: dict[int, dict] = {}

    def _evaluator_for(self, pl_module: pl.LightningModule) -> SampleQualityEvaluator:
        if self.evaluator is None:
            judge, _ = load_judge(self.judge_path, self.data_dir)
            reference = real_images("test", pl_module.data == "binary", self.data_dir)
            self.evaluator = SampleQualityEvaluator(judge, reference)
        return self.evaluator

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if not self.every or epoch % self.every or not trainer.is_global_zero:
            return
        started = time.perf_counter()
        # Loading the judge builds a network, whose initial weights come from the global random state.
        with torch.random.fork_rng():
            evaluator = self._evaluator_for(pl_module)
        figures, logits = evaluator.evaluate_with_logits(draw_samples(pl_module, self.num_samples, seed=self.seed))
        counts = class_counts(logits)
        top_share = (counts.max() / counts.sum()).item()
        self.history[epoch] = {**figures, "top_class_share": top_share, "class_counts": counts}
        logged = {"judge_fd": figures["frechet_distance"], "judge_inception_score": figures["inception_score"],
                  "judge_mean_max_prob": figures["mean_max_prob"],
                  "judge_class_kl_to_uniform": figures["class_kl_to_uniform"],
                  "judge_digits_covered": figures["digits_covered"], "judge_top_class_share": top_share}
        if getattr(pl_module, "keeps_weight_average", False):
            pl_module.sample_from_average = False
            try:
                trained = evaluator.evaluate(draw_samples(pl_module, self.num_samples, seed=self.seed))
            finally:
                pl_module.sample_from_average = True
            self.history[epoch]["frechet_distance_trained_weights"] = logged["judge_fd_trained_weights"] = \
                trained["frechet_distance"]
        if trainer.logger is not None:
            step = batch_step(trainer)
            title = f"epoch {epoch}: {self.num_samples:,} samples, Fréchet {figures['frechet_distance']:.3g}"
            histogram = render_class_histogram(counts, title)
            # What the point cost the run (the first one also loads the judge and reads the test images once).
            logged["judge_seconds"] = time.perf_counter() - started
            trainer.logger.log_metrics(logged, step=step)
            log_grid(trainer.logger, "judge_class_histogram", histogram, step)
        message = collapse_message(counts, epoch)
        if message:
            rank_zero_warn(message)

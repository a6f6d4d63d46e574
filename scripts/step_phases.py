"""Where a training step of the VAE spends its time, through the project's pipeline (scripts/benchmark.py's: a run's
Trainer, callbacks and logger, --batches_per_call batches a call) and through the plain loop, on the same model and
batches: the loss (the forward pass; the pipeline's also adds the batch to the epoch means), the backward pass (the
pipeline's through Lightning's manual_backward and the hooks around it), the optimizer step (through Lightning's
optimizer wrapper and its hooks) and the rest (zero_grad and drawing the batches; the pipeline's loop around each call
of training_step), in microseconds a step, each phase's best of interleaved rounds: what the pipeline's gap to the
plain loop is made of. On a GPU, whose kernels run asynchronously, a phase's time is what the host spent on it.

    python scripts/step_phases.py                                              # the default VAE, an epoch a round
    python scripts/step_phases.py --hidden_dims 8 --z_dim 2 --batch_size 16    # other flags go to the VAE command
"""
from __future__ import annotations

import shared  # first: the OpenMP settings it makes (GOMP_SPINCOUNT) hold from torch's start, as in every command

import copy
import tempfile
import time
from typing import Callable

import pytorch_lightning as pl
import torch

from part1_vae import train as vae_command
from shared.cli import OneLineArgumentParser
from shared.process import run_script
from shared.runs import DescriptionAndDefaultsFormatter, positive_int
from shared.timing import (build_as_a_run, device_batches, plain_optimizer, synchronize, time_pipeline,
                           training_device, whole_calls)

TIMED = ("loss", "backward", "optimizer step")


class PhaseClock:
    """Seconds spent in each phase of the pipeline's training steps: the model's calls, timed where it makes them."""

    def __init__(self):
        self.seconds = dict.fromkeys(TIMED, 0.0)
        self.calls = dict.fromkeys(TIMED, 0)

    def timed(self, phase: str, call: Callable) -> Callable:
        def timed_call(*args, **kwargs):
            start = time.perf_counter()
            out = call(*args, **kwargs)
            self.seconds[phase] += time.perf_counter() - start
            self.calls[phase] += 1
            return out
        return timed_call

    def timed_optimizer(self, optimizers: Callable) -> Callable:
        """``LightningModule.optimizers`` whose optimizer (Lightning's wrapper, the same object every call) has its
        ``step`` timed."""
        def timed_optimizers(*args, **kwargs):
            optimizer = optimizers(*args, **kwargs)
            if "step" not in vars(optimizer):
                optimizer.step = self.timed("optimizer step", optimizer.step)
            return optimizer
        return timed_optimizers


def pipeline_phases(template: pl.LightningModule, datamodule, log_dir: str, batches: int | None) -> dict[str, float]:
    """Seconds a step of each phase and in all (``"step"``) over ``batches`` batches (none: an epoch) through the
    project's pipeline."""
    model, clock = copy.deepcopy(template), PhaseClock()
    model.step = clock.timed("loss", model.step)
    model.manual_backward = clock.timed("backward", model.manual_backward)
    model.optimizers = clock.timed_optimizer(model.optimizers)
    total = time_pipeline(model, datamodule, log_dir, batches)
    steps = clock.calls["loss"]  # a training step each (validation is off)
    return {**{phase: seconds / steps for phase, seconds in {**clock.seconds, "step": total}.items()}, "steps": steps}


def plain_phases(template: pl.LightningModule, images: torch.Tensor, batch_size: int,
                 batches: int | None) -> dict[str, float]:
    """The same through scripts/benchmark.py's plain loop (its loss: the model's forward pass)."""
    model = copy.deepcopy(template).to(images.device).train()
    optimizer = plain_optimizer(model)
    seconds, steps = dict.fromkeys(TIMED, 0.0), 0
    synchronize(images.device)
    start = time.perf_counter()
    for (x,) in device_batches(images, batch_size, batches):
        steps += 1
        optimizer.zero_grad(set_to_none=True)
        marks = [time.perf_counter()]
        loss = model(x)[2]
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        optimizer.step()
        marks.append(time.perf_counter())
        for phase, begin, end in zip(TIMED, marks, marks[1:]):
            seconds[phase] += end - begin
    synchronize(images.device)
    return {**{phase: total / steps for phase, total in {**seconds, "step": time.perf_counter() - start}.items()},
            "steps": steps}


def main(argv=None) -> dict[str, dict[str, float]]:
    parser = OneLineArgumentParser(prog="scripts/step_phases.py", description=__doc__,
                                   formatter_class=DescriptionAndDefaultsFormatter)
    parser.add_argument("--batches", type=positive_int, default=None,
                        help="batches a round (rounded up to whole calls of --batches_per_call); none: an epoch")
    parser.add_argument("--rounds", type=positive_int, default=5, help="interleaved rounds")
    args, vae_flags = parser.parse_known_args(argv)
    run_args, template, datamodule = build_as_a_run(vae_command, vae_flags)
    if (run_args.objective, run_args.likelihood, run_args.binarization) != ("elbo", "bernoulli", "threshold"):
        parser.error("the plain loop trains on the ELBO of threshold-binarized images (the model's forward pass); "
                     "time the VAE with --objective elbo --likelihood bernoulli --binarization threshold")
    batches = args.batches and whole_calls(args.batches, run_args.batches_per_call)
    images = datamodule.splits["train"].images.to(training_device())
    rounds: dict[str, list[dict[str, float]]] = {"pipeline": [], "plain": []}
    with tempfile.TemporaryDirectory() as log_dir:
        for _ in range(args.rounds):
            rounds["pipeline"].append(pipeline_phases(template, datamodule, log_dir, batches))
            rounds["plain"].append(plain_phases(template, images, run_args.batch_size, batches))
    micros = {way: {phase: min(one[phase] for one in ways) * 1e6 for phase in (*TIMED, "step")}
              for way, ways in rounds.items()}
    for phases in micros.values():
        phases["rest"] = phases["step"] - sum(phases[phase] for phase in TIMED)
    steps = {way: ways[0]["steps"] for way, ways in rounds.items()}
    print(f"A training step of the VAE ({' '.join(vae_flags) or 'defaults'}), batches of {run_args.batch_size} "
          f"({steps['pipeline']} a round through the pipeline, {steps['plain']} through the plain loop), best of "
          f"{args.rounds} interleaved rounds each, microseconds:")
    print(f"{'phase':<16}{'pipeline':>10}{'plain':>10}{'over plain':>12}")
    for phase in (*TIMED, "rest", "step"):
        pipeline, plain = micros["pipeline"][phase], micros["plain"][phase]
        print(f"{phase:<16}{pipeline:>10.0f}{plain:>10.0f}{pipeline - plain:>+12.0f}")
    print("(rest: zero_grad and drawing the batches, and the pipeline's loop around each call; step: the best round's "
          "whole step, so the phases' best rounds need not add up to it)")
    return micros


if __name__ == "__main__":
    run_script(main)

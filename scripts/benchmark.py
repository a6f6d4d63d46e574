"""The project's speed on whatever device it runs on, in one call, written as a markdown table.

    python scripts/benchmark.py                          # all of it (on a 2-core CPU: 12 to 14 minutes)
    python scripts/benchmark.py --vae_epochs 0 --iw_samples 0   # throughput only

What it measures:
  throughput  one epoch of the default VAE and of the default MLP GAN, and --flow_batches batches of the
              MNIST flow, each trained two ways from the same initial weights, interleaved, best of
              --repeats: the project's pipeline (the command's DataModule, LightningModule and a Trainer
              with every callback a run has, validation off) and a plain PyTorch loop over the same
              model, on batches sliced from a tensor on the device (the floor the framework adds to);
              images per second and their ratio. Between the two, Lightning alone: a Trainer with no
              callback and no logger on the same data module and model (so with the command's batches a
              call of training_step, 8), the framework's own per-step cost, which the project's callbacks
              add to. The VAE also against a per-image PIL + torchvision transform DataLoader, the
              tutorials' pipeline. Batch counts are rounded up to whole calls of 8 batches.
  step cost   --step_cost_batches batches of a VAE so small (benchmark.TINY_VAE_FLAGS) that its step is mostly
              the framework's: the microseconds each way adds to the plain loop's step, for Lightning alone
              (Trainer and LightningModule as Lightning makes them, 8 batches a call), the pipeline without
              shared.lean_lightning, the pipeline with one batch a call of training_step (--batches_per_call 1)
              and the pipeline, all on the project's data module (whose resident batches skip Lightning's
              transfer; batches in whole calls); interleaved, best of --repeats. And each way's function
              calls a step, counted by cProfile (epochs of a quarter and half of those batches): a figure the
              machine's noise does not move, where a shared CPU's timings move by a tenth.
  VAE fit     `python -m part1_vae.train --epochs N` (N = --vae_epochs, default 80, the command's default):
              the fit seconds of its timing.json.
  IW bound    the project's test stage on that run's checkpoint: the importance-weighted bound with
              --iw_samples (default 1000) samples on the 10,000 test images, timed alone.
  GAN fit     `python -m part2_gan.train --epochs N --eval_samples 0 --judge_every 0` with N = --gan_epochs
              (default 0: skipped; 250 is its command's default).
The table goes to stdout and to --out (default reports/benchmark-<device>.md), which holds the figures
measured so far after each of them (marked as such until the benchmark has finished).
"""
from __future__ import annotations

import shared  # first: the OpenMP settings it makes (GOMP_SPINCOUNT) hold from torch's start, as in every command

import copy
import cProfile
import importlib
import json
import pstats
import re
import shlex
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from shared.callbacks import EvaluationProgress
from shared.checks import unwritable
from shared.cli import OneLineArgumentParser, parse_args
from shared.data import load_mnist
from shared.process import machine_name, run_script
from shared.runs import DescriptionAndDefaultsFormatter
from shared.timing import (as_lightning_makes_it, build_as_a_run, device_batches, synchronize, time_pipeline,
                           time_plain, time_plain_gan, training_device, whole_calls)

# The commands whose models are timed, imported by name as shared.runs does (a command is imported by nothing).
# The flow the README's figures measured (uniform noise), at a constant rate: the plain loop has no epochs, nor a
# weight average (the task's default since 2026-12-06, left out since 2026-12-07: an update of 0.95 ms a step).
FLOW_FLAGS = ["--task", "mnist", "--dequantization", "uniform", "--lr_final", "none", "--ema_decay", "0"]
vae_command, gan_command, flow_command = (importlib.import_module(f"{part}.train")
                                          for part in ("part1_vae", "part2_gan", "part3_flows"))


class PerImagePILDataset(Dataset):
    """The tutorial-style pipeline: one PIL image and one transform call per item."""

    def __init__(self, images: torch.Tensor):
        self.images = images.numpy()
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Lambda(lambda x: (x > 0.5).float())])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.images[index], mode="L")), 0


def best_seconds(ways: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Each way's fastest of ``repeats`` interleaved rounds (every way once a round, so a slow spell of the machine
    hits them all)."""
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(repeats):
        for way, timed in ways.items():
            seconds[way].append(timed())
    print("  seconds of each round: " + "; ".join(f"{way} " + " ".join(f"{t:.3f}" for t in times)
                                               for way, times in seconds.items()), flush=True)  # the machine's noise
    return {way: min(times) for way, times in seconds.items()}


def throughput(name: str, command, flags: list[str], repeats: int, batches: int | None, per_image: bool) -> dict:
    """Images per second of the pipeline and of the plain loop(s), best of ``repeats`` interleaved rounds."""
    device = training_device()
    args, template, datamodule = build_as_a_run(command, flags)
    train = datamodule.splits["train"]
    images = train.images.to(device)
    if command is flow_command:  # the actnorm data init a fit does first, done once for both ways, where the
        template.init_from_data(train.images[:args.batch_size])  # template is (the host: each way moves its copy)
    batches = batches and whole_calls(batches, args.batches_per_call)
    count = len(train) if batches is None else min(len(train), batches * args.batch_size)
    plain_loss = {vae_command: lambda model, x: model(x)[2],
                  flow_command: lambda model, x: model.bpd(model.nll(x)).mean()}.get(command)
    ways: dict[str, Callable[[], float]] = {}
    with tempfile.TemporaryDirectory() as log_dir:
        ways["pipeline"] = lambda: time_pipeline(copy.deepcopy(template), datamodule, log_dir, batches)
        ways["Lightning alone"] = lambda: time_pipeline(copy.deepcopy(template), datamodule, None, batches)
        if plain_loss is None:
            ways["plain"] = lambda: time_plain_gan(copy.deepcopy(template), device_batches(images, args.batch_size,
                                                                                            batches), device)
        else:
            ways["plain"] = lambda: time_plain(copy.deepcopy(template), plain_loss,
                                               device_batches(images, args.batch_size, batches), device)
        if per_image:
            loader = DataLoader(PerImagePILDataset(load_mnist("train")[0][:len(train)]),
                                batch_size=args.batch_size, shuffle=True)
            ways["per-image"] = lambda: time_plain(copy.deepcopy(template), plain_loss, loader, device)
        seconds = best_seconds(ways, repeats)
    rates = {way: count / best for way, best in seconds.items()}
    print(f"{name}: " + ", ".join(f"{way} {rate:,.0f} images/s" for way, rate in rates.items())
          + f", pipeline / plain {rates['pipeline'] / rates['plain']:.2f}x"
          + f", Lightning alone / plain {rates['Lightning alone'] / rates['plain']:.2f}x", flush=True)
    return {"what": name, "images": count, "batch_size": args.batch_size, **rates}


# A VAE whose step is mostly the framework's: what the Trainer, callbacks and logger add to each step shows.
TINY_VAE_FLAGS = ["--hidden_dims", "8", "--z_dim", "2", "--batch_size", "16"]


def calls_per_step(timed: Callable[[int], float], batches: int) -> float:
    """Function calls (Python's and builtins', as cProfile counts them) of a training step: those of an epoch of
    ``2 * batches`` batches less those of one of ``batches``, per batch, so the set-up and tear-down cancel. A count,
    not a time: the machine's noise does not reach it."""
    counts = []
    for n in (batches, 2 * batches):
        profile = cProfile.Profile()
        profile.runcall(timed, n)
        counts.append(pstats.Stats(profile).total_calls)
    return (counts[1] - counts[0]) / batches


def framework_cost_per_step(batches: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Per way: the microseconds a training step of the tiny VAE takes over the plain loop's, best of ``repeats``
    interleaved rounds, and its function calls (:func:`calls_per_step`); "plain" holds the plain loop's own step."""
    device = training_device()
    args, template, datamodule = build_as_a_run(vae_command, TINY_VAE_FLAGS)
    one_a_call = build_as_a_run(vae_command, [*TINY_VAE_FLAGS, "--batches_per_call", "1"])[2]
    batches = whole_calls(batches, args.batches_per_call)
    images = datamodule.splits["train"].images.to(device)
    with tempfile.TemporaryDirectory() as log_dir:
        ways = {"plain": lambda n: time_plain(copy.deepcopy(template), lambda model, x: model(x)[2],
                                              device_batches(images, args.batch_size, n), device),
                "Lightning alone": lambda n: time_pipeline(as_lightning_makes_it(copy.deepcopy(template)), datamodule,
                                                           None, n),
                "pipeline without shared.lean_lightning": lambda n: time_pipeline(
                    as_lightning_makes_it(copy.deepcopy(template)), datamodule, log_dir, n, lean=False),
                "pipeline, one batch a call": lambda n: time_pipeline(copy.deepcopy(template), one_a_call, log_dir, n),
                "pipeline": lambda n: time_pipeline(copy.deepcopy(template), datamodule, log_dir, n)}
        seconds = best_seconds({way: partial(timed, batches) for way, timed in ways.items()}, repeats)
        calls = {way: calls_per_step(timed, whole_calls(max(batches // 4, 1), args.batches_per_call))
                 for way, timed in ways.items()}
    micros = {way: best / batches * 1e6 for way, best in seconds.items()}
    costs = {way: (step - micros["plain"] if way != "plain" else step, calls[way]) for way, step in micros.items()}
    print("framework cost a step (tiny VAE): " + ", ".join(f"{way} {cost:.0f} us, {calls[way]:,.0f} calls"
                                                          for way, (cost, _) in costs.items() if way != "plain")
          + f" (plain loop's step {micros['plain']:.0f} us, {calls['plain']:,.0f} calls)", flush=True)
    return costs


def run_and_time(command, flags: list[str], log_dir: str) -> tuple[float, Path]:
    """Run a command; its fit seconds (timing.json) and the run directory."""
    command.main([*flags, "--log_dir", log_dir, "--name", "benchmark"])
    run_dir = Path(log_dir, "benchmark", "version_0")
    return json.loads((run_dir / "timing.json").read_text())["fit_seconds"], run_dir


def iw_bound_seconds(run_dir: Path, iw_samples: int) -> float:
    """Seconds of the project's test stage (the IW bound on the 10,000 test images) on a run's checkpoint."""
    from shared.runs import load_run  # imported here: it imports every command's builder

    model = load_run(run_dir)[0]
    model.hparams.iw_samples = iw_samples
    # The full test set whatever the run trained on (the run of --vae_epochs 0 trains on a subset).
    datamodule = vae_command.build_datamodule(parse_args(vae_command.build_parser(), [], vae_command.check,
                                                         vae_command.default_name))
    trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False,
                         callbacks=[EvaluationProgress()], enable_model_summary=False)
    start = time.perf_counter()
    trainer.test(model, datamodule=datamodule, verbose=False)
    synchronize(model.device)
    return time.perf_counter() - start


def markdown(device: str, rows: list[dict], fits: dict[str, str], command: str,
             step_costs: dict[str, tuple[float, float]] | None = None, finished: bool = True) -> str:
    measured = "Measured" if finished else "Measured so far (the benchmark had not finished)"
    lines = [f"{measured} on {device} with `{command}`.", "",
             "| model, data | project's pipeline | Lightning alone | plain loop | project / plain | Lightning alone / plain "
             "| per-image pipeline |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        per_image = f"{row['per-image']:,.0f} img/s" if "per-image" in row else ""
        lines.append(f"| {row['what']}, {row['images']:,} images, batch {row['batch_size']} | {row['pipeline']:,.0f} "
                     f"img/s | {row['Lightning alone']:,.0f} img/s | {row['plain']:,.0f} img/s | "
                     f"**{row['pipeline'] / row['plain']:.2f}x** | {row['Lightning alone'] / row['plain']:.2f}x | "
                     f"{per_image} |")
    if step_costs:
        plain_step, plain_calls = step_costs["plain"]
        lines += ["", f"Framework cost a step over the plain loop's {plain_step:.0f} us and {plain_calls:,.0f} function "
                      f"calls (cProfile's count: no noise), tiny VAE (`{' '.join(TINY_VAE_FLAGS)}`):", "",
                  "| way | cost a step | function calls a step |", "| --- | ---: | ---: |"]
        lines += [f"| {way} | {cost:.0f} us | {calls - plain_calls:+,.0f} |" for way, (cost, calls) in step_costs.items()
                  if way != "plain"]
    if fits:
        lines += ["", "| run | wall-clock |", "| --- | ---: |"] + [f"| {what} | {value} |" for what, value in fits.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = OneLineArgumentParser(prog="scripts/benchmark.py", description=__doc__,
                                   formatter_class=DescriptionAndDefaultsFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of each throughput (best kept)")
    parser.add_argument("--flow_batches", type=int, default=100,
                        help="batches of the flow's throughput (rounded up to whole calls of --batches_per_call's 8)")
    parser.add_argument("--vae_epochs", type=int, default=80, help="epochs of the default VAE fit (0: skipped)")
    parser.add_argument("--iw_samples", type=int, default=1000, help="k of the timed IW bound (0: skipped)")
    parser.add_argument("--gan_epochs", type=int, default=0, help="epochs of the MLP GAN fit (0: skipped)")
    parser.add_argument("--no_per_image", action="store_true", help="skip the per-image PIL pipeline")
    parser.add_argument("--step_cost_batches", type=int, default=400,
                        help="batches of the tiny VAE whose steps time the framework's own cost (0: skipped)")
    parser.add_argument("--out", default=None, help="markdown file; none: reports/benchmark-<device>.md")
    args = parser.parse_args(argv)
    for flag in ("repeats", "flow_batches"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag} must be positive, got {getattr(args, flag)}")
    for flag in ("vae_epochs", "iw_samples", "gan_epochs", "step_cost_batches"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag} must be >= 0 (0: skipped), got {getattr(args, flag)}")
    device = machine_name()
    named = torch.cuda.get_device_name() if torch.cuda.is_available() else device  # a GPU's file: the GPU's name
    out = Path(args.out or f"reports/benchmark-{re.sub(r'[^A-Za-z0-9]+', '-', named).strip('-').lower()}.md")
    if out.is_dir():  # found now, not after minutes of timing
        parser.error(f"--out {out} is a folder: pass a file name")
    if problem := unwritable(out.parent):
        parser.error(f"--out {out}: {problem}")
    # The flow's convolutions run in float32, not TF32, on a GPU (part3_flows.modules.ImageFlowModule.setup): the plain
    # loop's too, whichever way runs first.
    torch.backends.cudnn.allow_tf32 = False
    print(f"Benchmark on {device}", flush=True)
    command = shlex.join(["python", "scripts/benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    fits: dict[str, str] = {}
    step_costs = None

    def write(finished: bool = False) -> str:
        """The table of what is measured so far: an interrupted benchmark (a time limit) keeps its figures."""
        table = markdown(device, rows, fits, command, step_costs, finished)
        out.write_text(table)
        return table

    for name, part, flags, batches, per_image in [
            ("VAE MLP z=20, threshold-binarized MNIST", vae_command, [], None, not args.no_per_image),
            ("GAN MLP, grey MNIST in [-1, 1]", gan_command, ["--judge_every", "0"], None, False),
            ("flow (RealNVP c64 b4 s2), threshold-binarized MNIST", flow_command, FLOW_FLAGS, args.flow_batches,
             False)]:
        rows.append(throughput(name, part, flags, args.repeats, batches, per_image))
        write()
    if args.step_cost_batches:
        step_costs = framework_cost_per_step(args.step_cost_batches, args.repeats)
        write()
    with tempfile.TemporaryDirectory() as log_dir:
        if args.vae_epochs:
            seconds, run_dir = run_and_time(vae_command, ["--epochs", str(args.vae_epochs), "--iw_samples", "2"], log_dir)
            fits[f"default VAE fit, {args.vae_epochs} epochs"] = f"{seconds:,.1f} s"
            write()
        if args.iw_samples:
            if not args.vae_epochs:  # an untrained model costs the same to bound
                _, run_dir = run_and_time(vae_command, ["--epochs", "1", "--subset", "256", "--iw_samples", "2"], log_dir)
            fits[f"IW bound, k={args.iw_samples}, 10,000 test images"] = f"{iw_bound_seconds(run_dir, args.iw_samples):,.1f} s"
            write()
        if args.gan_epochs:
            seconds, _ = run_and_time(gan_command, ["--epochs", str(args.gan_epochs), "--eval_samples", "0",
                                                   "--judge_every", "0"], str(Path(log_dir, "gan")))
            fits[f"MLP GAN fit, {args.gan_epochs} epochs"] = f"{seconds:,.1f} s"
    print(f"\n{write(finished=True)}\nwritten to {out}")


if __name__ == "__main__":
    run_script(main)

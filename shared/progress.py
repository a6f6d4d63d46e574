"""What a person reads while long work runs: lines with what is done, the time elapsed and the time left, and the
training commands' progress bar and model summary."""
from __future__ import annotations

import time

import torch
from pytorch_lightning.callbacks import ModelSummary, TQDMProgressBar

from shared.batches import GroupedBatches, batch_count


class Progress:
    """Progress lines for a long loop, on stdout: what is done, the time elapsed and an ETA.

    ``advance`` prints a line once ``first`` seconds have passed and then every ``every`` seconds;
    ``report`` prints one now (an epoch's end); ``finish`` prints the total time unless no line was
    printed (work done in under ``first`` seconds stays silent) or the last one said all was done.
    Reporting only reads the clock: it never changes a number of the work.
    """

    def __init__(self, task: str, total: int, unit: str, enabled: bool = True, first: float = 2.0,
                 every: float = 10.0):
        self.task, self.total, self.unit, self.enabled, self.every = task, total, unit, enabled, every
        self.done, self.reported_done = 0, None  # how much was done at the last line printed
        self.start = time.perf_counter()
        self.next_report = self.start + first

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.enabled and self.done < self.total and time.perf_counter() >= self.next_report:
            self.report()

    def report(self, stage: str = "") -> None:
        if not self.enabled:
            return
        elapsed = self.elapsed()
        remaining = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        print(f"{self.task}: {stage}{self.done:,}/{self.total:,} {self.unit}, {duration(elapsed)} elapsed, "
              f"ETA {duration(remaining)}", flush=True)
        self.reported_done = self.done
        self.next_report = time.perf_counter() + self.every

    def finish(self) -> None:
        if self.enabled and self.reported_done is not None and self.reported_done < self.total:
            print(f"{self.task}: done in {duration(self.elapsed())}", flush=True)


def duration(seconds: float) -> str:
    """``seconds`` for people: "42 s", "12 min 05 s"."""
    if seconds != seconds:  # NaN: nothing done yet to extrapolate from
        return "unknown"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


class EpochBar(TQDMProgressBar):
    """Lightning's progress bar as the epoch lines read: epochs from 1 of all (``Epoch 1/80``; Lightning's shows
    ``Epoch 0``), batches where Lightning counts calls of ``training_step`` (each a BatchGroup of several batches
    with ``--batches_per_call``), no logger version number, and at the end the last epoch's training figures
    (Lightning's bar updates its figures at an epoch's end before the module logs them, so it ended on the epoch
    before's)."""

    @property
    def total_train_batches(self) -> int | float:
        calls, loader = super().total_train_batches, self.trainer.train_dataloader
        if isinstance(loader, GroupedBatches) and calls != float("inf"):
            return min(len(loader.batches), calls * loader.size)
        return calls

    @property
    def train_description(self) -> str:  # the bar's name from its first frame on, which Lightning's calls "Training"
        return f"Epoch {self.trainer.current_epoch + 1}/{self.trainer.max_epochs}"

    def on_train_epoch_start(self, trainer, *_) -> None:
        # As Lightning's, but named before the reset draws the bar: Lightning's drew it again under its 0-based name,
        # a flash in a terminal and a line of its own in a log file (QA: "Epoch 1:" between "Epoch 1/2" and "2/2").
        if getattr(self, "_leave", False):  # a bar an epoch (Lightning's leave=True)
            self.train_progress_bar = self.init_train_tqdm()
        total = self.total_train_batches
        self.train_progress_bar.set_description(self.train_description, refresh=False)
        self.train_progress_bar.reset(total=None if total == float("inf") else total)
        self.epoch_batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.epoch_batches += batch_count(batch)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, self.epoch_batches - 1)

    def get_metrics(self, trainer, pl_module) -> dict:
        return {name: value for name, value in super().get_metrics(trainer, pl_module).items() if name != "v_num"}

    def on_train_end(self, trainer, pl_module) -> None:
        self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
        super().on_train_end(trainer, pl_module)


class ForkedRandomModelSummary(ModelSummary):
    """Lightning's model summary, with each module's input and output sizes from the model's ``example_input_array``.
    That example's forward pass draws random numbers (a VAE's z), here from forked generators: showing the summary
    changes no number of the run."""

    untrained: frozenset[str] = frozenset()  # the networks no parameter of which takes gradients

    def on_fit_start(self, trainer, pl_module) -> None:
        self.untrained = frozenset(name for name, network in pl_module.named_children()
                                   if {parameter.requires_grad for parameter in network.parameters()} == {False})
        cuda = [pl_module.device.index or 0] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            super().on_fit_start(trainer, pl_module)

    def summarize(self, summary_data: list[tuple[str, list[str]]], *totals, **kwargs) -> None:
        """A line per network: its parameters and, where the example reached it, its input and output sizes
        (Lightning's table adds modules without parameters, each module's mode and FLOPs: nothing to read here); a
        network that is not trained (a weight average: ``--ema_decay``) says so, as the run's count of parameters
        leaves it out."""
        columns = dict(summary_data)
        unknown = ["?"] * len(columns["Name"])  # no example_input_array: no sizes
        sizes_in, sizes_out = columns.get("In sizes", unknown), columns.get("Out sizes", unknown)
        for name, kind, params, size_in, size_out in zip(columns["Name"], columns["Type"], columns["Params"], sizes_in,
                                                         sizes_out):
            if params.strip() != "0":  # Lightning's row of the parameters outside the networks has no kind or size
                sizes = f"  {size_in} -> {size_out}" if size_in not in ("?", "n/a") else ""
                kind = "" if kind == "n/a" else f"{kind}, "
                untrained = ", not trained (no parameter takes gradients)" if name in self.untrained else ""
                print(f"  {name}: {kind}{params.strip()} parameters{untrained}{sizes}", flush=True)

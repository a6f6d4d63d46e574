"""What a training step costs besides its arithmetic, counted on the CPU through the commands' own runs: no
value read back to the host (on a GPU each read waits for the whole step), found by wrapping every Tensor
method that would sync; and none of the per-hook bookkeeping of Lightning's that the project spares
(shared.lean_lightning, the checkpoint's state key, the data module's transfer of resident batches)."""
import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.core.hooks import DataHooks
from pytorch_lightning.profilers import Profiler

import part1_vae.train
import part2_gan.train
import part2_gan.train_aae
import part3_flows.train
from shared.callbacks import LossMonitor
from shared.cli import BATCHES_PER_CALL

SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


class WindowedLossMonitor(LossMonitor):
    """The run's LossMonitor (the first of its callbacks), which also records which call of training_step (a group of
    batches: --batches_per_call) is running."""
    current: int | None = None  # None outside the training batches

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        WindowedLossMonitor.current = batch_idx

    def on_validation_start(self, trainer, pl_module):
        WindowedLossMonitor.current = None

    def on_train_epoch_end(self, trainer, pl_module):
        super().on_train_epoch_end(trainer, pl_module)
        WindowedLossMonitor.current = None


@pytest.mark.slow
@pytest.mark.parametrize("command, flags", [
    (part1_vae.train, ["--iw_samples", "2"]),
    (part2_gan.train, ["--eval_samples", "0", "--ema_decay", "0.99"]),
    (part2_gan.train_aae, ["--hidden_dim", "16", "--eval_samples", "0", "--judge_every", "0"]),
    (part3_flows.train, ["--task", "mnist", "--num_channels", "8", "--num_blocks", "1", "--test_dequant_samples", "1"]),
    (part3_flows.train, ["--task", "mnist8bit", "--num_channels", "8", "--num_blocks", "1",
                         "--test_dequant_samples", "1", "--ema_decay", "0.99"]),
])
def test_no_host_sync_inside_training_steps(tmp_path, monkeypatch, command, flags):
    batches = 20
    calls: list[tuple[int, str]] = []
    for name in SYNCING:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            if WindowedLossMonitor.current is not None:
                calls.append((WindowedLossMonitor.current, _name))
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    monkeypatch.setattr("shared.experiment.LossMonitor", WindowedLossMonitor)
    command.main(["--subset", str(32 * batches), "--batch_size", "32", "--epochs", "2", "--sample_epochs", "0",
                  "--log_every_n_steps", "1000", "--accelerator", "cpu", "--log_dir", str(tmp_path), *flags])
    # The losses are read once per epoch, at its last call of training_step (before validation and the checkpoint).
    assert calls and {call for call, _ in calls} == {math.ceil(batches / BATCHES_PER_CALL) - 1}, calls[:10]



@pytest.mark.slow
@pytest.mark.parametrize("command, flags", [
    (part1_vae.train, ["--iw_samples", "2"]),
    (part2_gan.train, ["--eval_samples", "0"]),
    (part3_flows.train, ["--task", "mnist", "--num_channels", "8", "--num_blocks", "1", "--test_dequant_samples", "1"]),
])
def test_no_per_step_bookkeeping_that_the_project_spares(tmp_path, monkeypatch, command, flags):
    """Lightning names the running hook on the module about 45 times a step, wraps each hook in its profiler's
    context, labels each callback hook with the callback's state key, and walks every batch for tensors to move
    to the device. None of it goes through nn.Module.__setattr__, a generator-based context manager, a state key
    built anew or Lightning's default transfer (the batches are resident), so a run of more steps makes no more
    such calls."""
    calls = []
    module_setattr = torch.nn.Module.__setattr__

    def counted_setattr(self, name, value):
        if isinstance(self, pl.LightningModule):
            calls.append(name)
        module_setattr(self, name, value)

    monkeypatch.setattr(torch.nn.Module, "__setattr__", counted_setattr)
    for owner, name in [(Profiler, "profile"), (Callback, "_generate_state_key"),
                        (DataHooks, "transfer_batch_to_device")]:
        def counted(*args, _name=name, _original=getattr(owner, name), **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)
        monkeypatch.setattr(owner, name, counted)
    counts = []
    for batches in (3, 6):
        calls.clear()
        command.main(["--subset", str(32 * batches), "--batch_size", "32", "--epochs", "1", "--sample_epochs", "0",
                      "--accelerator", "cpu", "--log_dir", str(tmp_path / str(batches)), *flags])
        counts.append(len(calls))
    assert counts[0] == counts[1], (counts, calls[-20:])

"""No training step reads a value back to the host (on a GPU each read waits for the whole step): counted on
the CPU by wrapping every Tensor method that would sync, through the commands' own runs."""
import pytest
import torch

import part1_vae.train
import part2_gan.train
from shared.callbacks import LossMonitor

SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


class WindowedLossMonitor(LossMonitor):
    """The run's LossMonitor (the first of its callbacks), which also records which training batch is running."""
    current: int | None = None  # None outside the training batches

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        WindowedLossMonitor.current = batch_idx

    def on_validation_start(self, trainer, pl_module):
        WindowedLossMonitor.current = None

    def on_train_epoch_end(self, trainer, pl_module):
        super().on_train_epoch_end(trainer, pl_module)
        WindowedLossMonitor.current = None


@pytest.mark.parametrize("command, flags", [
    (part1_vae.train, ["--iw_samples", "2"]),
    (part2_gan.train, ["--eval_samples", "0", "--ema_decay", "0.99"]),
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
    # The losses are read once per epoch, at its last batch (before validation and the checkpoint).
    assert calls and {batch for batch, _ in calls} == {batches - 1}, calls[:10]

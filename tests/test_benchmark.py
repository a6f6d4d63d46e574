"""scripts/benchmark.py on a few batches: both ways train the same model, and the table names the device; the
flow's memory-format timing trains the same flow both ways."""
from pathlib import Path

import pytest

from tests.conftest import load_script


def test_throughput_of_each_model_and_the_markdown_table():
    benchmark = load_script("benchmark")
    rows = [benchmark.throughput("VAE", benchmark.vae_command, [], 1, 3, per_image=False),
            benchmark.throughput("GAN", benchmark.gan_command, ["--judge_every", "0"], 1, 3, per_image=False),
            benchmark.throughput("flow", benchmark.flow_command, [*benchmark.FLOW_FLAGS, "--num_channels", "8",
                                                                  "--num_blocks", "1"], 1, 2, per_image=False)]
    assert [row["images"] for row in rows] == [3 * 128, 3 * 128, 2 * 64]
    assert all(row[way] > 0 for row in rows for way in ("pipeline", "Lightning alone", "plain"))
    costs = benchmark.framework_cost_per_step(batches=3, repeats=1)
    assert costs["plain"] > 0 and set(costs) == {"plain", "Lightning alone", "pipeline without shared.lean_lightning",
                                                  "pipeline"}
    table = benchmark.markdown("a CPU", rows, {"default VAE fit, 80 epochs": "1.0 s"}, "python scripts/benchmark.py",
                               costs)
    assert table.startswith("Measured on a CPU with `python scripts/benchmark.py`.")
    assert "| Lightning alone |" in table and "| flow, 128 images, batch 64 |" in table
    assert "| default VAE fit, 80 epochs | 1.0 s |" in table
    assert f"| pipeline | {costs['pipeline']:.0f} us |" in table


def test_lightning_alone_sets_attributes_as_any_lightning_module(monkeypatch):
    """The step-cost table's baseline: the model's bookkeeping goes through nn.Module.__setattr__ again."""
    import torch

    benchmark = load_script("benchmark")
    model = benchmark.build(benchmark.vae_command, benchmark.TINY_VAE_FLAGS)[1]
    calls = []
    original = torch.nn.Module.__setattr__

    def counted(self, name, value):
        calls.append(name)
        original(self, name, value)

    monkeypatch.setattr(torch.nn.Module, "__setattr__", counted)
    model._current_fx_name = "training_step"
    assert calls == []  # the project's modules skip nn.Module's checks for it
    model = benchmark.as_lightning_makes_it(model)
    calls.clear()
    model._current_fx_name = "validation_step"
    assert calls == ["_current_fx_name"] and model._current_fx_name == "validation_step"

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
    table = benchmark.markdown("a CPU", rows, {"default VAE fit, 80 epochs": "1.0 s"}, "python scripts/benchmark.py")
    assert table.startswith("Measured on a CPU with `python scripts/benchmark.py`.")
    assert "| Lightning alone |" in table and "| flow, 128 images, batch 64 |" in table
    assert "| default VAE fit, 80 epochs | 1.0 s |" in table


def test_flow_step_timing_times_the_same_training_both_memory_formats():
    timed = load_script("flow_step_timing").main(["--config", str(Path(__file__).parents[1] / "configs/flow_mnist8bit.yaml"),
                                                  "--num_channels", "8", "--num_blocks", "1", "--batch_size", "4",
                                                  "--rounds", "1", "--steps", "2"])
    assert timed["channels_last"] > 0 and timed["contiguous"] > 0
    assert timed["loss_channels_last"] == pytest.approx(timed["loss_contiguous"], abs=1e-4)

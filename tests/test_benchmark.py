"""scripts/benchmark.py on a few batches: every way trains the same model from the same weights, and the table
names the device."""

import pytest
import torch

from tests.conftest import fails_with_one_line, load_script


@pytest.mark.slow
def test_throughput_of_each_model_and_the_markdown_table(monkeypatch):
    benchmark = load_script("benchmark")
    starts, trained = {}, {}  # per model class: each way's initial weights, and whether the way changed them

    def recorded(timed):
        def way(model, *args, **kwargs):
            before = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
            seconds = timed(model, *args, **kwargs)
            starts.setdefault(type(model).__name__, []).append(before)
            after = torch.cat([p.detach().flatten() for p in model.parameters()]).cpu()
            trained.setdefault(type(model).__name__, []).append(not torch.equal(before, after))
            return seconds
        return way

    for name in ("time_pipeline", "time_plain", "time_plain_gan"):
        monkeypatch.setattr(benchmark, name, recorded(getattr(benchmark, name)))
    two = ["--batches_per_call", "2"]  # batches are timed in whole calls: 3 become 4
    rows = [benchmark.throughput("VAE", benchmark.vae_command, two, 1, 3, per_image=False),
            benchmark.throughput("GAN", benchmark.gan_command, ["--judge_every", "0", *two], 1, 3, per_image=False),
            benchmark.throughput("flow", benchmark.flow_command, [*benchmark.FLOW_FLAGS, "--num_channels", "8",
                                                                  "--num_blocks", "1", *two], 1, 2, per_image=False)]
    assert [row["images"] for row in rows] == [4 * 128, 4 * 128, 2 * 64]
    assert {name: len(weights) for name, weights in starts.items()} == {"VAE": 3, "GAN": 3, "ImageFlowModule": 3}
    assert all(torch.equal(weights[0], other) for weights in starts.values() for other in weights[1:])
    assert all(all(changed) for changed in trained.values())
    monkeypatch.undo()
    assert all(row[way] > 0 for row in rows for way in ("pipeline", "Lightning alone", "plain"))
    costs = benchmark.framework_cost_per_step(batches=3, repeats=1)
    assert costs["plain"][0] > 0 and set(costs) == {"plain", "Lightning alone", "pipeline without shared.lean_lightning",
                                                     "pipeline, one batch a call", "pipeline"}
    assert all(costs[way][1] > costs["plain"][1] for way in costs if way != "plain")  # the framework's calls
    table = benchmark.markdown("a CPU", rows, {"default VAE fit, 80 epochs": "1.0 s"}, "python scripts/benchmark.py",
                               costs)
    assert table.startswith("Measured on a CPU with `python scripts/benchmark.py`.")
    assert "| Lightning alone |" in table and "| flow, 128 images, batch 64 |" in table
    assert "| default VAE fit, 80 epochs | 1.0 s |" in table
    cost, calls = costs["pipeline"]
    assert f"| pipeline | {cost:.0f} us | {calls - costs['plain'][1]:+,.0f} |" in table


def test_lightning_alone_sets_attributes_as_any_lightning_module(monkeypatch):
    """The step-cost table's baseline: the model's bookkeeping goes through nn.Module.__setattr__ again."""
    import torch

    benchmark = load_script("benchmark")
    model = benchmark.build_as_a_run(benchmark.vae_command, benchmark.TINY_VAE_FLAGS)[1]
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


def test_an_interrupted_benchmark_keeps_the_figures_measured_so_far(tmp_path, monkeypatch):
    benchmark = load_script("benchmark")
    measured = []

    def throughput(name, *args):  # the timing itself is tested above; here only what reaches the file
        measured.append(name)
        return {"what": name, "images": 128, "batch_size": 128, "pipeline": 9.0, "Lightning alone": 9.5, "plain": 10.0}

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmark, "throughput", throughput)
    monkeypatch.setattr(benchmark, "framework_cost_per_step", interrupted)
    out = tmp_path / "bench.md"
    monkeypatch.setattr("sys.argv", ["benchmark.py", "--out", str(out)])
    with pytest.raises(KeyboardInterrupt):
        benchmark.main()
    table = out.read_text()
    assert table.startswith("Measured so far (the benchmark had not finished) on ")
    assert len(measured) == 3 and all(f"| {name}, 128 images, batch 128 | 9 img/s |" in table for name in measured)
    assert "**0.90x**" in table and "cost a step" not in table


@pytest.mark.parametrize("flags, message", [
    (["--flow_batches", "0"], "--flow_batches must be positive, got 0"),
    (["--iw_samples", "-1"], "--iw_samples must be >= 0 (0: skipped), got -1"),
    (["--out", "{tmp}"], "--out {tmp} is a folder: pass a file name"),
    (["--out", "{tmp}/a_file/bench.md"], "--out {tmp}/a_file/bench.md: {tmp}/a_file is a file, not a folder"),
])
def test_the_benchmark_refuses_bad_flags_before_timing_anything(tmp_path, monkeypatch, capsys, flags, message):
    benchmark = load_script("benchmark")
    monkeypatch.setattr(benchmark, "throughput", lambda *args: pytest.fail("timed before the flags were checked"))
    (tmp_path / "a_file").write_text("")
    fails_with_one_line(lambda: benchmark.main([flag.format(tmp=tmp_path) for flag in flags]), capsys, 2,
                        f"scripts/benchmark.py: error: {message.format(tmp=tmp_path)}")


def test_the_benchmark_writes_its_command_as_a_shell_reads_it(tmp_path, monkeypatch):
    benchmark = load_script("benchmark")
    monkeypatch.setattr(benchmark, "throughput", lambda name, *args: {"what": name, "images": 1, "batch_size": 1,
                                                                       "pipeline": 1.0, "Lightning alone": 1.0,
                                                                       "plain": 1.0})
    out = tmp_path / "a folder" / "bench.md"
    benchmark.main(["--out", str(out), "--step_cost_batches", "0", "--vae_epochs", "0", "--iw_samples", "0"])
    assert f"`python scripts/benchmark.py --out '{out}' --step_cost_batches 0" in out.read_text()

"""The ``part1_vae.train`` command end to end on tiny data: errors, outputs, NaN stop, resume, determinism."""
import importlib
import json
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml

import part1_vae.modules
from part1_vae.train import main
from tests.conftest import (TINY_RUN, assert_fails_fast, crashes_in_epoch_two, needs_two_cores, run_command,
                            stopped_by_nan, turns_nan_after)


def run(tmp_path, *flags):
    return main([*TINY_RUN, "--log_dir", str(tmp_path), *flags])


def wait_for_a_later_event_file_name():
    """TensorBoard reads a run's event files in name order, and a name is the writer's start second, then the host, the
    process and a counter of the process's writers: a second call of a run of under a second, in this same process,
    can sort first (".10" before ".9"). A real resume starts seconds later, in a new process."""
    time.sleep(1.1)


@pytest.mark.parametrize("flags, message", [
    (["--z_dim", "0"], "--z_dim must be positive, got 0"),
    (["--batch_size", "-1"], "--batch_size must be positive, got -1"),
    (["--model", "RNN"], "invalid choice: 'rnn'"),
    (["--config", "configs/no_such_file.yaml"], "config file configs/no_such_file.yaml not found"),
    (["--hidden_dims", "512", "0"], "--hidden_dims must be positive"),
    (["--data_dir", "/nonexistent"], "--data_dir /nonexistent: no folder MNIST/raw"),
    (["--resume"], "--resume: no run with checkpoints/last.ckpt"),
    (["--epochs", "three"], "invalid int value: 'three'"),
    (["--iw_samples", "0"], "--iw_samples must be positive, got 0"),
    (["--objective", "iwae", "--train_k", "0"], "--train_k must be positive, got 0"),
    (["--train_k", "5"], "--train_k 5: samples of the training bound, which only --objective iwae takes"),
    (["--num_workers", "-1"], "--num_workers must be >= 0, got -1"),
    (["--batches_per_call", "0"], "--batches_per_call must be positive, got 0"),
    (["--sample_epochs", "-1"], "--sample_epochs must be >= 0, got [-1]"),
    (["--likelihood", "gaussian", "--lr_final", "1e-4"], "--lr_final: the Gaussian VAE's two learning rates take no"),
    (["--likelihood", "gaussian", "--binarization", "dynamic"], "the Gaussian likelihood models grey-scale MNIST"),
])
def test_invalid_flags_fail_fast_with_one_line(tmp_path, capsys, flags, message):
    assert_fails_fast(lambda: run(tmp_path, *flags), tmp_path, capsys, message)


def test_config_file_then_flags_override(tmp_path):
    from part1_vae.train import build_parser, check, default_name
    from shared.cli import parse_args

    config = tmp_path / "c.yaml"
    config.write_text("z_dim: 2\nhidden_dims: [64, 32]\nlr: 0.01\n")
    args = parse_args(build_parser(), ["--config", str(config), "--lr", "0.002"], check, default_name)
    assert (args.z_dim, args.hidden_dims, args.lr, args.name) == (2, [64, 32], 0.002, "vae_mlp_z2")
    config.write_text("z_dims: 2\n")
    with pytest.raises(SystemExit):
        parse_args(build_parser(), ["--config", str(config)], check, default_name)


@pytest.mark.slow
def test_smoke_training_writes_outputs_and_bpd_falls(tmp_path):
    metrics = run(tmp_path, "--z_dim", "2", "--epochs", "3", "--subset", "1024", "--lr", "3e-3")
    run_dir = tmp_path / "vae_mlp_z2" / "version_0"
    assert 1.0 < metrics["train_loss_first_step"] < 1.2  # an untrained decoder is close to coin flips
    assert metrics["val_bpd"] < 0.75 * metrics["train_loss_first_step"]
    assert metrics["test_iw_bpd"] < metrics["test_bpd"]
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / "hparams.yaml").exists()  # config.yaml is the record of the settings
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # the fit's, the test's and HParams' figures
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["command"] == "part1_vae.train" and config["z_dim"] == 2
    assert config["data"]["pixels"] == "threshold-binarized" and config["data"]["subset"] == 1024
    assert metrics["train_loss"] == "negative ELBO, bits per dimension"
    pngs = {p.name for p in (run_dir / "samples").glob("*.png")}
    assert {"samples_epoch000.png", "samples_epoch003.png", "manifold_epoch003.png", "reconstructions_epoch000.png",
            "interpolations_epoch003.png", "latent_map_epoch003.png"} <= pngs  # test images' figures from the start
    assert list(run_dir.glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    # the model summary's example, then epoch 0: 2 sanity + 4 train + 4 val batches, the first 2 of epoch 1 (its NLL
    # is computed once a batch)
    monkeypatch.setattr(part1_vae.modules, "bernoulli_nll", turns_nan_after(part1_vae.modules.bernoulli_nll, 13))
    message, last = stopped_by_nan(lambda: run(tmp_path, "--epochs", "3"), tmp_path / "vae_mlp_z20" / "version_0")
    assert "loss is nan in epoch 2, step 7 (batch 3 of the epoch)" in message
    assert last["epoch"] == 0 and last["global_step"] == 4
    # From the first training batch (after the example and the 2 sanity-check batches): no good checkpoint to keep.
    monkeypatch.setattr(part1_vae.modules, "bernoulli_nll", turns_nan_after(part1_vae.modules.bernoulli_nll, 3))
    nothing_kept = r"loss is nan in epoch 1, step 1 \(batch 1 of the epoch\); no epoch ended before it: .* is removed"
    with pytest.raises(SystemExit, match=nothing_kept):
        run(tmp_path / "from_the_start")
    assert not (tmp_path / "from_the_start" / "vae_mlp_z20" / "version_0").exists()


@pytest.mark.slow
def test_resume_after_a_crash_mid_epoch_finishes_in_the_same_run_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(part1_vae.modules.VAE, "train_batch", crashes_in_epoch_two(part1_vae.modules.VAE.train_batch))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, "--epochs", "3")
    monkeypatch.undo()
    run_dir = tmp_path / "vae_mlp_z20" / "version_0"
    assert not (run_dir / "metrics.json").exists()
    wait_for_a_later_event_file_name()  # else, when this process's writer count passes 9, TensorBoard reads them
    metrics = main(["--resume", str(run_dir)])  # out of order and purges the last call's figures
    assert [p.name for p in (tmp_path / "vae_mlp_z20").iterdir()] == ["version_0"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert metrics["epochs"] == 3 and last["global_step"] == 3 * 4
    first = json.loads((run_dir / "timing.json").read_text())
    assert first["resumed"] is True
    carried = last["callbacks"]["FitClock"]["fit_seconds"]

    # A call killed while it rewrites the run's settings leaves them whole (a cut file read as fewer settings).
    settings = (run_dir / "config.yaml").read_text()
    write_text = Path.write_text

    def killed_midway(path, text, *args, **kwargs):
        if "config.yaml" in path.name:
            write_text(path, text[:len(text) // 2], *args, **kwargs)
            raise KeyboardInterrupt
        return write_text(path, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        main(["--resume", str(run_dir), "--epochs", "4"])
    monkeypatch.undo()
    assert (run_dir / "config.yaml").read_text() == settings and not list(run_dir.glob(".*"))

    # A finished run continued to more epochs counts its fit time across both calls, and TensorBoard shows the
    # figures of its last call only.
    wait_for_a_later_event_file_name()
    continued = main(["--resume", str(run_dir), "--epochs", "4"])
    assert continued["epochs"] == 4
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir)).Reload()
    assert [(point.step, point.value) for point in events.Scalars("hparams/test_bpd")] == [
        (4 * 4, pytest.approx(continued["test_bpd"]))]
    second = json.loads((run_dir / "timing.json").read_text())
    # The total goes on from the time last.ckpt holds: the first call's, less the writing of its last checkpoints
    # (timing.json rounds to 0.1 s, the checkpoint does not).
    assert 0 < carried <= first["total_fit_seconds"] + 0.05
    assert second["total_fit_seconds"] == pytest.approx(carried + second["fit_seconds"], abs=0.11)  # both to 0.1 s


@pytest.mark.slow
def test_tensorboard_shows_each_step_once_after_a_resume_repeats_an_interrupted_epoch(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    flags = ["--epochs", "3", "--log_every_n_steps", "1"]
    monkeypatch.setattr(part1_vae.modules.VAE, "train_batch", crashes_in_epoch_two(part1_vae.modules.VAE.train_batch))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, *flags)  # logged the losses of epoch 2's first two batches (steps 4 and 5), then died
    monkeypatch.undo()
    run_dir = tmp_path / "vae_mlp_z20" / "version_0"
    wait_for_a_later_event_file_name()
    main(["--resume", str(run_dir), *flags])
    events = EventAccumulator(str(run_dir)).Reload()
    assert [event.step for event in events.Scalars("train_loss_step")] == list(range(3 * 4))
    assert [event.step for event in events.Scalars("val_bpd")] == [3, 7, 11]


@pytest.mark.slow
def test_sample_grids_and_step_losses_follow_their_schedules(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(tmp_path, "--epochs", "3", "--sample_epochs", "0", "1", "--log_every_n_steps", "3")  # 4 batches an epoch
    run_dir = tmp_path / "vae_mlp_z20" / "version_0"
    assert sorted(p.name for p in (run_dir / "samples").glob("samples_*.png")) == [
        "samples_epoch000.png", "samples_epoch001.png", "samples_epoch003.png"]  # the chosen ones and the last
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0}).Reload()
    assert [event.step for event in events.Scalars("train_loss_step")] == [0, 3, 6, 9]
    assert [event.step for event in events.Images("samples")] == [0, 3, 11]  # each epoch's last batch


@pytest.mark.slow
def test_last_ckpt_holds_the_last_epoch_when_the_best_was_earlier_and_resume_continues_from_it(tmp_path):
    # lr 0.03 makes val worse in epoch 2: the best checkpoint is epoch 1's (Lightning 2.6's save_last=True
    # rewrote last.ckpt only at epochs that saved a best one, so --resume went back to epoch 1).
    metrics = run(tmp_path, "--lr", "0.03")
    run_dir = tmp_path / "vae_mlp_z20" / "version_0"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert metrics["checkpoint"] == "best-epoch001.ckpt"
    assert (last["epoch"], last["global_step"]) == (1, 2 * 4)
    main(["--resume", str(run_dir), "--epochs", "3"])
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3 * 4


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_run_resumed_after_a_crash_ends_as_the_uninterrupted_run(tmp_path, monkeypatch, workers):
    # Dynamically binarized: the batch order, the binarization and the model's noise all continue their streams.
    flags = ["--epochs", "3", "--binarization", "dynamic", "--num_workers", workers]
    straight = run(tmp_path / "straight", *flags)
    monkeypatch.setattr(part1_vae.modules.VAE, "train_batch", crashes_in_epoch_two(part1_vae.modules.VAE.train_batch))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "split", *flags)
    monkeypatch.undo()
    resumed = main(["--resume", str(tmp_path / "split" / "vae_mlp_z20_dynamic" / "version_0")])
    assert resumed == straight


@pytest.mark.slow
@pytest.mark.parametrize("command, flags", [
    ("part1_vae.train", [*TINY_RUN, "--binarization", "dynamic", "--lr_final", "1e-4"]),  # a schedule, once an epoch
    ("part1_vae.train", [*TINY_RUN, "--binarization", "dynamic", "--num_workers", "1"]),
    ("part2_gan.train", ["--subset", "256", "--batch_size", "64", "--sample_epochs", "0", "--accelerator", "cpu",
                         "--eval_samples", "0", "--judge_every", "0", "--ema_decay", "0.9"]),  # two optimizers a batch
])
def test_several_batches_a_call_train_as_one_a_call(tmp_path, command, flags):
    """--batches_per_call 3 on 4 batches an epoch: calls of 3 and 1, the same steps on the same batches as 4 calls."""
    main_of = importlib.import_module(command).main
    one, three = (main_of([*flags, "--epochs", "3", "--log_dir", str(tmp_path / k), "--batches_per_call", k])
                  for k in ("1", "3"))
    assert one == three


@pytest.mark.slow
def test_lr_final_steps_the_learning_rate_at_each_epochs_end(tmp_path):
    """As Lightning's automatic optimization steps it: after each epoch's last batch, before its checkpoint."""
    run(tmp_path, "--epochs", "3", "--lr_final", "1e-4")
    last = torch.load(tmp_path / "vae_mlp_z20" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False)
    lr = last["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(1e-3 * 0.1 ** 1.5)  # 3 steps of 10^-0.5
    # Continued to 5 epochs, it goes on at 1e-4: the decay planned for 3 took it to 1e-6 (shared.schedules.DecayToFinal)
    main(["--resume", str(tmp_path / "vae_mlp_z20" / "version_0"), "--epochs", "5"])
    last = torch.load(tmp_path / "vae_mlp_z20" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-4)


@pytest.mark.slow
def test_a_run_checkpointed_when_lightning_optimized_it_resumes_counting_its_steps(tmp_path):
    """Before 2026-12-07 the VAE let Lightning optimize (automatic optimization), whose checkpoints count the optimizer
    steps elsewhere: a resumed run of then started its global_step again from 0."""
    run(tmp_path)  # 2 epochs of 4 batches
    last = tmp_path / "vae_mlp_z20" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    loop = checkpoint["loops"]["fit_loop"]
    manual = loop["epoch_loop.manual_optimization.optim_step_progress"]
    loop["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]["step"] = json.loads(json.dumps(manual))
    for counts in manual.values():
        counts.update(ready=0, completed=0)
    torch.save(checkpoint, last)
    main(["--resume", str(last.parents[1]), "--epochs", "3"])
    assert torch.load(last, weights_only=False)["global_step"] == 3 * 4


@pytest.mark.slow
def test_the_progress_bar_counts_batches_where_lightning_counts_calls(tmp_path, capsys):
    run(tmp_path, "--epochs", "1", "--progress_bar", "--batches_per_call", "3")  # 4 batches: calls of 3 and 1
    shown = set(re.findall(r"Epoch 1/1: +\d+%\|[^|]*\| (\d+/\d+) ", capsys.readouterr().out))
    assert shown == {"0/4", "3/4", "4/4"}


@pytest.mark.slow
def test_same_seed_same_metrics(tmp_path):
    first = run(tmp_path / "a")
    second = run(tmp_path / "b")
    assert first == second
    assert run(tmp_path / "c", "--seed", "7") != first


def test_a_seeded_run_trains_on_the_batches_its_figures_were_measured_on(tmp_path, monkeypatch):
    """The batches of every epoch are those the README's figures were trained on (their pixel counts, as drawn
    by the code of commit 3a0f72b): a change to how batches are drawn changes every figure of a rerun."""
    counts = []
    step = part1_vae.modules.VAE.step

    def counted(self, stage, batch):
        if stage == "train":
            counts.append(int(batch[0].sum()))
        return step(self, stage, batch)
    monkeypatch.setattr(part1_vae.modules.VAE, "step", counted)
    main(["--subset", "256", "--batch_size", "64", "--epochs", "3", "--iw_samples", "2", "--sample_epochs", "0",
          "--accelerator", "cpu", "--log_dir", str(tmp_path)])
    assert counts == [6327, 6353, 6668, 6646, 6268, 6749, 6313, 6664, 6668, 6367, 6658, 6301]


@pytest.mark.parametrize("binarization, workers", [("threshold", "1"), ("dynamic", "2")])
def test_dataloader_workers_train_on_the_resident_batches(tmp_path, binarization, workers):
    """With workers, batches come from host memory through a DataLoader and Lightning moves them to the device;
    without (the default), they are drawn on the device and not moved again: the same batches either way, and the
    same dynamically binarized images (each of two workers drawing from its own copy of one generator would not)."""
    flags = ["--binarization", binarization]
    assert run(tmp_path / "workers", *flags, "--num_workers", workers) == run(tmp_path / "resident", *flags)


@pytest.mark.slow
def test_display_never_changes_a_number_and_each_epoch_prints_a_line(tmp_path, capsys):
    quiet = run(tmp_path / "a", "--no-progress_bar")
    out = capsys.readouterr().out
    assert re.search(r"^epoch 1/2  train_bpd \d\.\d{4}  val_bpd \d\.\d{4}  [\d.]+ s/epoch  \d+ s left$", out, re.M)
    assert re.search(r"^epoch 2/2  train_bpd .* s/epoch$", out, re.M)
    assert "GPU available" not in out + capsys.readouterr().err
    assert run(tmp_path / "b", "--progress_bar") == quiet
    # The bar counts epochs as the lines do, and ends on the last epoch's training figures, not the epoch before's
    printed = capsys.readouterr().out.replace("\r", "\n")  # Lightning's bar writes to stdout too
    last_line = re.search(r"^epoch 2/2  train_bpd (\d\.\d{4})", printed, re.M).group(1)
    bar = [line.strip() for line in printed.splitlines() if line.startswith("Epoch")]
    assert any(line.startswith("Epoch 2/2: 100%") for line in bar) and "v_num" not in printed
    assert all(re.match(r"Epoch [12]/2: ", line) for line in bar), bar  # never Lightning's 0-based "Epoch 1:" frame
    assert "Training:" not in printed  # nor its first frame's name for the bar
    assert bar[-1].endswith(f"train_bpd={float(last_line):.3f}]")


@pytest.mark.slow
def test_a_finished_run_is_in_tensorboard_hparams_with_its_settings_and_figures(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    metrics = run(tmp_path, "--lr", "0.03")  # diverges in epoch 2: the best checkpoint is epoch 1's
    assert metrics["checkpoint"] == "best-epoch001.ckpt"
    run_dir = tmp_path / "vae_mlp_z20" / "version_0"
    sessions, experiments = [], []
    for events in run_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0})
        accumulator.Reload()
        try:
            contents = accumulator.PluginTagToContent("hparams").values()
        except KeyError:  # an events file without hparams (the fit's or the test's)
            contents = []
        for content in contents:
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):
                sessions.append(data.session_start_info.hparams)
            experiments += [data.experiment] if data.HasField("experiment") else []
    # No experiment summary: TensorBoard would show its columns for every run compared, of any command
    assert len(sessions) == 1 and experiments == []
    assert sessions[0]["z_dim"].number_value == 20 and sessions[0]["command"].string_value == "part1_vae.train"
    assert sessions[0]["data.pixels"].string_value == "threshold-binarized"
    events = EventAccumulator(str(run_dir)).Reload()
    # With the test's figures after the last batch, not at the step of the best checkpoint the test restored
    assert [point.step for point in events.Scalars("hparams/test_bpd")] == [point.step for point in
                                                                            events.Scalars("test_bpd")] == [2 * 4]
    assert events.Scalars("hparams/test_bpd")[0].value == pytest.approx(metrics["test_bpd"]) and metrics["test_bpd"] > 0
    # Lightning's 0-based epoch figure, which it wrote twice at each epoch's end, is left out
    assert "epoch" not in events.Tags()["scalars"] and [point.step for point in events.Scalars("val_bpd")] == [3, 7]


@pytest.mark.slow
def test_the_iwae_objective_with_one_sample_trains_the_vae_exactly(tmp_path):
    assert run(tmp_path / "iwae", "--objective", "iwae", "--train_k", "1") == run(tmp_path / "elbo")


@pytest.mark.slow
def test_the_iwae_objective_and_dynamic_binarization_train_and_say_so(tmp_path):
    metrics = run(tmp_path, "--objective", "iwae", "--train_k", "3", "--binarization", "dynamic", "--activation", "tanh")
    assert metrics["data"] == "dynamically binarized" and "IWAE bound (k=3)" in metrics["train_loss"]
    assert (tmp_path / "vae_mlp_z20_tanh_iwae3_dynamic" / "version_0" / "metrics.json").is_file()
    assert metrics["test_iw_bpd"] < metrics["test_bpd"]


def test_training_on_all_60000_images_reports_the_last_checkpoint_and_says_so(tmp_path):
    metrics = run(tmp_path, "--train_on_all", "--epochs", "2")
    run_dir = tmp_path / "vae_mlp_z20_train60k" / "version_0"
    assert metrics["checkpoint"] == "last.ckpt"  # val images are training images here: no selection by them
    data = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]
    assert data["train"] == "training images 0-255 (--subset 256 of training images 0-59999)"
    assert data["test"] == "test images 0-255 (--subset 256 of test images 0-9999)"
    assert data["val"] == "training images 45000-45255 (--subset 256 of training images 45000-49999)"  # validated on


@pytest.mark.slow
def test_compiled_networks_train_to_the_same_figures(tmp_path, capfd):
    eager = run(tmp_path / "a")
    compiled = run(tmp_path / "b", "--compile")
    assert "No CUDA runtime" not in capfd.readouterr().err
    assert compiled["test_bpd"] == pytest.approx(eager["test_bpd"], abs=1e-4)
    assert compiled["train_loss_first_step"] == pytest.approx(eager["train_loss_first_step"], abs=1e-5)


@pytest.mark.slow
def test_bf16_mixed_precision_gives_the_same_bpd_within_0_002(tmp_path, recwarn):
    """The same weights scored in bf16 autocast and in float32, and a bf16-trained run beside a float32 one."""
    import pytorch_lightning as pl

    from part1_vae.train import build_datamodule, build_parser, check, default_name
    from shared.cli import parse_args
    from shared.runs import load_run

    fp32 = run(tmp_path / "a", "--subset", "1024", "--epochs", "3")
    bf16 = run(tmp_path / "b", "--subset", "1024", "--epochs", "3", "--precision", "bf16-mixed")
    assert bf16["test_bpd"] == pytest.approx(fp32["test_bpd"], abs=0.002)
    assert not [w for w in recwarn if "model summary" in str(w.message)]  # its size estimate's caveat says nothing
    model = load_run(tmp_path / "a" / "vae_mlp_z20" / "version_0")[0]
    datamodule = build_datamodule(parse_args(build_parser(), [*TINY_RUN, "--subset", "1024"], check, default_name))
    scored = {}
    for precision in ("32-true", "bf16-mixed"):
        torch.manual_seed(42)  # the test stage's seed in every run
        trainer = pl.Trainer(accelerator="cpu", devices=1, precision=precision, logger=False, enable_progress_bar=False,
                             enable_model_summary=False)
        scored[precision] = trainer.test(model, datamodule=datamodule, verbose=False)[0]["test_bpd"]
    assert scored["bf16-mixed"] == pytest.approx(scored["32-true"], abs=0.002)
    assert scored["32-true"] == pytest.approx(fp32["test_bpd"], abs=1e-6)


@pytest.mark.slow
@needs_two_cores
def test_ddp_with_two_processes_on_cpu(tmp_path):
    """The command as a user starts it (Lightning's DDP launcher runs it again for rank 1): the processes share
    each epoch's batches, with the data resident in each, and reduce their epoch means."""
    done = run_command("part1_vae.train", *TINY_RUN, "--epochs", "1", "--devices", "2", "--strategy", "ddp", "--log_dir",
                       str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = tmp_path / "vae_mlp_z20" / "version_0"
    # The start line says how many processes; Lightning's line per process and its box say nothing more
    assert f"{run_dir}: " in done.stdout and ", 2 processes\n" in done.stdout
    # The threads it names are those each process trains with (Lightning gives each its share of the cores)
    machine = json.loads((run_dir / "timing.json").read_text())["machine"]
    assert f", {machine}, 2 processes\n" in done.stdout
    assert "Initializing distributed" not in done.stdout + done.stderr and "distributed_backend" not in done.stdout
    assert "deprecated" not in done.stderr  # torch's warning of the collective Lightning's all_gather uses
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0 < metrics["test_bpd"] < 1
    # The epoch's four batches of 64: two for each process.
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["vae_mlp_z20"]


@needs_two_cores
def test_a_nan_on_two_processes_is_told_once_of_the_run_rank_zero_owns(tmp_path):
    """Every process meets the NaN; the second named a run directory of its own logger, which does not exist."""
    done = run_command("part1_vae.train", *TINY_RUN, "--lr", "1e6", "--devices", "2", "--strategy", "ddp", "--log_dir",
                       str(tmp_path), timeout=300)
    stops = [line for line in done.stderr.splitlines() if "training stopped, loss is nan" in line]
    assert done.returncode == 1 and len(stops) == 1, done.stderr[-2000:]
    kept = re.search(r"last good checkpoint: (\S+)$", stops[0])
    assert Path(kept.group(1)).is_file() if kept else not (tmp_path / "vae_mlp_z20").exists()


@pytest.mark.slow
def test_a_copied_run_directory_resumes_with_its_best_checkpoint_and_score(tmp_path, monkeypatch):
    import shutil

    run(tmp_path, "--lr", "0.03")  # its best is epoch 1 (see above)
    copy = tmp_path / "copy" / "version_0"
    shutil.copytree(tmp_path / "vae_mlp_z20" / "version_0", copy)
    state = torch.load(copy / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]
    saved = next(value for key, value in state.items() if key.startswith("EpochCountCheckpoint"))
    from shared.checkpoints import EpochCountCheckpoint
    checkpoint = EpochCountCheckpoint(dirpath=copy / "checkpoints", monitor="val_bpd")
    checkpoint.load_state_dict(saved)  # Lightning kept only the path when the folder's path changed
    assert checkpoint.best_model_score == saved["best_model_score"]
    assert checkpoint.best_model_path == str(copy / "checkpoints" / "best-epoch001.ckpt")
    assert list(checkpoint.best_k_models) == [checkpoint.best_model_path]
    # Epoch 3 validates on inverted images, far worse: the best stays epoch 1's, in the copy as in the original.
    monkeypatch.setattr(part1_vae.modules.VAE, "validation_step",
                        lambda self, batch, batch_idx: self.step("val", (1 - batch[0], *batch[1:])))
    resumed_copy = main(["--resume", str(copy), "--epochs", "3"])
    assert resumed_copy["checkpoint"] == "best-epoch001.ckpt"
    assert resumed_copy == main(["--resume", str(tmp_path / "vae_mlp_z20" / "version_0"), "--epochs", "3"])


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["training_step", "test_step"])
def test_ctrl_c_says_how_to_resume_in_training_and_in_the_test(tmp_path, monkeypatch, capsys, stage):
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    original = getattr(part1_vae.modules.VAE, stage)
    signal = SIGTERMException if stage == "test_step" else KeyboardInterrupt  # what SIGTERM and Ctrl-C raise

    def interrupted(self, batch, batch_idx):  # in epoch 2 (training) or in the test stage
        if stage == "test_step" or self.current_epoch == 1:
            raise signal
        return original(self, batch, batch_idx)
    monkeypatch.setattr(part1_vae.modules.VAE, stage, interrupted)
    with pytest.raises(SystemExit) as stopped:
        run(tmp_path)
    assert stopped.value.code == (143 if signal is SIGTERMException else 130)  # the shell's status (Lightning's: 0, 1)
    run_dir = tmp_path / "vae_mlp_z20" / "version_0"
    assert f"Interrupted; continue with: python -m part1_vae.train --resume {run_dir}" in capsys.readouterr().err
    assert not (run_dir / "hparams.yaml").exists()


@pytest.mark.slow
@pytest.mark.parametrize("stopped_epoch", [1, 2])
def test_an_interrupt_in_an_epochs_end_hooks_prints_no_line_for_that_epoch(tmp_path, monkeypatch, capsys, stopped_epoch):
    """Stopped after the callbacks' epoch-end hooks began but before the module logged the epoch's means (a GAN's judge
    curve takes seconds there): the resume repeats that epoch, so no line says it ended (QA: 'epoch 2/2' came with
    epoch 1's figures, and 'epoch 1/2' without figures before 'Stopped before the first epoch ended')."""
    original = part1_vae.modules.VAE.on_train_epoch_end

    def interrupted(self):
        if self.current_epoch + 1 == stopped_epoch:
            raise KeyboardInterrupt
        original(self)
    monkeypatch.setattr(part1_vae.modules.VAE, "on_train_epoch_end", interrupted)
    with pytest.raises(SystemExit):
        run(tmp_path)
    lines = re.findall(r"^epoch .*$", capsys.readouterr().out, re.M)
    assert len(lines) == stopped_epoch - 1 and all(re.match(r"epoch 1/2  train_bpd \S+  val_bpd \S+", line)
                                                    for line in lines), lines


@pytest.mark.slow
def test_a_run_stopped_before_its_first_epoch_ended_leaves_no_run_directory(tmp_path, monkeypatch, capsys):
    def interrupted(self, batch, batch_idx):
        raise KeyboardInterrupt
    monkeypatch.setattr(part1_vae.modules.VAE, "training_step", interrupted)
    with pytest.raises(SystemExit):
        run(tmp_path)
    run_dir = tmp_path / "vae_mlp_z20" / "version_0"
    assert f"Stopped before the first epoch ended: nothing to resume, {run_dir} is removed" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nor the run name's folder made for it


def test_an_interrupt_between_an_epochs_best_checkpoint_and_its_last_ckpt_leaves_a_run_that_resumes(tmp_path,
                                                                                                     monkeypatch):
    from shared.checkpoints import LastEpochCheckpoint

    save = LastEpochCheckpoint._save_checkpoint

    def crashes_in_epoch_two(self, trainer, filepath):  # after epoch 2's best checkpoint, before its last.ckpt
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")
        save(self, trainer, filepath)
    monkeypatch.setattr(LastEpochCheckpoint, "_save_checkpoint", crashes_in_epoch_two)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path)
    monkeypatch.undo()
    run_dir = tmp_path / "vae_mlp_z20" / "version_0"
    assert (run_dir / "checkpoints" / "best-epoch002.ckpt").is_file()  # epoch 2 was the better
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    best = [state["best_model_path"] for state in last["callbacks"].values() if "best-epoch" in
            str(state.get("best_model_path"))]
    assert last["epoch"] == 0 and best == [str(run_dir / "checkpoints" / "best-epoch001.ckpt")]
    assert Path(best[0]).is_file()  # removed as soon as epoch 2's best was written, until 2026-12-07
    assert main(["--resume", str(run_dir), "--epochs", "1"])["checkpoint"] == "best-epoch001.ckpt"


def test_an_epoch_that_ended_before_an_interrupt_gets_its_progress_line(tmp_path, monkeypatch, capsys):
    from shared.checkpoints import LastEpochCheckpoint

    save = LastEpochCheckpoint._save_checkpoint

    def saves_then_crashes(self, trainer, filepath):
        save(self, trainer, filepath)
        raise RuntimeError("simulated crash")
    monkeypatch.setattr(LastEpochCheckpoint, "_save_checkpoint", saves_then_crashes)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path)
    assert "epoch 1/2  train_bpd" in capsys.readouterr().out  # last.ckpt holds epoch 1: a resume goes on from 2


def test_a_checkpoint_an_interrupt_left_after_last_ckpt_was_written_goes_at_the_resumed_runs_next_one(tmp_path,
                                                                                                      monkeypatch):
    from shared.checkpoints import EpochCountCheckpoint

    remove = EpochCountCheckpoint.remove_superseded

    def interrupted_in_epoch_two(self, trainer):  # last.ckpt written, the replaced best one not yet removed
        if trainer.current_epoch == 1 and self.superseded:
            raise RuntimeError("simulated crash")
        remove(self, trainer)
    monkeypatch.setattr(EpochCountCheckpoint, "remove_superseded", interrupted_in_epoch_two)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, "--epochs", "3")
    monkeypatch.undo()
    checkpoints = tmp_path / "vae_mlp_z20" / "version_0" / "checkpoints"
    assert sorted(path.name for path in checkpoints.iterdir()) == ["best-epoch001.ckpt", "best-epoch002.ckpt",
                                                                   "last.ckpt"]
    metrics = main(["--resume", str(checkpoints.parent)])
    assert sorted(path.name for path in checkpoints.iterdir()) == [metrics["checkpoint"], "last.ckpt"]  # the README's


def test_a_checkpoint_a_person_put_back_under_a_replaced_ones_name_is_kept_by_a_resume(tmp_path):
    run(tmp_path)  # epoch 2's best checkpoint replaced epoch 1's
    checkpoints = tmp_path / "vae_mlp_z20" / "version_0" / "checkpoints"
    shutil.copy(checkpoints / "best-epoch002.ckpt", checkpoints / "best-epoch001.ckpt")  # a copy kept elsewhere, back
    main(["--resume", str(checkpoints.parent), "--epochs", "3"])
    assert (checkpoints / "best-epoch001.ckpt").is_file()  # removed at the next last.ckpt (QA)

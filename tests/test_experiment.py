"""Process-wide settings a run makes before it trains (shared.process), each process's random streams and NaN checks,
the warning about bf16 on a CPU without it, and the progress lines of a long test stage."""
import argparse
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
import warnings
from types import SimpleNamespace

import pytest
import torch

import shared
import shared.lightning_trainer
import shared.judge_curve
import shared.process
from shared.batches import BatchGroup
from shared.callbacks import LossMonitor, NonFiniteLossError
from shared.process import run_script, silence_known_noise, skip_futile_nvml_check
from tests.conftest import TINY_RUN, needs_two_cores


def _cdll_that(loads: bool):
    def cdll(name, *args, **kwargs):
        if not loads:
            raise OSError(f"{name}: cannot open shared object file")
        return object()
    return cdll


@pytest.mark.parametrize("nvml_loads", [False, True])
def test_the_nvml_check_goes_only_where_nvml_cannot_load(monkeypatch, nvml_loads):
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # what importing Lightning sets
    answer = torch.cuda.is_available()
    with monkeypatch.context() as patched:
        patched.setattr(ctypes, "CDLL", _cdll_that(nvml_loads))
        skip_futile_nvml_check()
    assert ("PYTORCH_NVML_BASED_CUDA_CHECK" in os.environ) == nvml_loads
    assert torch.cuda.is_available() == answer  # the variable changes the cost of the answer, not the answer


def test_a_variable_the_user_set_otherwise_is_left_alone(monkeypatch):
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "0")
    monkeypatch.setattr(ctypes, "CDLL", _cdll_that(False))
    skip_futile_nvml_check()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "0"


@pytest.mark.parametrize("flags, precision, warned", [
    ("fpu avx2 avx512f", "bf16-mixed", True),
    ("fpu avx2 avx512f avx512_bf16", "bf16-mixed", False),
    ("fpu amx_bf16", "bf16-mixed", False),
    ("fpu avx2", "32-true", False),
    (None, "bf16-mixed", False),  # flags unknown (not Linux): no guess
])
def test_bf16_on_a_cpu_without_bf16_instructions_is_warned_of(monkeypatch, recwarn, flags, precision, warned):
    monkeypatch.setattr(shared.process, "_cpuinfo_field", {"flags": flags}.get)
    args = argparse.Namespace(command="part1_vae.train", accelerator="cpu", devices=1, num_nodes=1, strategy="auto",
                              precision=precision, epochs=1, log_every_n_steps=50, progress_bar=False)
    shared.lightning_trainer.build_trainer(args, logger=False, callbacks=[])
    messages = [str(w.message) for w in recwarn if "without bf16 instructions" in str(w.message)]
    assert len(messages) == int(warned)


def test_float16_mixed_precision_on_a_cpu_is_refused_not_replaced(capsys):
    args = argparse.Namespace(command="part1_vae.train", accelerator="cpu", devices=1, num_nodes=1, strategy="auto",
                              precision="16-mixed", epochs=1, log_every_n_steps=50, progress_bar=False, config=None)
    with pytest.raises(SystemExit) as exit_info:
        shared.lightning_trainer.build_trainer(args, logger=False, callbacks=[])
    assert exit_info.value.code == 2 and capsys.readouterr().err == (
        "part1_vae.train: error: --precision 16-mixed: float16 mixed precision is a GPU's, a CPU has none; "
        "--precision bf16-mixed is the CPU's mixed precision\n")


def test_the_projects_own_warnings_print_on_one_line():
    silence_known_noise()
    silence_known_noise()  # twice, as a process that runs two commands: still one wrapper
    ours = warnings.formatwarning("mode collapse in epoch 1", UserWarning, shared.judge_curve.__file__, 146,
                                  "rank_zero_warn(message)")
    assert ours == "warning: mode collapse in epoch 1\n"
    theirs = warnings.formatwarning("deprecated", DeprecationWarning, "/site-packages/lib.py", 7, "warn(x)")
    assert "deprecated" in theirs and "warn(x)" in theirs


def test_a_long_test_stage_prints_a_line_every_tenth_where_no_progress_bar_is_shown(capsys):
    from types import SimpleNamespace

    from shared.callbacks import EvaluationProgress

    progress = EvaluationProgress(min_seconds=0)
    for bar in (None, "a progress bar"):  # with a bar shown, the bar says it
        trainer = SimpleNamespace(num_test_batches=[20], is_global_zero=True, progress_bar_callback=bar)
        progress.on_test_epoch_start(trainer, None)
        for batch_idx in range(20):
            progress.on_test_batch_end(trainer, None, None, None, batch_idx)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"testing: {done}/20 batches" for done in range(2, 20, 2)]
    assert all(line.endswith(" left") for line in lines)


def test_an_epochs_seconds_hold_the_work_after_its_training_batches(capsys, monkeypatch):
    from types import SimpleNamespace

    from shared.callbacks import ProgressLines

    now = {"s": 0.0}
    monkeypatch.setattr("shared.callbacks.time.perf_counter", lambda: now["s"])
    trainer = SimpleNamespace(current_epoch=0, max_epochs=1, is_global_zero=True, progress_bar_callback=None,
                              callback_metrics={}, lightning_module=None)
    lines = ProgressLines()
    lines.on_train_epoch_start(trainer, None)
    now["s"] = 0.2  # its training batches done
    lines.on_train_epoch_end(trainer, None)
    now["s"] = 1.0  # the epoch-end work of the callbacks after this one (the judge's curve, sample grids) done
    lines.on_train_end(trainer, None)
    assert capsys.readouterr().out.startswith("epoch 1/1    1.0 s/epoch")



def test_epoch_lines_give_the_mean_seconds_of_the_epochs_so_far_and_the_time_the_epochs_to_go_take(capsys,
                                                                                                    monkeypatch):
    from shared.callbacks import ProgressLines

    now = {"s": 0.0}
    monkeypatch.setattr("shared.callbacks.time.perf_counter", lambda: now["s"])
    trainer = SimpleNamespace(current_epoch=0, max_epochs=4, is_global_zero=True, progress_bar_callback=None,
                              callback_metrics={"train_bpd": torch.tensor(0.5), "val_bpd": torch.tensor(0.25)},
                              lightning_module=None)
    lines = ProgressLines()
    for epoch, seconds in enumerate([2.0, 4.0, 9.0, 1.0]):
        trainer.current_epoch = epoch
        lines.on_train_epoch_start(trainer, None)  # the line of the epoch before
        lines.on_train_epoch_end(trainer, None)
        now["s"] += seconds
    lines.on_train_end(trainer, None)
    assert capsys.readouterr().out.splitlines() == [
        "epoch 1/4  train_bpd 0.5000  val_bpd 0.2500  2.0 s/epoch  6 s left",  # 3 epochs to go, not 4
        "epoch 2/4  train_bpd 0.5000  val_bpd 0.2500  3.0 s/epoch  6 s left",  # the mean of 2 and 4 s, not the first's
        "epoch 3/4  train_bpd 0.5000  val_bpd 0.2500  5.0 s/epoch  5 s left",
        "epoch 4/4  train_bpd 0.5000  val_bpd 0.2500  4.0 s/epoch"]

@pytest.mark.parametrize("device, states, set_as", [
    ("cpu", 2, []),  # a GPU run resumed on a CPU
    ("cuda:1", 2, [(1, "cuda:1")]),  # a checkpoint of before 2026-12-07 (every GPU's state): that GPU's stream
    ("cuda:1", 1, []),  # on a machine with fewer GPUs: setting them all failed at the first CUDA call
    ("cuda:0", "trained on cuda:1", [(7, "cuda:0")]),  # the training GPU's stream, on whichever GPU resumes it
])
def test_a_resume_sets_the_stream_of_the_gpu_it_runs_on_alone(device, states, set_as, monkeypatch):
    from types import SimpleNamespace

    from shared.checkpoints import LastEpochCheckpoint

    calls = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append((int(state[0]), str(device))))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: calls.append("all"))
    checkpoint = LastEpochCheckpoint("unused", seed=42)
    checkpoint.resumed_random_state = {"cpu": torch.get_rng_state()} | (
        {"cuda_device": torch.full((16,), 7, dtype=torch.uint8)} if isinstance(states, str) else
        {"cuda": [torch.full((16,), index, dtype=torch.uint8) for index in range(states)]})
    trainer = SimpleNamespace(world_size=1, strategy=SimpleNamespace(root_device=torch.device(device)))
    checkpoint.on_train_epoch_start(trainer, None)
    assert calls == set_as


def test_each_process_of_a_distributed_run_draws_its_own_noise_which_a_resume_draws_again():
    """Lightning seeds every process alike: without new seeds a GAN's processes would make the same fakes."""
    from types import SimpleNamespace

    from shared.checkpoints import LastEpochCheckpoint
    from shared.data import MNISTDataModule

    def draws(rank, epoch, world_size=2):
        datamodule = MNISTDataModule(subset=64, binarization="dynamic")
        datamodule.setup()
        trainer = SimpleNamespace(world_size=world_size, global_rank=rank, current_epoch=epoch, datamodule=datamodule)
        torch.manual_seed(42)  # what every process holds before the epoch
        LastEpochCheckpoint("unused", seed=42).on_train_epoch_start(trainer, None)
        return torch.cat([torch.rand(8), datamodule.splits["train"][list(range(64))][0].flatten()])

    assert not torch.equal(draws(0, 3), draws(1, 3))  # the model's noise and the binarized images
    assert not torch.equal(draws(0, 3), draws(0, 4))
    assert torch.equal(draws(1, 3), draws(1, 3))  # a resume at that epoch draws the same again
    torch.manual_seed(42)
    untouched = torch.rand(8)
    assert torch.equal(draws(0, 3, world_size=1)[:8], untouched)  # one process: its stream goes on as it was


def test_the_model_summary_shows_sizes_and_leaves_the_random_streams_as_they_were(capsys):
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import ModelSummary

    from part1_vae.modules import VAE
    from part1_vae.networks import MLPDecoder, MLPEncoder
    from part2_gan.modules import GAN
    from part2_gan.networks import DiscriminatorMLP, GeneratorMLP
    from shared.progress import ForkedRandomModelSummary

    model = VAE(MLPEncoder(z_dim=2), MLPDecoder(z_dim=2), z_dim=2)
    trainer = SimpleNamespace(is_global_zero=True, strategy=None)
    torch.manual_seed(0)
    ForkedRandomModelSummary().on_fit_start(trainer, model)
    assert torch.equal(torch.get_rng_state(), torch.manual_seed(0).get_state())
    # A line per network with its sizes, from example_input_array; no line for the parameterless running means
    assert capsys.readouterr().out.splitlines() == [
        "  encoder: MLPEncoder, 403 K parameters  [2, 1, 28, 28] -> [[2, 2], [2, 2]]",
        "  decoder: MLPDecoder, 403 K parameters  [2, 2] -> [2, 1, 28, 28]"]
    ForkedRandomModelSummary().summarize([("Name", ["other params"]), ("Type", ["n/a"]), ("Params", ["784  "]),
                                          ("In sizes", ["n/a"]), ("Out sizes", ["n/a"])])
    assert capsys.readouterr().out == "  other params: 784 parameters\n"  # the Gaussian VAE's log-std, no network's
    # A weight average is a network of as many parameters, none trained (the run's start line counts them out).
    gan = GAN(GeneratorMLP(4, [8]), DiscriminatorMLP(784, [8]), z_dim=4, ema_decay=0.9)
    ForkedRandomModelSummary().on_fit_start(trainer, gan)
    assert capsys.readouterr().out.splitlines() == [
        "  generator: GeneratorMLP, 7.1 K parameters  [2, 4] -> [2, 1, 28, 28]",
        "  discriminator: DiscriminatorMLP, 6.3 K parameters",
        "  generator_ema: GeneratorMLP, 7.1 K parameters, not trained (no parameter takes gradients)"]
    ModelSummary().on_fit_start(trainer, model)  # Lightning's own draws the VAE's z from the run's stream
    assert not torch.equal(torch.get_rng_state(), torch.manual_seed(0).get_state())


def test_images_sit_at_lightnings_count_of_batches_not_epochs_times_this_calls_batches():
    """A run resumed on another number of processes has epochs of other sizes: after 8 batches in its first epoch and
    16 in its second, epoch 2's figures are at batch 23, where Lightning logs them (epochs x 16 put its images at 31)."""
    from types import SimpleNamespace

    from shared.callbacks import batch_step

    trainer = SimpleNamespace(fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=24)),
                              num_training_batches=16, current_epoch=1)
    assert batch_step(trainer) == 23
    trainer.fit_loop.epoch_loop._batches_that_stepped = 0  # before training: the untrained grids
    assert batch_step(trainer) == 0


@pytest.mark.parametrize("own, other, message", [
    ([0.5, 0.4], [1.0, float("nan")], r"loss is nan on process 1 in epoch 1, step 2 \(batch 2 of the epoch\)"),
    ([0.5, float("inf")], [float("nan"), 0.3], r"loss is nan on process 1 in epoch 1, step 1 \(batch 1 of the epoch\)"),
])
def test_a_nan_one_process_meets_stops_every_process_at_the_same_check_naming_the_first(own, other, message,
                                                                                       monkeypatch):
    """The process that met it stopped alone; the others waited for it in the next gradient all-reduce, forever."""
    def all_gather(gathered, values):  # this process's losses, and another's
        gathered[0].copy_(values)
        gathered[1].copy_(torch.tensor(other)[:, None])
    monkeypatch.setattr(torch.distributed, "all_gather", all_gather)
    trainer = SimpleNamespace(world_size=2, global_rank=0, current_epoch=0, log_every_n_steps=2, num_training_batches=8,
                              logger=None)
    monitor = LossMonitor()
    monitor.on_train_batch_end(trainer, None, torch.tensor(own[0]), None, 0)
    with pytest.raises(NonFiniteLossError, match=message):
        monitor.on_train_batch_end(trainer, None, torch.tensor(own[1]), None, 1)


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_an_infinite_loss_stops_the_run_as_a_nan_does(value):
    trainer = SimpleNamespace(world_size=1, global_rank=0, current_epoch=0, log_every_n_steps=1, num_training_batches=4,
                              logger=None)
    with pytest.raises(NonFiniteLossError, match=rf"loss is {value} in epoch 1, step 1 \(batch 1 of the epoch\)"):
        LossMonitor().on_train_batch_end(trainer, None, torch.tensor(value), None, 0)


def test_the_loss_monitor_counts_the_batches_of_a_group_one_by_one():
    """A call of training_step on a BatchGroup returns a loss a batch: logged and checked as batches, not calls."""
    logged = []
    trainer = SimpleNamespace(world_size=1, global_rank=0, current_epoch=1, log_every_n_steps=2, num_training_batches=2,
                              logger=SimpleNamespace(log_metrics=lambda metrics, step: logged.append((step, metrics))))
    monitor = LossMonitor()
    monitor.batches_seen = 5  # an epoch of 5 batches before
    monitor.on_train_epoch_start(trainer, None)
    monitor.on_train_batch_end(trainer, None, torch.tensor([0.5, 0.25, 0.125]), BatchGroup([None] * 3), 0)
    assert logged == [(6, {"train_loss_step": 0.25})]  # every 2nd batch from the first: batches 7, 9, ... (steps 6, 8)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan in epoch 2, step 10 \(batch 5 of the epoch\)"):
        monitor.on_train_batch_end(trainer, None, torch.tensor([1.0, float("nan")]), BatchGroup([None] * 2), 1)
    assert len(logged) == 1  # the check stops at the NaN before it logs


@needs_two_cores
def test_a_sigterm_runs_no_collective_inside_the_signal_handler_and_is_passed_on_once(monkeypatch):
    """Lightning's handler broadcast from rank zero inside the handler: a signal interrupts a process anywhere, and a
    SIGTERM to all of a 2-process run met one process's broadcast with the other's barrier (a checkpoint's): it
    waited forever (or, the second SIGTERM the others get from rank zero, died in a traceback once rank zero had gone)."""
    args = argparse.Namespace(command="part1_vae.train", accelerator="cpu", devices=2, num_nodes=1, strategy="ddp",
                              precision="32-true", epochs=1, log_every_n_steps=50, progress_bar=False, config=None)
    trainer = shared.lightning_trainer.build_trainer(args, logger=False, callbacks=[])
    passed_on = []
    monkeypatch.setattr(trainer.strategy.launcher, "kill", passed_on.append)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)

    def collective(*args, **kwargs):
        raise AssertionError("a collective inside a signal handler")
    monkeypatch.setattr(torch.distributed, "broadcast", collective)
    for _ in range(2):  # the shell's SIGTERM and rank zero's
        trainer._signal_connector._sigterm_notifier_fn(signal.SIGTERM, None)
    assert trainer.received_sigterm and passed_on == [signal.SIGTERM]


def test_after_a_sigterm_any_error_of_a_process_ends_it_with_the_shells_status():
    """E.g. a collective that another process, stopped first, left: rank 1 printed a 69-line traceback."""
    from shared.experiment import _exit_if_stopped

    dropped = RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer")
    _exit_if_stopped(SimpleNamespace(received_sigterm=False, is_global_zero=False, state=None), dropped)  # a failure
    for rank_zero in (True, False):
        with pytest.raises(SystemExit) as stopped:
            _exit_if_stopped(SimpleNamespace(received_sigterm=True, is_global_zero=rank_zero, state=None), dropped)
        assert stopped.value.code == 143


def test_lightnings_line_for_a_sigterm_is_dropped_on_every_rank():
    silence_known_noise()
    logger = logging.getLogger("pytorch_lightning.trainer.connectors.signal_connector")

    def shown(message):
        return logger.filter(logging.LogRecord(logger.name, logging.INFO, __file__, 1, message, None, None))
    assert not shown("[rank: 1] Received SIGTERM: 15") and not shown("Received SIGTERM: 15")
    assert shown("[rank: 0] Handling auto-requeue signal: 10")


def test_lightnings_line_for_the_benchmarks_one_call_epoch_is_dropped():
    """scripts/benchmark.py times a way on whole calls of training_step (Trainer(limit_train_batches=N)): on tiny
    settings one, where Lightning told the reader of the benchmark a setting that is not theirs."""
    silence_known_noise()
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    line = "`Trainer(limit_train_batches=1)` was configured so 1 batch per epoch will be used."
    assert not logger.filter(logging.LogRecord(logger.name, logging.INFO, __file__, 1, line, None, None))


@pytest.mark.parametrize("env, ignored", [({}, False), ({"LOCAL_RANK": "0"}, False), ({"LOCAL_RANK": "1"}, True),
                                          ({"LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "job"}, False)])
def test_the_processes_lightnings_launcher_starts_leave_ctrl_c_to_rank_zero(monkeypatch, env, ignored):
    """Ctrl-C while they still imported: a traceback each, then Lightning's observer killed rank 0 (status -9) before it
    removed the run directory it had made (config.yaml alone in it)."""
    for name in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    handlers = []
    monkeypatch.setattr(signal, "signal", lambda signum, handler: handlers.append((signum, handler)))
    shared.leave_ctrl_c_to_rank_zero()
    assert handlers == ([(signal.SIGINT, signal.SIG_IGN)] if ignored else [])


def test_a_command_whose_output_reader_went_away_goes_on(monkeypatch):
    """`python -m part1_vae.train | head -1`: the next line raised BrokenPipeError, which stopped the training."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone
    monkeypatch.setattr(sys, "stdout", os.fdopen(write_end, "w"))
    epochs_done = []

    def main():
        for epoch in range(1, 4):
            print(f"epoch {epoch}/3", flush=True)
            epochs_done.append(epoch)
    run_script(main)
    assert epochs_done == [1, 2, 3]
    print("the run's last line", flush=True)  # and at the interpreter's end, its last flush


@pytest.mark.parametrize("stop", [None, SystemExit("error: training stopped, loss is nan")])
def test_a_command_ends_its_process_group_before_the_interpreter_does(tmp_path, stop):
    """A gloo group left to the interpreter's finalization now and then aborted rank zero after a NaN had stopped a
    2-process run (exit status -6 instead of 1): the command destroys it, whether it finishes or stops."""
    def main():
        torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
        if stop:
            raise stop
    try:
        with pytest.raises(SystemExit) if stop else contextlib.nullcontext():
            run_script(main)
        assert not torch.distributed.is_initialized()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_a_second_ctrl_c_while_a_command_stops_is_ignored(capsys):
    """Two Ctrl-C a few milliseconds apart: the second raised a KeyboardInterrupt in what the first had set going
    (the resume line, the interpreter's exit), a traceback after the command's last line."""
    stopped_cleanly = []

    def main():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the first Ctrl-C's KeyboardInterrupt comes here
        finally:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # where the second's would come
            stopped_cleanly.append(True)
    ctrl_c = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's, as a command starts with
    try:
        run_script(lambda: None)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # a command that ended leaves it so
        with pytest.raises(SystemExit) as stopped:
            run_script(main)
    finally:
        signal.signal(signal.SIGINT, ctrl_c)
    assert stopped.value.code == 130 and stopped_cleanly == [True] and capsys.readouterr().err == "interrupted\n"


def test_ctrl_c_while_a_command_imports_lightning_ends_in_one_line(tmp_path, monkeypatch, capsys):
    """The commands import torch and Lightning (5 s) inside main, where run_script catches Ctrl-C: at the top of the
    module a Ctrl-C in those seconds printed an 86-line traceback."""
    import builtins

    from part1_vae.train import main

    imports = builtins.__import__

    def ctrl_c_in_lightning(name, *args, **kwargs):
        if name == "pytorch_lightning":
            raise KeyboardInterrupt
        return imports(name, *args, **kwargs)
    monkeypatch.setattr(sys, "argv", ["part1_vae.train", "--subset", "64", "--epochs", "1", "--iw_samples", "2",
                                      "--log_dir", str(tmp_path), "--accelerator", "cpu"])
    monkeypatch.setattr(builtins, "__import__", ctrl_c_in_lightning)
    ctrl_c = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as stopped:
            run_script(main)
    finally:
        signal.signal(signal.SIGINT, ctrl_c)
    assert stopped.value.code == 130 and capsys.readouterr().err == "interrupted\n"


@pytest.mark.parametrize("environment, first", [({}, True), ({"LOCAL_RANK": "0"}, True), ({"LOCAL_RANK": "1"}, False),
                                                ({"SLURM_LOCALID": "0"}, True), ({"SLURM_LOCALID": "2"}, False)])
def test_what_comes_before_the_trainer_is_said_by_one_process_a_machine(monkeypatch, environment, first):
    """Lightning's DDP processes and torchrun's carry LOCAL_RANK, srun's SLURM_LOCALID (QA: under srun every process
    printed the notes)."""
    from shared.process import is_first_process

    for key in ("LOCAL_RANK", "SLURM_LOCALID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    assert is_first_process() is first


@pytest.mark.slow
@pytest.mark.parametrize("command, flags", [
    ("part1_vae.train", TINY_RUN),
    ("part1_vae.train_mixture", ["--subset", "256", "--epochs", "1", "--sample_epochs", "0"]),
    ("part2_gan.train", ["--subset", "128", "--epochs", "1", "--sample_epochs", "0", "--eval_samples", "0",
                         "--judge_every", "0"]),
    ("part2_gan.train_aae", ["--subset", "128", "--epochs", "1", "--sample_epochs", "0", "--hidden_dim", "32",
                             "--eval_samples", "0"]),
    ("part3_flows.train", ["--subset", "256", "--epochs", "1", "--sample_epochs", "0"]),
])
def test_each_chart_of_the_custom_scalars_tab_draws_two_or_more_of_the_runs_curves(tmp_path, command, flags):
    import importlib
    import re

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    importlib.import_module(command).main([*flags, "--log_dir", str(tmp_path)])
    events = EventAccumulator(str(next(tmp_path.glob("*/version_0")))).Reload()
    layout = layout_pb2.Layout.FromString(events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = [chart for category in layout.category for chart in category.chart]
    assert charts and all(len([tag for tag in events.Tags()["scalars"] if re.search(chart.multiline.tag[0], tag)]) >= 2
                          for chart in charts)


def test_the_machine_name_of_a_gpu_run_names_its_host_cpu_too(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "NVIDIA H100 80GB HBM3")
    name = shared.process.machine_name()
    assert name.startswith("NVIDIA H100 80GB HBM3 (host: ") and name.endswith(f", {torch.get_num_threads()} CPU threads)")
    assert shared.process.machine_name(torch.device("cuda:0")) == name
    assert shared.process.machine_name(torch.device("cpu")) == name[len("NVIDIA H100 80GB HBM3 (host: "):-1]  # a CPU run

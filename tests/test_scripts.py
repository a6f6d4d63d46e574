"""The helper scripts' refusals (train_judge, collect_figures, flow_step_timing) and the judge file they and the
commands read: bad input fails in one line before any work, --help shows every default, Ctrl-C ends in one line."""
import argparse
import io
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import part2_gan.train
import part3_flows.train
import shared.judge
from shared.data import BUNDLED_DIR
from shared.judge import JudgeFileError, load_judge, save_judge
from tests.conftest import CONFIGS, assert_fails_fast, fails_with_one_line, heavy_imports_of, load_script

SCRIPTS = Path(__file__).parents[1] / "scripts"


def must_not_train(*args, **kwargs):
    raise AssertionError("trained before the flags were checked")


def shows_every_default(script: str, capsys, *defaults: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_script(script).main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())  # the help's line breaks fall anywhere
    assert exit_info.value.code == 0 and all(f"(default: {value})" in shown for value in defaults), shown


def ends_in_one_line_on_ctrl_c(script: str, argv: list[str], monkeypatch, capsys) -> None:
    """``python scripts/<script>.py ARGV``, run as a command (its ``__main__`` block), where Ctrl-C comes."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPTS / f"{script}.py"), *argv])
    with pytest.raises(SystemExit) as exit_info:
        try:
            runpy.run_path(str(SCRIPTS / f"{script}.py"), run_name="__main__")
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C ended the script with a traceback")
    assert exit_info.value.code == 130 and capsys.readouterr().err.strip() == "interrupted"


def ctrl_c(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_in_a_lightning_stage_of_a_script_ends_in_one_line(tmp_path, monkeypatch, capsys, tiny_judge_path):
    # evaluate.py --test_likelihood runs the run's test stage, where Lightning catches the Ctrl-C and exits 1 silently
    import os
    import signal

    import yaml

    import part1_vae.modules
    from part1_vae.train import build_model, build_parser

    run_dir = tmp_path / "vae_mlp_z2" / "version_0"
    (run_dir / "checkpoints").mkdir(parents=True)
    config = {"command": "part1_vae.train", "model": "mlp", "z_dim": 2, "hidden_dims": [32], "seed": 42,
              "iw_samples": 5, "subset": 64}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    args = build_parser().parse_args([])
    vars(args).update(config)
    torch.save({"state_dict": build_model(args).state_dict()}, run_dir / "checkpoints" / "last.ckpt")
    monkeypatch.setattr(part1_vae.modules.VAE, "test_step", lambda *args: os.kill(os.getpid(), signal.SIGINT))
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, not a background job
    try:
        ends_in_one_line_on_ctrl_c("evaluate", [str(run_dir), "--test_likelihood", "--judge", str(tiny_judge_path)],
                                   monkeypatch, capsys)
    finally:
        signal.signal(signal.SIGINT, handler)


# train_judge.py

@pytest.mark.parametrize("out, message", [
    ("{tmp}", "argument --out/--path: {tmp} is a folder: pass a judge checkpoint file"),
    ("{tmp}/a_file/judge.pt", "--out {tmp}/a_file/judge.pt: {tmp}/a_file is a file, not a folder: pass a path in a "
                              "folder you can write to"),
    ("{tmp}/a_file/more/judge.pt", "{tmp}/a_file is a file, not a folder"),
    ("{tmp}/a_file", "--out {tmp}/a_file is a file that holds no judge: pass a new path (or delete it)"),
], ids=["a folder", "under a file", "deeper under a file", "a file of something else"])
def test_train_judge_refuses_an_out_it_cannot_write_before_training(tmp_path, monkeypatch, capsys, out, message):
    (tmp_path / "a_file").write_text("")
    command = load_script("train_judge")
    monkeypatch.setattr("shared.judge.train_judge", must_not_train)
    fails_with_one_line(lambda: command.main(["--out", out.format(tmp=tmp_path), "--epochs", "1"]), capsys, 2,
                        message.format(tmp=tmp_path))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.parametrize("flags, message", [
    (["--data_dir", "{tmp}/nowhere"], "--data_dir {tmp}/nowhere: no folder MNIST/raw inside it"),
    (["--epochs", "0"], "argument --epochs: must be positive, got 0"),
    (["--seed", "-1"], "--seed must be in [0, 2**32 - 1], got -1"),
])
def test_train_judge_refuses_bad_flags_before_training(tmp_path, monkeypatch, capsys, flags, message):
    command = load_script("train_judge")
    monkeypatch.setattr("shared.judge.train_judge", must_not_train)
    argv = ["--out", str(tmp_path / "judge.pt"), "--epochs", "1", *[flag.format(tmp=tmp_path) for flag in flags]]
    assert_fails_fast(lambda: command.main(argv), tmp_path, capsys, message.format(tmp=tmp_path))


def test_train_judge_reads_a_damaged_test_file_before_training(tmp_path, monkeypatch, capsys):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for bundled in (BUNDLED_DIR / "MNIST" / "raw").glob("*.gz"):
        (raw / bundled.name).symlink_to(bundled)
    test_images = raw / "t10k-images-idx3-ubyte.gz"
    test_images.unlink()
    test_images.write_bytes((BUNDLED_DIR / "MNIST" / "raw" / test_images.name).read_bytes()[:5000])
    monkeypatch.setattr(shared.judge, "fit_judge", must_not_train)
    out = tmp_path / "judge.pt"
    fails_with_one_line(lambda: load_script("train_judge").main(["--out", str(out), "--data_dir", str(tmp_path / "data"),
                                                                 "--epochs", "1"]),
                        capsys, 1, f"MNIST file {test_images} is corrupt or truncated")
    assert not out.exists()


def test_train_judge_help_and_a_refused_flag_answer_before_torch_or_lightning_is_imported():
    """As the training commands' and evaluate.py's: --help and a mistyped flag took 6-8 s of imports."""
    imported, done = heavy_imports_of(
        "import runpy\n"
        "for argv in (['--help'], ['--epochs', '0']):\n"
        "    sys.argv = ['scripts/train_judge.py', *argv]\n"
        "    try:\n        runpy.run_path('scripts/train_judge.py', run_name='__main__')\n"
        "    except SystemExit as stop:\n        assert stop.code in (0, 2), stop.code")
    assert imported == [], done.stderr[-2000:]
    assert "(default: 4)" in done.stdout and "argument --epochs: must be positive, got 0" in done.stderr


def test_train_judge_help_shows_every_default(capsys):
    shows_every_default("train_judge", capsys, "4", "42", "None", str(shared.judge.DEFAULT_JUDGE_PATH))


def test_train_judge_ends_in_one_line_on_ctrl_c(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shared.judge, "train_judge", ctrl_c)
    ends_in_one_line_on_ctrl_c("train_judge", ["--out", str(tmp_path / "judge.pt"), "--epochs", "1"], monkeypatch,
                               capsys)
    assert not any(tmp_path.iterdir())


def test_a_judge_write_cut_short_leaves_no_partial_file(tmp_path, monkeypatch, tiny_judge):
    def cut_short(obj, path):
        Path(path).write_bytes(b"half a judge")
        raise KeyboardInterrupt

    monkeypatch.setattr(shared.judge.torch, "save", cut_short)
    with pytest.raises(KeyboardInterrupt):
        save_judge(*tiny_judge, tmp_path / "judge.pt")
    assert not any(tmp_path.iterdir())


# shared/judge.py: a file that is no judge's is not called corrupt, nor is its deletion advised

LIGHTNING_CHECKPOINT = {"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0", "optimizer_states": [],
                        "state_dict": {"encoder.net.0.weight": torch.zeros(2, 2)}, "hyper_parameters": {"z_dim": 2}}


@pytest.mark.parametrize("saved, what", [
    (LIGHTNING_CHECKPOINT, "it is a Lightning checkpoint, a run's model"),
    ({"hyper_parameters": argparse.Namespace(z_dim=2), "state_dict": {}}, "it holds argparse.Namespace objects"),
    ({"encoder.net.0.weight": torch.zeros(2)}, "it holds encoder.net.0.weight, not a judge's state_dict and record"),
    (torch.zeros(3), "it holds a Tensor, not a judge's state_dict and record"),
], ids=["a run's checkpoint", "objects", "a model's state dict", "a tensor"])
def test_a_file_that_is_no_judges_is_named_so_and_never_advised_to_be_deleted(tmp_path, saved, what):
    path = tmp_path / "last.ckpt"
    torch.save(saved, path)
    with pytest.raises(JudgeFileError) as error:
        load_judge(path)
    message = str(error.value)
    assert message.startswith(f"{path} is not a judge checkpoint ({what}") and "\n" not in message
    assert message.endswith("pass a judge's file with --judge") and "delete" not in message and "corrupt" not in message
    assert path.read_bytes()  # still there


def npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, a=np.zeros(3))
    return buffer.getvalue()


@pytest.mark.parametrize("write", [lambda path: path.write_text("hi\n"),  # torch's loader raised a bare KeyError
                                   lambda path: path.write_text("<html>404</html>"),
                                   lambda path: path.write_text("lr: 0.01\n"),
                                   lambda path: path.write_bytes(npz_bytes())],  # a zip, as torch's files are
                         ids=["hi", "html", "yaml", "npz"])
def test_a_file_that_is_no_torch_file_is_named_so_and_never_advised_to_be_deleted(tmp_path, write):
    path = tmp_path / "judge.pt"
    write(path)
    with pytest.raises(JudgeFileError) as error:
        load_judge(path)
    assert str(error.value) == f"{path} is not a judge checkpoint (it is no torch file): pass a judge's file with --judge"


def test_a_bundled_judge_overwritten_by_another_file_is_to_be_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(shared.judge, "DEFAULT_JUDGE_PATH", tmp_path / "judge.pt")
    torch.save(LIGHTNING_CHECKPOINT, tmp_path / "judge.pt")
    with pytest.raises(JudgeFileError, match=r"is not a judge checkpoint \(it is a Lightning checkpoint, a run's "
                                             r"model\): rebuild it with `python scripts/train_judge.py`"):
        load_judge()


def test_a_training_command_given_a_runs_checkpoint_as_judge_says_so_before_any_work(tmp_path, tmp_path_factory,
                                                                                     capsys):
    checkpoint = tmp_path_factory.mktemp("run") / "last.ckpt"
    torch.save(LIGHTNING_CHECKPOINT, checkpoint)
    fails_with_one_line(lambda: part2_gan.train.main(["--log_dir", str(tmp_path), "--judge", str(checkpoint),
                                                      "--epochs", "1", "--subset", "64", "--accelerator", "cpu"]),
                        capsys, 1, f"error: {checkpoint} is not a judge checkpoint (it is a Lightning checkpoint")
    assert not any(tmp_path.iterdir())


# collect_figures.py

@pytest.mark.parametrize("flags, message", [
    (["--log_dir", "{tmp}/nowhere"], "--log_dir {tmp}/nowhere: no such folder: pass the folder the runs were written to"),
    (["--log_dir", "{tmp}/a_file"], "argument --log_dir: {tmp}/a_file is a file, not a folder"),
    (["--out", "{tmp}/a_file"], "argument --out: {tmp}/a_file is a file, not a folder"),
    (["--out", "{tmp}/a_file/figures"], "--out {tmp}/a_file/figures: {tmp}/a_file is a file, not a folder: pass a "
                                        "folder you can write to"),
], ids=["missing log_dir", "log_dir a file", "out a file", "out under a file"])
def test_collect_figures_refuses_bad_folders_before_copying_or_making_any(tmp_path, capsys, flags, message):
    (tmp_path / "runs").mkdir()
    (tmp_path / "a_file").write_text("")
    argv = ["--log_dir", str(tmp_path / "runs"), "--out", str(tmp_path / "figures"),
            *[flag.format(tmp=tmp_path) for flag in flags]]
    fails_with_one_line(lambda: load_script("collect_figures").main(argv), capsys, 2, message.format(tmp=tmp_path))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file", "runs"]


def test_collect_figures_from_a_folder_without_the_readmes_runs_fails_and_makes_nothing(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    argv = ["--log_dir", str(tmp_path / "runs"), "--out", str(tmp_path / "figures")]
    fails_with_one_line(lambda: load_script("collect_figures").main(argv), capsys, 1,
                        f"none of the README's figures was found under {tmp_path / 'runs'}")
    assert not (tmp_path / "figures").exists()


def test_collect_figures_help_shows_every_default(capsys):
    shows_every_default("collect_figures", capsys, "runs", "reports/figures")


def test_collect_figures_ends_in_one_line_on_ctrl_c(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("shared.runs.finished_runs", ctrl_c)
    ends_in_one_line_on_ctrl_c("collect_figures", ["--log_dir", str(tmp_path), "--out", str(tmp_path / "figures")],
                               monkeypatch, capsys)


# flow_step_timing.py

TINY_FLOW = ["--rounds", "1", "--steps", "1", "--batch_size", "2", "--num_channels", "4", "--num_blocks", "1",
             "--num_scales", "1"]


def test_flow_step_timing_refuses_the_toy_task_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(part3_flows.train, "build_model", must_not_train)
    argv = ["--rounds", "1", "--config", str(CONFIGS / "flow_mnist8bit.yaml"), "--task", "toy"]  # no image flow flag
    assert_fails_fast(lambda: load_script("flow_step_timing").main(argv), tmp_path, capsys,
                      "--task toy: this script times the image flow's training step")


def test_flow_step_timing_finds_its_default_config_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    timings = load_script("flow_step_timing").main(TINY_FLOW)
    assert timings["loss_channels_last"] == pytest.approx(timings["loss_contiguous"], rel=1e-4)


def test_flow_step_timing_refuses_no_rounds_in_one_line(capsys):
    fails_with_one_line(lambda: load_script("flow_step_timing").main(["--rounds", "0"]), capsys, 2,
                        "argument --rounds: must be positive, got 0")


def test_flow_step_timing_help_shows_every_default(capsys):
    shows_every_default("flow_step_timing", capsys, "6", "5", str(CONFIGS / "flow_mnist8bit.yaml"))


def test_flow_step_timing_ends_in_one_line_on_ctrl_c(monkeypatch, capsys):
    monkeypatch.setattr(part3_flows.train, "build_model", ctrl_c)
    ends_in_one_line_on_ctrl_c("flow_step_timing", TINY_FLOW, monkeypatch, capsys)


# step_phases.py

TINY_PHASES = ["--batches", "8", "--rounds", "1", "--hidden_dims", "8", "--z_dim", "2", "--batch_size", "16"]


def test_step_phases_times_each_phase_of_both_ways_within_their_steps(capsys):
    micros = load_script("step_phases").main([*TINY_PHASES, "--subset", "256", "--batches", "40"])
    # A step's figures are those of the batches run, an epoch's 16 of the 40 asked (they were divided by 40).
    assert "16 a round through the pipeline, 16 through the plain loop" in capsys.readouterr().out
    for way in ("pipeline", "plain"):
        phases = micros[way]
        # Each wrapped call was timed (the optimizer's step is Lightning's wrapper, set up at the fit's start), and
        # the phases of the one round lie within its step.
        assert all(phases[phase] > 0 for phase in ("loss", "backward", "optimizer step")), (way, phases)
        assert phases["rest"] >= 0 and phases["step"] > 0, (way, phases)


@pytest.mark.parametrize("flags, message", [
    (["--z_dim", "0"], "--z_dim must be positive, got 0"),
    (["--objective", "iwae"], "the plain loop trains on the ELBO of threshold-binarized images"),  # timed apart
])
def test_step_phases_refuses_what_it_cannot_time_in_one_line(capsys, flags, message):
    fails_with_one_line(lambda: load_script("step_phases").main([*TINY_PHASES, *flags]), capsys, 2, message)


def test_step_phases_help_shows_every_default(capsys):
    shows_every_default("step_phases", capsys, "None", "5")

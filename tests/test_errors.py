"""Every bad input ends in one line naming the problem and the fix, and leaves nothing behind; runs are
append-only records (no rewritten config, no overwritten metrics)."""
import gzip
import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
import yaml

import shared.data
from part1_vae.train import main
from shared.data import BUNDLED_DIR
from tests.conftest import TINY_RUN, crashes_in, fails_with_one_line, load_script


def run(tmp_path, *flags):
    return main([*TINY_RUN, "--log_dir", str(tmp_path / "runs"), *flags])


def nothing_written(tmp_path) -> bool:
    return not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))


@pytest.mark.parametrize("flags, message", [
    (["--accelerator", "tpu"], "the Lightning Trainer refused --accelerator tpu"),
    pytest.param(["--accelerator", "gpu"], "the Lightning Trainer refused --accelerator gpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    (["--precision", "7"], "Precision '7' is invalid"),
    (["--precision", "fp16"], "Precision 'fp16' is invalid"),
    (["--strategy", "nonsense"], "--strategy nonsense"),
    # Valid to Lightning, but its weights cast to bf16 met float32 data in a traceback after the start line.
    (["--precision", "bf16-true"], "--precision bf16-true: the models train in 32-true or mixed precision"),
    (["--precision", "64"], "--precision 64: the models train in 32-true or mixed precision (bf16-mixed; "
                            "16-mixed on a GPU); 64-true casts the weights themselves"),
    (["--devices", "4096"], "--devices 4096: this machine has"),
    (["--num_nodes", "0"], "--num_nodes must be positive, got 0"),
    (["--log_every_n_steps", "0"], "--log_every_n_steps must be positive, got 0"),  # Lightning takes 0; a division by it
    (["--strategy", "ddp_spawn"], "--strategy ddp_spawn fits in processes it spawns or forks"),
    (["--strategy", "ddp_fork"], "use --strategy ddp"),
    (["--lr", "nan"], "--lr must be finite, got nan"),
    (["--lr_final", "inf"], "--lr_final must be finite, got inf"),
    (["--seed", "-1"], "--seed must be in [0, 2**32 - 1], got -1"),
    (["--name", "../elsewhere"], "--name ../elsewhere: a run name is a folder under --log_dir"),
    (["--name", "."], "--name .: a run name is a folder under --log_dir"),  # the versions went into --log_dir itself
    (["--name", ""], "--name '': a run name is a folder under --log_dir"),  # it took the default name unsaid
    (["--name", " "], "--name ' ': a run name is a folder under --log_dir"),  # a folder named by a space
    (["--lr_final", "0.1"], "--lr_final 0.1 is above --lr 0.001: the rate decays to it; pass --lr_final 0.001 or "
                            "less, or none for a constant rate"),  # the help says a decay
    pytest.param(["--precision", "16-mixed"], "--precision 16-mixed: float16 mixed precision is a GPU's",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_bad_shared_flags_and_those_the_trainer_refuses_fail_in_one_line(tmp_path, capsys, flags, message):
    fails_with_one_line(lambda: run(tmp_path, *flags), capsys, 2, message)
    assert nothing_written(tmp_path)


def test_a_log_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "runs").write_text("")
    fails_with_one_line(lambda: run(tmp_path), capsys, 2, "is a file, not a folder")
    file = tmp_path / "runs"
    fails_with_one_line(lambda: main([*TINY_RUN, "--log_dir", str(file / "sub")]), capsys, 2,
                        f"{file} is a file, not a folder")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, a folder that takes no new file")
def test_a_log_dir_where_no_file_can_be_made_is_refused(capsys):
    # os.access says yes to root there; the run directory's mkdir then failed with a traceback
    fails_with_one_line(lambda: main([*TINY_RUN, "--log_dir", "/proc/runs"]), capsys, 2,
                        "--log_dir /proc/runs: /proc takes no new file")


def broken_copies(tmp_path, damage) -> str:
    """A data_dir holding the bundled MNIST files with ``damage(raw_dir)`` applied."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in (BUNDLED_DIR / "MNIST" / "raw").glob("*.gz"):
        shutil.copy(path, raw / path.name)
    damage(raw)
    return str(tmp_path / "data")


def truncate(raw):
    path = raw / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50_000])


def bad_magic(raw):
    path = raw / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\0\0\0\0" + gzip.decompress(path.read_bytes())[4:]))


def no_labels(raw):
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()


def images_32x32(raw):
    path = raw / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">IIII", 0x803, 10_000, 32, 32) + bytes(10_000 * 32 * 32)))


def training_file_of_test_images(raw):
    shutil.copy(raw / "t10k-images-idx3-ubyte.gz", raw / "train-images-idx3-ubyte.gz")


def cut_short_inside(raw):
    path = raw / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-10]))


@pytest.mark.parametrize("damage, message", [
    (truncate, "train-images-idx3-ubyte.gz is corrupt or truncated"),
    (training_file_of_test_images, "train-images-idx3-ubyte.gz holds 10000 items, not the 60000 of its MNIST file"),
    (cut_short_inside, "t10k-labels-idx1-ubyte.gz has 9998 bytes, expected 10008 for its 10000 items"),
    (truncate, "a fresh copy of train-images-idx3-ubyte(.gz) from the bundled"),
    (bad_magic, "t10k-images-idx3-ubyte.gz is not an IDX file"),
    (no_labels, "t10k-labels-idx1-ubyte(.gz) is missing"),
    (images_32x32, "holds 32x32 images, not MNIST's 28x28"),
])
def test_broken_mnist_files_are_named_in_one_line_before_any_run_folder(tmp_path, capsys, damage, message):
    data_dir = broken_copies(tmp_path, damage)
    fails_with_one_line(lambda: run(tmp_path, "--data_dir", data_dir), capsys, 1, message)
    assert nothing_written(tmp_path)


def test_a_broken_file_of_the_bundled_copy_is_named_with_a_fix_that_does_not_send_back_to_it(tmp_path, capsys,
                                                                                           monkeypatch):
    """The bundled copy's own file missing: the advice was to take a fresh copy from the bundled copy."""
    bundled = Path(broken_copies(tmp_path, lambda raw: (raw / "train-images-idx3-ubyte.gz").unlink()))
    monkeypatch.setattr(shared.data, "BUNDLED_DIR", bundled)
    fails_with_one_line(lambda: run(tmp_path), capsys, 1, "train-images-idx3-ubyte(.gz) is missing: the project's own "
                        "copy is damaged: restore it (`git checkout -- shared/datasets` in a clone, or reinstall")
    assert nothing_written(tmp_path)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def finished_run(tmp_path):
    run(tmp_path, "--z_dim", "4", "--hidden_dims", "32")
    return tmp_path / "runs" / "vae_mlp_z4" / "version_0"


@pytest.mark.slow
@pytest.mark.parametrize("flags, message", [
    (["--z_dim", "5"], "--z_dim 5: a resumed run continues as it was set up (its z_dim: 4)"),
    (["--lr", "0.5"], "--lr 0.5: a resumed run continues as it was set up (its lr: 0.001)"),
    # Settings that leave every shape as it was: the record would have said what the first epochs did not do.
    (["--binarization", "dynamic"], "--binarization dynamic: a resumed run continues as it was set up (its "
                                    "binarization: threshold)"),
    (["--seed", "7"], "--seed 7: a resumed run continues"), (["--activation", "tanh"], "--activation tanh: a resumed"),
    (["--subset", "64"], "--subset 64: a resumed run continues as it was set up (its subset: 256)"),
])
def test_resume_with_other_model_data_or_optimizer_settings_is_refused_and_rewrites_nothing(finished_run, capsys,
                                                                                           flags, message):
    before = {p.name: digest(p) for p in finished_run.iterdir() if p.is_file()}
    fails_with_one_line(lambda: main(["--resume", str(finished_run), *flags, "--epochs", "3"]), capsys, 2, message)
    assert {p.name: digest(p) for p in finished_run.iterdir() if p.is_file()} == before


@pytest.mark.slow
def test_a_resume_checks_the_config_file_given_with_it_and_goes_on_as_recorded(finished_run, tmp_path, capsys):
    """The file must fit the run's setup (its other settings are refused), but how the run goes on changes by flag
    only: the start command retyped with --resume (a file's epochs: 3, the run's --epochs 2) carried a finished run
    on to the file's epochs (QA)."""
    other = tmp_path / "lr.yaml"
    other.write_text("lr: 0.01\n")
    fails_with_one_line(lambda: main(["--resume", str(finished_run), "--config", str(other)]), capsys, 2,
                        f"--lr 0.01: a resumed run continues as it was set up (its lr: 0.001), its checkpoint and "
                        f"config.yaml with it; start a new run to train with another (set in {other})")
    start = tmp_path / "start.yaml"
    start.write_text("z_dim: 4\nhidden_dims: [32]\nepochs: 3\nsample_epochs: [1]\nprogress_bar: false\n")
    before = {p.name: digest(p) for p in finished_run.rglob("*") if p.is_file()}
    assert main(["--resume", str(finished_run), "--config", str(start)])["epochs"] == 2
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (f"--config {start}: the resumed run goes on as recorded (epochs: 2, sample_epochs: "
                                   f"[0]), not as the file says (epochs: 3, sample_epochs: [1]): a resume changes how a "
                                   f"run goes on by flag only")
    assert "already finished its 2 epochs: nothing to do" in out
    assert {p.name: digest(p) for p in finished_run.rglob("*") if p.is_file()} == before
    assert main(["--resume", str(finished_run), "--config", str(start), "--epochs", "3"])["epochs"] == 3
    assert "--epochs" not in capsys.readouterr().out.splitlines()[0]  # typed: taken, and the file's is not named


@pytest.mark.slow
def test_a_run_recorded_before_a_check_existed_still_resumes(finished_run):
    # --train_k without --objective iwae is refused since 2026-12-06; runs made before hold it, to no effect
    config = finished_run / "config.yaml"
    config.write_text(config.read_text().replace("train_k: 1", "train_k: 5").replace("lr_final: null", "lr_final: 0.01"))
    assert "train_k: 5" in config.read_text() and "lr_final: 0.01" in config.read_text()  # above its lr: refused since
    assert main(["--resume", str(finished_run), "--epochs", "3"])["epochs"] == 3


@pytest.mark.slow
def test_resuming_a_finished_run_to_fewer_epochs_than_it_has_trained_is_refused(finished_run, capsys):
    before = {p.name: digest(p) for p in finished_run.rglob("*") if p.is_file()}
    fails_with_one_line(lambda: main(["--resume", str(finished_run), "--epochs", "1"]), capsys, 2,
                        f"--epochs 1: {finished_run} has trained 2 epochs already")  # not "finished: nothing to do"
    assert {p.name: digest(p) for p in finished_run.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_resuming_an_unfinished_run_to_fewer_epochs_than_it_has_trained_is_refused(finished_run, capsys):
    (finished_run / "metrics.json").unlink()  # as if stopped after its second epoch's checkpoint
    before = {p.name: digest(p) for p in finished_run.rglob("*") if p.is_file()}
    fails_with_one_line(lambda: main(["--resume", str(finished_run), "--epochs", "1"]), capsys, 2,
                        f"--epochs 1: {finished_run} has trained 2 epochs already; pass --epochs 2 or more, or leave "
                        f"it out")
    assert {p.name: digest(p) for p in finished_run.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_a_finished_run_whose_last_checkpoint_holds_an_earlier_epoch_is_still_finished(finished_run, capsys):
    # Until 2026-12-06 last.ckpt was rewritten only at the epochs that improved the best
    last = finished_run / "checkpoints" / "last.ckpt"
    torch.save({**torch.load(last, weights_only=False), "epoch": 0}, last)
    main(["--resume", str(finished_run)])
    assert "already finished its 2 epochs: nothing to do" in capsys.readouterr().out


@pytest.mark.slow
def test_a_resumed_run_stays_where_it_is_and_its_record_says_so(finished_run, tmp_path, capsys):
    # --name and --log_dir typed with --resume RUN_DIR were ignored unsaid: the user may think the run moved
    for flag, value in (("--name", "other"), ("--log_dir", str(tmp_path / "elsewhere"))):
        fails_with_one_line(lambda: main(["--resume", str(finished_run), flag, value]), capsys, 2,
                            f"{flag} {value}: --resume {finished_run} continues that run where it is, in "
                            f"{finished_run.parent}; drop {flag}")
    named = tmp_path / "named.yaml"  # a shipped config names its runs; resumed with it, the run keeps its own name
    named.write_text(f"name: other\nlog_dir: {tmp_path / 'elsewhere'}\n")
    main(["--resume", str(finished_run), "--epochs", "3", "--config", str(named)])
    config = yaml.safe_load((finished_run / "config.yaml").read_text())
    assert (config["name"], Path(config["log_dir"])) == ("vae_mlp_z4", finished_run.parent.parent)
    assert not (tmp_path / "elsewhere").exists()
    # The same place another way: a link to the run, a nested name (QA: both were refused, or recorded elsewhere).
    (tmp_path / "latest").symlink_to(finished_run)
    main(["--resume", str(tmp_path / "latest"), "--epochs", "4", "--name", "vae_mlp_z4"])
    (tmp_path / "runs" / "linked").mkdir()  # a bare --resume finds the run through the flags (QA: it was refused)
    (tmp_path / "runs" / "linked" / "version_0").symlink_to(finished_run)
    main(["--resume", "--log_dir", str(tmp_path / "runs"), "--name", "linked", "--epochs", "5"])
    run(tmp_path, "--name", "group/nested")
    nested = tmp_path / "runs" / "group" / "nested" / "version_0"
    main(["--resume", str(nested), "--epochs", "3", "--name", "group/nested", "--log_dir", str(tmp_path / "runs")])
    for record in (finished_run / "config.yaml", nested / "config.yaml"):
        config = yaml.safe_load(record.read_text())
        assert Path(config["log_dir"], config["name"]) == record.parent.parent


@pytest.mark.slow
def test_a_finished_run_continued_and_interrupted_keeps_no_record_of_a_checkpoint_that_is_gone(finished_run,
                                                                                              monkeypatch):
    import part1_vae.modules

    monkeypatch.setattr(part1_vae.modules.VAE, "train_batch", crashes_in(part1_vae.modules.VAE.train_batch, epoch=3))
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(["--resume", str(finished_run), "--epochs", "4"])
    assert not (finished_run / "metrics.json").exists()  # it named a best checkpoint the continued run may replace
    monkeypatch.undo()
    metrics = main(["--resume", str(finished_run)])
    assert metrics["epochs"] == 4 and (finished_run / "checkpoints" / metrics["checkpoint"]).is_file()


@pytest.mark.slow
def test_a_finished_run_continued_and_stopped_is_no_longer_finished(finished_run, capsys):
    first_record = (finished_run / "metrics.json").read_text()
    main(["--resume", str(finished_run), "--epochs", "3"])
    (finished_run / "metrics.json").write_text(first_record)  # as if stopped after the third epoch's checkpoint
    fails_with_one_line(lambda: main(["--resume", str(finished_run), "--epochs", "2"]), capsys, 2,
                        f"--epochs 2: {finished_run} has trained 3 epochs already")  # not "finished its 2 epochs"


@pytest.mark.slow
def test_a_last_checkpoint_of_another_model_or_no_checkpoint_is_an_error_of_the_file(finished_run, tmp_path, capsys):
    other = run(tmp_path / "other", "--z_dim", "6", "--hidden_dims", "32")
    last = finished_run / "checkpoints" / "last.ckpt"
    shutil.copy(tmp_path / "other" / "runs" / "vae_mlp_z6" / "version_0" / "checkpoints" / "last.ckpt", last)
    fails_with_one_line(lambda: main(["--resume", str(finished_run), "--epochs", "3"]), capsys, 1,
                        "fixed_z of shape (64, 6), the run's config.yaml builds (64, 4): it is another model's checkpoint")
    torch.save({"weights": other}, last)  # loads, but is no Lightning checkpoint
    fails_with_one_line(lambda: main(["--resume", str(finished_run), "--epochs", "3"]), capsys, 1,
                        "last.ckpt is corrupt, truncated or not a checkpoint; intact beside it: best-epoch")


@pytest.mark.slow
def test_resuming_a_finished_run_changes_nothing_unless_more_epochs_are_asked(finished_run, capsys):
    before = {p.name: digest(p) for p in finished_run.rglob("*") if p.is_file()}
    metrics = main(["--resume", str(finished_run)])
    assert "already finished its 2 epochs: nothing to do" in capsys.readouterr().out
    assert {p.name: digest(p) for p in finished_run.rglob("*") if p.is_file()} == before
    assert metrics == json.loads((finished_run / "metrics.json").read_text())


@pytest.mark.slow
def test_a_truncated_last_checkpoint_names_the_intact_ones_and_keeps_the_config(finished_run, capsys):
    last = finished_run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    config = digest(finished_run / "config.yaml")
    fails_with_one_line(lambda: main(["--resume", str(finished_run), "--epochs", "3"]), capsys, 1,
                        "last.ckpt is corrupt, truncated or not a checkpoint; intact beside it: best-epoch")
    assert digest(finished_run / "config.yaml") == config
    for best in (finished_run / "checkpoints").glob("best-*.ckpt"):
        best.write_bytes(best.read_bytes()[:1000])
    fails_with_one_line(lambda: main(["--resume", str(finished_run), "--epochs", "3"]), capsys, 1,
                        "no intact checkpoint beside it: start a new run")


@pytest.mark.slow
def test_a_missing_last_checkpoint_names_the_ones_beside_it(finished_run, capsys):
    (finished_run / "checkpoints" / "last.ckpt").unlink()
    fails_with_one_line(lambda: main(["--resume", str(finished_run), "--epochs", "3"]), capsys, 2,
                        "no checkpoints/last.ckpt there (there is best-epoch")


@pytest.mark.slow
def test_a_missing_config_yaml_is_named_with_the_fix(finished_run, capsys):
    (finished_run / "config.yaml").unlink()
    fails_with_one_line(lambda: main(["--resume", str(finished_run), "--epochs", "3"]), capsys, 2,
                        f"--resume {finished_run}: no config.yaml there (the run's settings): restore it from a copy")


@pytest.mark.slow
def test_evaluate_on_a_truncated_checkpoint_says_so_in_one_line(finished_run, capsys):
    best = next((finished_run / "checkpoints").glob("best-*.ckpt"))
    best.write_bytes(best.read_bytes()[:1000])
    fails_with_one_line(lambda: load_script("evaluate").main([str(finished_run)]), capsys, 1,
                        "is corrupt or truncated; pass another with --checkpoint")


@pytest.mark.slow
def test_evaluate_on_a_deleted_checkpoint_names_those_left_in_the_run(finished_run, capsys):
    best = next((finished_run / "checkpoints").glob("best-*.ckpt"))
    best.unlink()
    left = ", ".join(sorted(path.name for path in (finished_run / "checkpoints").glob("*.ckpt")))
    assert "last.ckpt" in left
    fails_with_one_line(lambda: load_script("evaluate").main([str(finished_run)]), capsys, 1,
                        f"checkpoint {best.name} not found (nor {best}); pass another with --checkpoint ({left} in the "
                        f"run)")


@pytest.mark.slow
def test_evaluate_with_a_corrupt_judge_fails_before_its_test_stage_and_writes_no_grid(finished_run, tmp_path, capsys,
                                                                                   monkeypatch):
    judge = tmp_path / "judge.pt"
    judge.write_bytes(b"not a checkpoint")
    evaluate = load_script("evaluate")
    monkeypatch.setattr(evaluate, "test_likelihood", lambda *args: pytest.fail("the test stage ran first"))
    grid = tmp_path / "grid.png"
    fails_with_one_line(lambda: evaluate.main([str(finished_run), "--judge", str(judge), "--grid", str(grid),
                                               "--test_likelihood"]), capsys, 1, f"{judge} is not a judge checkpoint")
    assert not grid.exists()  # a failed command leaves no output


@pytest.mark.slow
@pytest.mark.parametrize("damage", ['{"epochs": 2,', "", "[1]"])
def test_a_damaged_metrics_json_is_named_in_one_line_by_resume_and_evaluate(finished_run, capsys, damage):
    metrics = finished_run / "metrics.json"
    metrics.write_text(damage)  # a write cut short by a kill, an empty file, an edit
    fails_with_one_line(lambda: main(["--resume", str(finished_run)]), capsys, 1,
                        f"{metrics} {'holds no JSON object' if damage == '[1]' else 'is not valid JSON'}")
    fails_with_one_line(lambda: load_script("evaluate").main([str(finished_run)]), capsys, 1,
                        f"{metrics} {'holds no JSON object' if damage == '[1]' else 'is not valid JSON'}")
    metrics.unlink()  # as the message says: the resume tests the trained run and writes it anew
    assert main(["--resume", str(finished_run)])["epochs"] == 2 and "checkpoint" in json.loads(metrics.read_text())


@pytest.mark.slow
def test_evaluate_names_a_damaged_config_yaml_in_one_line(finished_run, capsys):
    (finished_run / "config.yaml").write_text("z_dim: [\n")
    fails_with_one_line(lambda: load_script("evaluate").main([str(finished_run)]), capsys, 1,
                        f"config file {finished_run / 'config.yaml'} is not valid YAML (line 2)")


@pytest.mark.slow
def test_evaluate_finds_a_checkpoint_named_by_its_file_in_the_run_directory(finished_run, tmp_path, monkeypatch):
    from shared.runs import load_run

    monkeypatch.chdir(tmp_path)  # the README's `--checkpoint epoch040.ckpt`, from wherever the command runs
    best = next((finished_run / "checkpoints").glob("best-*.ckpt"))
    by_name, by_path = load_run(finished_run, best.name)[0].state_dict(), load_run(finished_run, best)[0].state_dict()
    assert all(torch.equal(by_name[key], by_path[key]) for key in by_path)
    with pytest.raises(SystemExit, match=f"checkpoint epoch040.ckpt not found \\(nor {finished_run}/checkpoints/"):
        load_run(finished_run, "epoch040.ckpt")


@pytest.mark.slow
def test_evaluate_refuses_what_the_run_cannot_do_before_its_test_stage(finished_run, tmp_path, capsys):
    evaluate = load_script("evaluate").main
    printed = fails_with_one_line(lambda: evaluate([str(finished_run), "--test_likelihood", "--temperature", "0.5"]),
                                  capsys, 2, "--temperature: VAE samples at no temperature")
    assert printed == ""  # one line: nor the test stage, nor the loaded checkpoint's line before the refusal
    (finished_run / "metrics.json").unlink()  # as an interrupted run: its last checkpoint, and a word about it
    evaluate([str(finished_run), "--num_samples", "2"])
    assert (f"Loaded VAE from {finished_run}/checkpoints/last.ckpt (the run has not finished: no metrics.json)"
            in capsys.readouterr().out)
    run(tmp_path / "other", "--z_dim", "6", "--hidden_dims", "32")
    other = tmp_path / "other" / "runs" / "vae_mlp_z6" / "version_0" / "checkpoints" / "last.ckpt"
    fails_with_one_line(lambda: evaluate([str(finished_run), "--checkpoint", str(other)]), capsys, 1,
                        f"checkpoint {other} holds fixed_z of shape (64, 6), {finished_run / 'config.yaml'} builds "
                        f"(64, 4): it is another model's checkpoint; pass the run's own with --checkpoint")
    torch.save({"encoder.net.0.weight": torch.zeros(2)}, tmp_path / "weights.pt")  # a bare state dict
    fails_with_one_line(lambda: evaluate([str(finished_run), "--checkpoint", str(tmp_path / "weights.pt")]), capsys, 1,
                        f"{tmp_path / 'weights.pt'} is no Lightning checkpoint (no state_dict in it)")


@pytest.mark.slow
def test_val_figures_in_metrics_are_those_that_chose_the_checkpoint(finished_run):
    metrics = json.loads((finished_run / "metrics.json").read_text())
    best = torch.load(finished_run / "checkpoints" / metrics["checkpoint"], weights_only=False)
    chosen = next(state for key, state in best["callbacks"].items() if key.startswith("EpochCountCheckpoint"))
    assert metrics["val_bpd"] == pytest.approx(float(chosen["best_model_score"]), abs=1e-7)
    assert metrics["checkpoint"] == f"best-epoch{best['epoch'] + 1:03d}.ckpt"  # counted from 1


def test_num_nodes_reaches_the_trainer_beside_devices_and_strategy(monkeypatch, capsys):
    """Multi-node DDP is Lightning's: the flag is passed through, not re-implemented (a real launch needs
    the nodes, so only the Trainer's settings are checked here). Outside a cluster job, with no machine's rank
    given, its processes would wait for the other machines forever: refused in one line."""
    from part1_vae.train import build_parser, check, default_name
    from shared.cli import parse_args
    from shared.lightning_trainer import build_trainer

    args = parse_args(build_parser(), ["--accelerator", "cpu", "--devices", "1", "--num_nodes", "3", "--strategy", "ddp"],
                      check, default_name)
    for variable in ("NODE_RANK", "MASTER_ADDR", "SLURM_NTASKS", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        build_trainer(args, logger=False, callbacks=[])
    assert exit_info.value.code == 2 and "--num_nodes 3: no cluster to run on" in capsys.readouterr().err
    monkeypatch.setenv("NODE_RANK", "0")  # the first machine started by hand, as README: Scaling out shows (rank 0:
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")  # the Trainer sets the process's global rank, which later tests read)
    trainer = build_trainer(args, logger=False, callbacks=[])
    assert (trainer.num_nodes, trainer.num_devices, type(trainer.strategy).__name__) == (3, 1, "DDPStrategy")


def test_a_checkpoint_that_lacks_or_adds_a_tensor_is_told_so():
    from shared.checks import misfit

    model = {"a": torch.zeros(2), "b": torch.zeros(3)}
    assert misfit(model, {"a": torch.zeros(2)}, "X") == "lacks b, which X builds"
    assert misfit(model, {**model, "c": torch.zeros(1)}, "X") == "holds c, which X does not build"
    assert misfit(model, {"a": torch.zeros(2), "b": torch.zeros(4)}, "X") == "holds b of shape (4,), X builds (3,)"
    assert misfit(model, dict(model), "X") is None


@pytest.mark.slow
def test_a_missing_reported_checkpoint_is_named_in_one_line_and_leaves_no_logger_file(finished_run, capsys):
    best = next((finished_run / "checkpoints").glob("best-*.ckpt"))
    best.unlink()
    (finished_run / "metrics.json").unlink()  # so the resume tests the run again
    fails_with_one_line(lambda: main(["--resume", str(finished_run)]), capsys, 1,
                        f"{best}, the checkpoint this run reports, is missing (kept: last.ckpt); train on")
    assert not (finished_run / "hparams.yaml").exists() and not (finished_run / "metrics.json").exists()

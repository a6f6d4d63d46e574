"""The judge's curve during training: its collapse test, its picture, its flags, and a collapsed generator caught."""
import math
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import part2_gan.train
import part2_gan.train_aae
from part2_gan.modules import GAN
from part2_gan.networks import DiscriminatorMLP, GeneratorMLP
from shared.judge import DEFAULT_JUDGE_PATH
from shared.judge_curve import JudgeCurveCallback, collapse_message, render_class_histogram
from tests.conftest import assert_fails_fast

UNIFORM = torch.full((10,), 100)
# Before the flags under test: should their check ever let a run start, it is a short one, not a full default run.
SHORT = ["--subset", "64", "--batch_size", "64", "--epochs", "1", "--sample_epochs", "0", "--accelerator", "cpu"]


def test_a_balanced_histogram_is_no_collapse():
    assert collapse_message(UNIFORM, epoch=3) is None
    assert collapse_message(torch.tensor([10, 190, *[100] * 8]), epoch=3) is None  # 1% is still covered


@pytest.mark.parametrize("counts, found", [
    (torch.tensor([100, 100, 100, 100, 100, 100, 100, 5, 100, 100]), "digit 7 in under 1% of them;"),
    (torch.tensor([0, 600, 50, 50, 50, 50, 50, 50, 50, 50]),
     "digit 0 in under 1% of them and digit 1 in 60% (over 50%)"),
    (torch.tensor([51, 51, 51, 51, 51, 51, 51, 51, 51, 541]), "digit 9 in 54% (over 50%)"),
    (torch.tensor([0, 0, 300, 0, 0, 0, 0, 0, 0, 0]), "digits 0, 1, 3, 4, 5, 6, 7, 8, 9 in under 1% of them and digit 2 "
                                                     "in 100%"),
])
def test_a_collapse_names_the_epoch_the_missing_digits_and_the_dominant_one(counts, found):
    message = collapse_message(counts, epoch=12)
    assert message.startswith(f"mode collapse in epoch 12: of {int(counts.sum()):,} fixed-noise samples the judge "
                              f"reads ") and found in message and "\n" not in message


def test_the_histogram_picture_marks_a_collapse_in_red():
    def has_red(picture):
        red = torch.tensor([0xD6, 0x27, 0x28]).view(3, 1, 1) / 255  # matplotlib's tab:red
        return bool(((picture - red).abs().amax(0) < 0.02).any())

    collapsed, balanced = (render_class_histogram(counts, "epoch 1") for counts in (torch.eye(10)[4] * 50, UNIFORM))
    assert collapsed.shape == balanced.shape and collapsed.shape[0] == 3
    assert 0 <= collapsed.min() and collapsed.max() <= 1
    assert has_red(collapsed) and not has_red(balanced)


@pytest.mark.parametrize("command", [part2_gan.train, part2_gan.train_aae], ids=["gan", "aae"])
@pytest.mark.parametrize("flags, message", [
    (["--judge_every", "-1"], "--judge_every must be >= 0 (0: off), got -1"),
    (["--judge_every_samples", "1"], "--judge_every_samples must be at least 2, got 1"),
])
def test_invalid_curve_flags_fail_fast_with_one_line(tmp_path, capsys, command, flags, message):
    assert_fails_fast(lambda: command.main([*SHORT, "--log_dir", str(tmp_path), *flags]), tmp_path, capsys, message)


def test_the_curve_reads_its_judge_before_training_even_without_the_final_evaluation(tmp_path, tmp_path_factory,
                                                                                    capsys):
    corrupt = tmp_path_factory.mktemp("judges") / "judge.ckpt"
    corrupt.write_bytes(DEFAULT_JUDGE_PATH.read_bytes()[:20_000])  # truncated
    curve_only = [*SHORT, "--log_dir", str(tmp_path), "--eval_samples", "0", "--judge", str(corrupt)]
    with pytest.raises(SystemExit) as exit_info:  # a file's problem: status 1, the message as the exit's
        part2_gan.train.main([*curve_only, "--judge_every", "2"])
    assert str(exit_info.value.code).startswith(f"error: judge checkpoint {corrupt} is corrupt or truncated")
    assert not any(tmp_path.iterdir()), "no work may happen before the judge is read"


def test_a_judge_path_that_is_a_folder_is_refused_before_any_work(tmp_path, tmp_path_factory, capsys):
    folder = tmp_path_factory.mktemp("judges")
    assert_fails_fast(lambda: part2_gan.train.main([*SHORT, "--log_dir", str(tmp_path), "--judge", str(folder)]),
                      tmp_path, capsys, f"--judge {folder} is a folder")


class OneImageGenerator(nn.Module):
    """Ignores its latents: every sample is the same image, a generator collapsed onto one mode."""

    def __init__(self, image: torch.Tensor):
        super().__init__()
        self.pre_tanh = nn.Parameter(torch.atanh((image * 2 - 1).clamp(-0.99, 0.99)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.pre_tanh).expand(len(z), 1, 28, 28)


@pytest.mark.filterwarnings("ignore:discriminator collapse")  # a one-image generator fools no discriminator
def test_a_collapsed_generator_is_warned_about_and_shows_in_the_histogram(tiny_datamodule, tiny_judge_path, tmp_path):
    test_images = tiny_datamodule.splits["test"].images
    torch.manual_seed(0)
    gan = GAN(OneImageGenerator(test_images[0]), DiscriminatorMLP(784, [32]), z_dim=8)
    curve = JudgeCurveCallback(every=1, num_samples=100, judge_path=tiny_judge_path)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, logger=TensorBoardLogger(tmp_path, name="", version=""),
                         callbacks=[curve], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    with pytest.warns(UserWarning, match=r"mode collapse in epoch 1: of 100 fixed-noise samples .* in 100% \(over"):
        trainer.fit(gan, tiny_datamodule.train_dataloader())
    counts = curve.history[1]["class_counts"]
    assert counts.sum() == 100 and counts.max() == 100  # one bar holds every sample
    assert math.isfinite(curve.history[1]["frechet_distance"])  # though the samples have no spread
    events = EventAccumulator(str(tmp_path)).Reload()
    assert [(point.step, point.value) for point in events.Scalars("judge_top_class_share")] == [(1, 1.0)]
    assert [point.value for point in events.Scalars("judge_digits_covered")] == [1.0]
    for figure in ("inception_score", "mean_max_prob"):  # one digit drawn: nothing to spread the classes
        assert [p.value for p in events.Scalars(f"judge_{figure}")] == pytest.approx([curve.history[1][figure]])
    assert curve.history[1]["inception_score"] == pytest.approx(1.0, abs=0.05)
    assert [image.step for image in events.Images("judge_class_histogram")] == [1]
    assert "judge_fd_trained_weights" not in events.Tags()["scalars"]  # no weight average to compare with


def test_a_gan_with_a_weight_average_gets_the_trained_generators_curve_beside_it(tiny_datamodule, tiny_judge_path,
                                                                                   tmp_path):
    torch.manual_seed(0)
    gan = GAN(GeneratorMLP(8, [32]), DiscriminatorMLP(784, [32]), z_dim=8, ema_decay=0.9)
    curve = JudgeCurveCallback(every=1, num_samples=100, judge_path=tiny_judge_path)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, logger=TensorBoardLogger(tmp_path, name="", version=""),
                         callbacks=[curve], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a 2-batch generator's samples are no digits: a collapse warning
        trainer.fit(gan, tiny_datamodule.train_dataloader())
    figures = curve.history[1]
    assert figures["frechet_distance_trained_weights"] != figures["frechet_distance"]
    assert gan.sample_from_average  # restored
    events = EventAccumulator(str(tmp_path)).Reload()
    assert [p.value for p in events.Scalars("judge_fd_trained_weights")] == pytest.approx(
        [figures["frechet_distance_trained_weights"]])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:mode collapse")  # after 4 batches its samples are no digits yet
def test_the_aae_command_draws_the_curve(tmp_path, tiny_judge_path):
    part2_gan.train_aae.main(["--subset", "256", "--batch_size", "64", "--epochs", "1", "--sample_epochs", "0",
                              "--accelerator", "cpu", "--devices", "1", "--eval_samples", "0", "--log_dir",
                              str(tmp_path), "--judge", str(tiny_judge_path), "--judge_every", "1",
                              "--judge_every_samples", "100"])
    events = EventAccumulator(str(tmp_path / "aae_gaussian_z2" / "version_0")).Reload()
    assert [point.step for point in events.Scalars("judge_fd")] == [3]

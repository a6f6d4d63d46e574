"""The judge and the sample-quality figures: exact values on known inputs, real beats noise, the bundled judge,
caching, progress lines, the commands."""
import inspect
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from part1_vae.networks import MLPDecoder, MLPEncoder
from part1_vae.modules import VAE
from part2_gan.modules import GAN
from part2_gan.networks import DiscriminatorMLP, GeneratorMLP
from shared.data import MNISTDataModule, load_mnist, to_model_range
from shared.evaluation import (SampleQualityEvaluator, class_figures, draw_samples, per_digit_figures, real_images,
                               to_unit_range)
from shared.judge import (DEFAULT_JUDGE_PATH, DigitClassifier, JudgeFileError, accuracy, fit_judge,
                          load_judge, train_judge)
from shared.progress import Progress
from tests.conftest import fails_with_one_line, heavy_imports_of, load_script


def one_hot_logits(labels):
    return torch.nn.functional.one_hot(torch.as_tensor(labels), 10).float() * 100.0


def test_class_figures_of_confident_balanced_predictions_hit_the_ideal():
    figures = class_figures(one_hot_logits(list(range(10)) * 20))
    assert figures["inception_score"] == pytest.approx(10.0, rel=1e-6)
    assert figures["class_kl_to_uniform"] == pytest.approx(0.0, abs=1e-9)
    assert figures["digits_covered"] == 10 and figures["mean_max_prob"] == pytest.approx(1.0)


def test_class_figures_of_a_single_predicted_digit_are_the_worst_case():
    figures = class_figures(one_hot_logits([3] * 200))
    assert figures["inception_score"] == pytest.approx(1.0, rel=1e-6)
    assert figures["class_kl_to_uniform"] == pytest.approx(math.log(10))
    assert figures["digits_covered"] == 1


def test_the_inception_score_of_few_images_takes_ten_even_splits():
    logits = torch.randn(25, 10, generator=torch.Generator().manual_seed(0))
    probs = logits.double().softmax(1)
    scores = [(part * (part.log() - part.mean(0).log())).sum(1).mean().exp() for part in probs.split([3] * 5 + [2] * 5)]
    assert class_figures(logits)["inception_score"] == pytest.approx(torch.stack(scores).mean().item(), rel=1e-9)


def test_coverage_counts_digits_predicted_for_at_least_one_percent():
    labels = [0] * 985 + [1] * 10 + [2] * 5  # 1.0% counts, 0.5% does not
    assert class_figures(one_hot_logits(labels))["digits_covered"] == 2


def test_uninformative_logits_give_chance_confidence():
    assert class_figures(torch.zeros(50, 10))["mean_max_prob"] == pytest.approx(0.1)


def test_per_digit_figures_split_the_confidence_by_the_digit_named():
    logits = torch.cat([one_hot_logits([1] * 30), torch.zeros(10, 10)])  # 10 images the judge cannot read
    logits[30:, 7] = 1e-6  # ... named 7 by a hair, at chance confidence
    figures = per_digit_figures(logits)
    assert figures["share"][1] == pytest.approx(0.75) and figures["share"][7] == pytest.approx(0.25)
    assert figures["confidence"][1] == pytest.approx(1.0) and figures["confidence"][7] == pytest.approx(0.1)
    assert all(figures["confidence"][digit] is None for digit in (0, 2, 3, 4, 5, 6, 8, 9))
    assert figures["confidence_digits_alike"] == pytest.approx((1.0 + 0.1) / 2)  # the mean max prob is 0.775


def test_to_unit_range_maps_and_rejects_values_outside_the_declared_range():
    assert torch.equal(to_unit_range(torch.tensor([-1.0, 0.0, 1.0]), (-1.0, 1.0)), torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match=r"outside their declared range \[0, 1\]"):
        to_unit_range(torch.tensor([-1.0, 1.0]), (0.0, 1.0))


def test_judge_features_and_logits_shapes():
    judge = DigitClassifier(num_filters=8, feature_dim=32)
    images = torch.rand(5, 1, 28, 28)
    assert judge.features(images).shape == (5, 32) and judge(images).shape == (5, 10)


def test_judge_training_is_deterministic_given_the_seed():
    settings = dict(subset=256, epochs=1, num_filters=4, feature_dim=8)
    first, again, other_seed = fit_judge(**settings), fit_judge(**settings), fit_judge(**settings, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(first.state_dict()["head.1.weight"], other_seed.state_dict()["head.1.weight"])


def test_a_briefly_trained_judge_already_reads_digits(tiny_judge):
    assert tiny_judge[1]["test_accuracy"] > 0.8 and tiny_judge[1]["test_accuracy_binarized"] > 0.8


@pytest.fixture(scope="module")
def real_and_noise_figures(tiny_judge):
    test_images = to_model_range(load_mnist("test")[0][:1000], binarize=False)
    train_images = to_model_range(load_mnist("train")[0][-1000:], binarize=False)  # not seen by the tiny judge
    evaluator = SampleQualityEvaluator(tiny_judge[0], test_images)
    noise = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    return evaluator, evaluator.evaluate(train_images), evaluator.evaluate(noise)


def test_real_images_beat_noise_by_a_wide_margin(real_and_noise_figures):
    _, real, noise = real_and_noise_figures
    assert noise["frechet_distance"] > 20 * real["frechet_distance"]
    assert real["inception_score"] > 2 * noise["inception_score"]
    assert real["digits_covered"] == 10 and noise["digits_covered"] <= 5
    assert real["class_kl_to_uniform"] < 0.05 and noise["class_kl_to_uniform"] > 0.5
    assert real["mean_max_prob"] > noise["mean_max_prob"] + 0.2


def test_frechet_distance_of_the_reference_to_itself_is_zero(real_and_noise_figures):
    evaluator, real, _ = real_and_noise_figures
    test_images = to_model_range(load_mnist("test")[0][:1000], binarize=False)
    assert abs(evaluator.evaluate(test_images)["frechet_distance"]) < 1e-3 * real["frechet_distance"]


def test_the_evaluators_logits_are_the_judges_and_give_its_figures(real_and_noise_figures, tiny_judge):
    evaluator, _, noise_figures = real_and_noise_figures
    noise = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    figures, logits = evaluator.evaluate_with_logits(noise)
    with torch.no_grad():
        assert torch.allclose(logits, tiny_judge[0].eval()(noise), atol=1e-5)
    assert figures == noise_figures and class_figures(logits)["mean_max_prob"] == figures["mean_max_prob"]
    assert evaluator.reference_logits.shape == (1000, 10)


def test_load_judge_reads_the_cache(tiny_judge, tiny_judge_path):
    judge, record = load_judge(tiny_judge_path)
    images = torch.rand(4, 1, 28, 28)
    assert record == tiny_judge[1] and torch.equal(judge(images), tiny_judge[0](images))


def test_load_judge_trains_and_caches_when_missing(tmp_path, monkeypatch, capsys, tiny_judge):
    calls = []
    monkeypatch.setattr("shared.judge.train_judge", lambda **kwargs: calls.append(kwargs) or tiny_judge)
    path = tmp_path / "cache" / "judge.ckpt"
    load_judge(path)
    load_judge(path)
    assert len(calls) == 1 and path.is_file()
    announced = capsys.readouterr().out
    assert f"No judge at {path}: training" in announced and "minutes" in announced and "Judge saved" in announced


@pytest.mark.slow
def test_the_bundled_judge_is_the_default_one_and_reproduces_its_recorded_test_accuracy():
    judge, record = load_judge()
    defaults = {name: parameter.default for name, parameter in inspect.signature(train_judge).parameters.items()
                if name not in ("data_dir", "verbose")}
    assert {name: record[name] for name in defaults} == defaults
    assert record["test_accuracy"] >= 0.99 and record["test_accuracy_binarized"] >= 0.99
    images, labels = load_mnist("test")
    assert accuracy(judge, to_model_range(images, binarize=False), labels) == record["test_accuracy"]
    assert accuracy(judge, to_model_range(images, binarize=True), labels) == record["test_accuracy_binarized"]


def test_the_bundled_judge_loads_without_training(monkeypatch):
    def no_training(**kwargs):
        raise AssertionError("load_judge trained a judge although one is bundled")

    monkeypatch.setattr("shared.judge.train_judge", no_training)
    assert load_judge()[1] == load_judge(DEFAULT_JUDGE_PATH)[1]


@pytest.mark.parametrize("damage", [lambda path: path.write_bytes(DEFAULT_JUDGE_PATH.read_bytes()[:900_000]),
                                    lambda path: path.write_bytes(DEFAULT_JUDGE_PATH.read_bytes()[:20_000]),
                                    lambda path: torch.save({"state_dict": {}}, path)],
                         ids=["truncated", "truncated early", "no record"])
def test_a_damaged_judge_file_fails_with_one_line_naming_the_file_and_the_fix(tmp_path, damage):
    path = tmp_path / "judge.pt"
    damage(path)
    with pytest.raises(JudgeFileError) as error:
        load_judge(path)
    message = str(error.value)
    assert f"judge checkpoint {path} is corrupt or truncated" in message and "\n" not in message
    assert "delete it to retrain" in message and str(DEFAULT_JUDGE_PATH) in message


def test_a_missing_bundled_judge_is_an_error_that_names_the_rebuild_command(tmp_path, monkeypatch):
    monkeypatch.setattr("shared.judge.DEFAULT_JUDGE_PATH", tmp_path / "judge.pt")
    with pytest.raises(JudgeFileError, match=r"bundled judge .*judge.pt is missing: rebuild it with "
                                             r"`python scripts/train_judge.py`"):
        load_judge()


def test_train_judge_command_rebuilds_the_bundled_judge_or_one_elsewhere(tmp_path, monkeypatch, capsys, tiny_judge):
    command = load_script("train_judge")
    monkeypatch.setattr("shared.judge.train_judge", lambda **kwargs: tiny_judge)
    for flag in ("--out", "--path"):  # --path: the old name
        path = tmp_path / flag.strip("-") / "judge.pt"
        with pytest.raises(SystemExit, match="below the required 0.99"):  # the tiny judge reads ~90% of digits
            command.main([flag, str(path), "--force"])
        assert load_judge(path)[1] == tiny_judge[1]
    assert "test accuracy, threshold-binarized MNIST" in capsys.readouterr().out
    written = []
    monkeypatch.setattr("shared.judge.save_judge", lambda judge, record, path: written.append(path))
    with pytest.raises(SystemExit):
        command.main([])
    assert written == [str(DEFAULT_JUDGE_PATH)]


def test_progress_lines_show_the_elapsed_time_and_an_eta(capsys):
    progress = Progress("judging 3 things", 3, "things", first=0, every=0)
    progress.advance()
    progress.report("stage 1 done, ")
    progress.advance(2)
    progress.finish()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("judging 3 things: 1/3 things, ") and "elapsed, ETA " in lines[0]
    assert lines[1].startswith("judging 3 things: stage 1 done, 1/3 things")
    assert lines[2].startswith("judging 3 things: done in ") and len(lines) == 3
    quick = Progress("quick", 3, "things")
    quick.advance(3)
    quick.finish()
    assert capsys.readouterr().out == ""



def fake_clock(monkeypatch, start: float = 100.0) -> dict:
    """A clock for shared.progress that stands still until the test moves it (``now["s"] = ...``)."""
    from types import SimpleNamespace

    import shared.progress

    now = {"s": start}
    monkeypatch.setattr(shared.progress, "time", SimpleNamespace(perf_counter=lambda: now["s"]))
    return now


def test_progress_lines_come_first_then_every_so_often_from_the_last_with_the_time_left(monkeypatch, capsys):
    """The ETA is the time still to go (elapsed per item times the items left), not the whole job's; the next line is
    ``every`` seconds after the last one, not after the start (which printed a line at every item from then on)."""
    now = fake_clock(monkeypatch)
    progress = Progress("scoring", 10, "images", first=2, every=10)
    for moment in (101, 103, 111, 114, 120, 123, 125):
        now["s"] = moment
        progress.advance()
    now["s"] = 130
    progress.advance(3)  # all done: no line (finish says it)
    now["s"] = 131
    progress.finish()
    assert capsys.readouterr().out.splitlines() == [
        "scoring: 2/10 images, 3 s elapsed, ETA 12 s",  # at 103: 1.5 s an image, 8 to go
        "scoring: 4/10 images, 14 s elapsed, ETA 21 s",  # at 114: not at 111, 8 s after the line before
        "scoring: 7/10 images, 25 s elapsed, ETA 11 s",  # at 125 (the next at 124), not at 120 or 123
        "scoring: done in 31 s"]


def test_progress_says_done_once_when_its_last_line_already_counted_everything(monkeypatch, capsys):
    now = fake_clock(monkeypatch)
    progress = Progress("training the judge", 4, "epochs", first=0, every=0)
    now["s"] = 165
    progress.advance(4)
    progress.report("epoch 4/4 done, ")
    progress.finish()
    assert capsys.readouterr().out.splitlines() == [
        "training the judge: epoch 4/4 done, 4/4 epochs, 1 min 05 s elapsed, ETA 0 s"]  # no "done in" after it
    before = Progress("judging", 4, "batches", first=0, every=0)
    before.report()  # nothing done yet: no time left to tell
    now["s"] = 170
    before.advance(4)
    before.finish()
    assert capsys.readouterr().out.splitlines() == ["judging: 0/4 batches, 0 s elapsed, ETA unknown",
                                                    "judging: done in 5 s"]

def test_training_progress_changes_no_weight(capsys):
    settings = dict(subset=256, epochs=2, num_filters=4, feature_dim=8)
    quiet, verbose = fit_judge(**settings), fit_judge(**settings, verbose=True)
    assert all(torch.equal(a, b) for a, b in zip(quiet.state_dict().values(), verbose.state_dict().values()))
    lines = [line for line in capsys.readouterr().out.splitlines() if " epoch " in line]  # not the timed ones
    assert [line.split(",")[0] for line in lines] == ["training the judge: epoch 1/2 done",
                                                      "training the judge: epoch 2/2 done"]
    assert all("elapsed, ETA" in line for line in lines)


def test_scoring_progress_changes_no_figure(real_and_noise_figures):
    evaluator, real, _ = real_and_noise_figures
    train_images = to_model_range(load_mnist("train")[0][-1000:], binarize=False)
    assert evaluator.evaluate(train_images, progress=True) == real


class NoiseModel(torch.nn.Module):
    """Uniform noise images, shifted by ``low``: a model that keeps to [0, 1] only when ``low`` is 0."""

    def __init__(self, low: float = 0.0):
        super().__init__()
        self.low = low

    def sample(self, n):
        return torch.rand(n, 1, 28, 28) + self.low


def test_draw_samples_is_reproducible_and_keeps_the_global_random_state_and_each_modules_mode():
    model = NoiseModel().train()
    model.frozen = torch.nn.BatchNorm1d(2).eval()  # a part kept in eval mode stays there (train() set it training)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = draw_samples(model, 250, seed=5, batch_size=100)
    assert torch.equal(torch.rand(1), expected_next)
    assert torch.equal(first, draw_samples(model, 250, seed=5))
    assert first.shape == (250, 1, 28, 28) and first.min() >= 0 and first.max() <= 1
    assert model.training and not model.frozen.training


def test_draw_samples_rejects_samples_outside_the_unit_range_and_means_a_model_lacks():
    with pytest.raises(ValueError, match=r"samples lie in \[-1, .*\], outside their declared range \[0, 1\]"):
        draw_samples(NoiseModel(low=-1.0), 10)
    with pytest.raises(ValueError, match="NoiseModel has no means to sample"):
        draw_samples(NoiseModel(), 10, means=True)


def test_the_evaluator_refuses_images_outside_the_unit_range(tiny_judge):
    """As draw_samples does: a GAN's raw [-1, 1] output scored Fréchet 728 against 19 for the same images (QA)."""
    real = real_images("test", binarized=False, count=50)
    evaluator = SampleQualityEvaluator(tiny_judge[0], real)
    with pytest.raises(ValueError, match=r"samples lie in \[-1, 1\], outside their declared range \[0, 1\]"):
        evaluator.evaluate(real * 2 - 1)
    assert evaluator.evaluate(real)["frechet_distance"] < 1e-3


def test_draw_samples_takes_the_vae_samples_or_the_means_of_the_same_draws():
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(784, [32], 4), MLPDecoder(4, [32]), z_dim=4)
    samples = draw_samples(vae, 64)
    means = draw_samples(vae, 64, means=True)
    torch.manual_seed(0)  # draw_samples' seed: the latents, then the pixels drawn from their means
    with torch.no_grad():
        expected_means = torch.sigmoid(vae.decoder(torch.randn(64, 4)))
        expected_samples = torch.bernoulli(expected_means)
    assert torch.equal(means, expected_means) and torch.equal(samples, expected_samples)
    assert set(samples.unique().tolist()) <= {0.0, 1.0} and len(means.unique()) > 2


@pytest.mark.slow
def test_evaluate_command_scores_a_vae_run_against_binarized_mnist(tmp_path, tiny_judge_path, capsys):
    from part1_vae.train import build_model, build_parser

    run_dir = tmp_path / "vae_mlp_z2" / "version_0"
    (run_dir / "checkpoints").mkdir(parents=True)
    config = {"command": "part1_vae.train", "model": "mlp", "z_dim": 2, "hidden_dims": [32], "seed": 42,
              "iw_samples": 5}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    args = build_parser().parse_args([])
    vars(args).update(config)
    vae = build_model(args)
    torch.save({"state_dict": vae.state_dict()}, run_dir / "checkpoints" / "last.ckpt")
    out = tmp_path / "figures.json"
    results = load_script("evaluate").main([str(run_dir), "--num_samples", "300", "--judge", str(tiny_judge_path),
                                           "--json", str(out), "--per_digit"])
    assert results["reference"] == "threshold-binarized" and results["num_samples"] == 300
    assert json.loads(out.read_text()) == results
    assert sum(results["per_digit"]["share"]) == pytest.approx(1.0)
    # The judge reads the test images: its shares follow their labels'.
    labels = load_mnist("test")[1]
    label_shares = torch.bincount(labels, minlength=10).double() / len(labels)
    assert torch.allclose(torch.tensor(results["real_per_digit"]["share"], dtype=torch.float64), label_shares, atol=0.03)
    printed = capsys.readouterr().out
    assert "Loaded VAE" in printed and "Per digit (as the judge names it)" in printed
    assert f"{results['per_digit']['confidence_digits_alike']:.4f}" in printed.split("digits weighted alike")[1]
    # A model of dynamically binarized MNIST is compared with the dynamically binarized test set its run tested on.
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "binarization": "dynamic"}))
    dynamic = load_script("evaluate").main([str(run_dir), "--num_samples", "300", "--judge", str(tiny_judge_path)])
    assert dynamic["reference"] == "dynamically binarized" and "300 samples against the 10,000 dynamically binarized" \
        in capsys.readouterr().out
    assert dynamic["real_frechet_distance"] != results["real_frechet_distance"]


def test_the_dynamically_binarized_reference_is_the_test_set_a_dynamic_run_tests_on():
    datamodule = MNISTDataModule(binarization="dynamic")
    datamodule.setup("test")
    assert torch.equal(real_images("test", True, dynamic=True), datamodule.splits["test"].images)
    assert set(real_images("train", True, count=50, seed=3, dynamic=True).unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(real_images("test", True, dynamic=True), real_images("test", True))


@pytest.mark.slow
def test_evaluate_command_samples_a_flow_at_the_temperature_asked(tmp_path, tiny_judge_path, capsys):
    from part3_flows.layers import ActNorm
    from part3_flows.train import build_model, build_parser

    run_dir = tmp_path / "flow_mnist" / "version_0"
    (run_dir / "checkpoints").mkdir(parents=True)
    config = {"task": "mnist", "num_channels": 8, "num_blocks": 1, "temperature": 0.7}
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"command": "part3_flows.train", **config}))
    args = build_parser().parse_args([])
    vars(args).update(config)
    flow = build_model(args)
    with torch.no_grad():  # a fresh flow's samples are sign(z): no temperature changes them; a shift does
        for module in flow.modules():
            if isinstance(module, ActNorm):
                module.bias.fill_(1.0)
    torch.save({"state_dict": flow.state_dict()}, run_dir / "checkpoints" / "last.ckpt")
    evaluate = load_script("evaluate").main
    common = [str(run_dir), "--num_samples", "200", "--judge", str(tiny_judge_path)]
    at_run, colder = evaluate(common), evaluate([*common, "--temperature", "0.1", "--grid", str(tmp_path / "grid.png")])
    assert (tmp_path / "grid.png").is_file()
    assert (at_run["temperature"], colder["temperature"]) == (0.7, 0.1)
    assert at_run["reference"] == "threshold-binarized"
    assert colder["frechet_distance"] != at_run["frechet_distance"]
    # Each says how it was made (its JSON and its table's title), so that the same call can make it again.
    assert {key: colder[key] for key in ("checkpoint", "seed", "raw_weights", "means")} == {
        "checkpoint": "last.ckpt", "seed": 0, "raw_weights": False, "means": False}
    assert f"Sample quality of {run_dir} (last.ckpt, temperature 0.1; seed 0; judge" in capsys.readouterr().out


@pytest.mark.slow
def test_evaluate_command_scores_a_gans_weight_average_or_on_request_its_trained_generator(tmp_path, tiny_judge_path,
                                                                                          capsys):
    from part2_gan.train import main as train_gan

    judged = ["--num_samples", "200", "--judge", str(tiny_judge_path), "--seed", "3"]
    train_gan(["--subset", "256", "--batch_size", "64", "--epochs", "1", "--sample_epochs", "0", "--eval_samples",
               "200", "--judge_every", "0", "--judge", str(tiny_judge_path), "--log_dir", str(tmp_path),
               "--ema_decay", "0.9", "--accelerator", "cpu", "--seed", "3"])
    run_dir = str(tmp_path / "gan_mlp" / "version_0")
    metrics = json.loads((tmp_path / "gan_mlp" / "version_0" / "metrics.json").read_text())
    evaluate = load_script("evaluate").main
    averaged, raw = evaluate([run_dir, *judged]), evaluate([run_dir, *judged, "--raw_weights"])
    assert averaged["frechet_distance"] == pytest.approx(metrics["eval_frechet_distance"], rel=1e-6)
    assert raw["frechet_distance"] != averaged["frechet_distance"]
    train_gan(["--subset", "64", "--batch_size", "64", "--epochs", "1", "--sample_epochs", "0", "--eval_samples", "0",
               "--judge_every", "0", "--log_dir", str(tmp_path / "plain"), "--accelerator", "cpu"])
    capsys.readouterr()
    for flags, message in [(["--raw_weights"], "keeps no weight average"),
                           (["--test_likelihood"], "--test_likelihood: GAN defines no likelihood"),
                           (["--means"], "--means: GAN samples no means"),
                           (["--test_likelihood", "--test_draws", "2"], "--test_draws: GAN draws no dequantization")]:
        plain = str(tmp_path / "plain" / "gan_mlp" / "version_0")
        fails_with_one_line(lambda: evaluate([plain if flags == ["--raw_weights"] else run_dir, *judged, *flags]),
                            capsys, 2, message)


@pytest.mark.slow
def test_evaluate_command_scores_a_flows_weight_average_or_on_request_its_trained_weights(tmp_path, tiny_judge_path,
                                                                                        capfd):
    from part3_flows.train import main as train_flow
    from shared.runs import load_run

    metrics = train_flow(["--task", "mnist", "--subset", "128", "--batch_size", "32", "--num_channels", "8",
                          "--num_blocks", "1", "--test_dequant_samples", "1", "--sample_epochs", "0", "--epochs", "1",
                          "--ema_decay", "0.9", "--log_dir", str(tmp_path), "--accelerator", "cpu"])
    run_dir = tmp_path / "flow_mnist_c8_b1_s2_vardeq" / "version_0"
    model = load_run(run_dir)[0]
    assert model.keeps_weight_average and model.bpd(-model.log_likelihood(model.interpolation_ends[0], 1)).mean() < 2
    judged = [str(run_dir), "--num_samples", "200", "--judge", str(tiny_judge_path), "--seed", "3"]
    evaluate = load_script("evaluate").main
    averaged, raw = evaluate([*judged, "--test_likelihood"]), evaluate([*judged, "--test_likelihood", "--raw_weights"])
    assert raw["frechet_distance"] != averaged["frechet_distance"]
    assert averaged["test_bpd"] == pytest.approx(metrics["test_bpd"], rel=1e-6)  # the run's own test stage, again
    assert raw["test_bpd"] != pytest.approx(averaged["test_bpd"], rel=1e-4)
    assert metrics["test_bpd"] < metrics["train_loss_first_step"]
    capfd.readouterr()
    more_draws = evaluate([*judged, "--test_likelihood", "--test_draws", "3"])
    assert "Tip:" not in "".join(capfd.readouterr())  # Lightning's noise stays out, as in a run
    assert more_draws["test_iw_bpd"] < more_draws["test_bpd"] and more_draws["test_bpd"] != metrics["test_bpd"]


@pytest.mark.parametrize("argv, status, message", [
    (["{tmp}"], 1, "is not a run directory: no config.yaml there"),
    (["{tmp}", "--num_samples", "1"], 2, "--num_samples must be at least 2"),
    (["{tmp}", "--temperature", "0"], 2, "--temperature must be positive"),
    (["{tmp}", "--temperature", "nan"], 2, "--temperature must be positive and finite, got nan"),  # MKL crashed
    (["{tmp}", "--temperature", "inf"], 2, "--temperature must be positive and finite, got inf"),
    (["{tmp}", "--seed", "-1"], 2, "--seed must be in [0, 2**32 - 1], got -1"),
    pytest.param(["{tmp}", "--json", "/proc/figures.json"], 2, "--json /proc/figures.json: /proc takes no new file",
                 marks=pytest.mark.skipif(not Path("/proc").is_dir(), reason="a folder no one writes in: Linux's")),
    (["{tmp}", "--test_draws", "8"], 2, "--test_draws comes with --test_likelihood"),
    (["{tmp}", "--test_likelihood", "--test_draws", "0"], 2, "--test_draws must be at least 1"),
    (["{tmp}", "--json", "{tmp}/missing/figures.json"], 2, "there is no folder {tmp}/missing to write it in"),
    (["{tmp}", "--json", "{tmp}"], 2, "--json {tmp} is a folder: pass a file name"),
    (["{tmp}", "--grid", "{tmp}/grid.jpeg"], 2, "the grid is a PNG; pass a name ending in .png"),
    (["{tmp}", "--judge", "{tmp}"], 2, "argument --judge: {tmp} is a folder: pass a judge checkpoint file"),
])
def test_evaluate_command_errors(tmp_path, capsys, argv, status, message):
    fails_with_one_line(lambda: load_script("evaluate").main([a.format(tmp=tmp_path) for a in argv]), capsys, status,
                        message.format(tmp=tmp_path))


def test_evaluate_help_and_a_refused_flag_answer_before_torch_or_lightning_is_imported(tmp_path):
    """As the training commands' (test_cli): seconds of imports are not spent on --help or a mistyped flag."""
    imported, done = heavy_imports_of(
        "import runpy\n"
        f"for argv in (['--help'], [{str(tmp_path)!r}, '--num_samples', '1']):\n"
        "    sys.argv = ['scripts/evaluate.py', *argv]\n"
        "    try:\n        runpy.run_path('scripts/evaluate.py', run_name='__main__')\n"
        "    except SystemExit as stop:\n        assert stop.code in (0, 2), stop.code")
    assert imported == [], done.stderr[-2000:]
    assert "(default: 10000)" in done.stdout and "--num_samples must be at least 2, got 1" in done.stderr


def test_evaluate_given_a_runs_name_names_its_runs(tmp_path, capsys):
    """``runs/gan_int`` for ``runs/gan_int/version_0``: the one-line error says which folders are runs."""
    for version in (0, 1, 10):
        (tmp_path / "gan" / f"version_{version}").mkdir(parents=True)
    runs = ", ".join(f"{tmp_path}/gan/version_{version}" for version in (0, 1, 10))  # in the order they were made
    fails_with_one_line(lambda: load_script("evaluate").main([str(tmp_path / "gan")]), capsys, 1,
                        f"no config.yaml there; pass one of its runs: {runs}")


@pytest.mark.parametrize("config, message", [
    ("model: mlp\nz_dim: 3\n", "names no command; add the line 'command: <module>'"),
    ("command:\n", "names no command; add the line 'command: <module>'"),
    ("command: 3\n", "names no command; add the line 'command: <module>'"),
    ("command: .train\n", "command '.train' of {tmp}/config.yaml does not import"),
    ("command: part9.train\n", "no command 'part9.train' here; a package of your own joins pyproject.toml's "
                              "[tool.setuptools.packages.find] include"),
    ("command: broken_command\n", "command 'broken_command' of {tmp}/config.yaml does not import: No module named "
                                 "'no_such_package_here'"),
    ("command: shared.cli\n", "'shared.cli' is not a training command of this project (it has no build_parser())"),
    ("command: part1_vae.train\nnum_layers: 3\n", "unknown setting(s) num_layers"),
])
def test_evaluate_command_rejects_a_run_it_cannot_rebuild(tmp_path, monkeypatch, config, message):
    (tmp_path / "broken_command.py").write_text("import no_such_package_here\n")  # a command whose own import fails
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "config.yaml").write_text(config)
    with pytest.raises(SystemExit) as exit_info:
        load_script("evaluate").main([str(tmp_path)])
    assert message.format(tmp=tmp_path) in str(exit_info.value.code)


@pytest.mark.slow
def test_evaluate_command_reads_each_value_of_a_gans_categorical_code(tmp_path, tiny_judge_path, capsys):
    from part2_gan.train import main as train_gan

    tiny = ["--subset", "64", "--batch_size", "64", "--epochs", "1", "--sample_epochs", "0", "--eval_samples", "0",
            "--judge_every", "0", "--accelerator", "cpu"]
    train_gan([*tiny, "--categorical_code", "3", "--log_dir", str(tmp_path)])
    judged = ["--num_samples", "90", "--judge", str(tiny_judge_path)]
    evaluate = load_script("evaluate").main
    results = evaluate([str(tmp_path / "gan_mlp_code3" / "version_0"), *judged, "--per_code"])
    assert len(results["per_code"]) == 3
    for figures in results["per_code"]:
        assert sum(figures["share"]) == pytest.approx(1.0) and 0.1 <= figures["mean_max_prob"] <= 1.0
    assert "Per code value (30 samples each" in capsys.readouterr().out
    code_run = str(tmp_path / "gan_mlp_code3" / "version_0")
    fails_with_one_line(lambda: evaluate([code_run, "--num_samples", "2", "--per_code"]),
                        capsys, 2, "--per_code: --num_samples 2 leaves no sample for each of the 3 code values")
    train_gan([*tiny, "--log_dir", str(tmp_path)])  # a plain GAN's runs are apart from the code's (compare.py's pick)
    fails_with_one_line(lambda: evaluate([str(tmp_path / "gan_mlp" / "version_0"), *judged, "--per_code"]),
                        capsys, 2, "has no categorical code (trained without --categorical_code)")


def test_a_gan_samples_with_the_code_value_asked_for(monkeypatch):
    gan = GAN(GeneratorMLP(35), DiscriminatorMLP(num_outputs=4), z_dim=32, num_categories=3)
    seen = []
    monkeypatch.setattr(gan, "sample", lambda n, z: seen.append(z) or torch.zeros(n, 1, 28, 28))
    gan.sample_with_code(5, 2)
    assert torch.equal(seen[0][:, 32:], torch.tensor([[0.0, 0.0, 1.0]] * 5))
    with pytest.raises(ValueError, match="code 3 outside the categorical code's 3 values"):
        gan.sample_with_code(5, 3)


def vae_run_dir(tmp_path, **settings):
    """A VAE run directory as training leaves it, without the training: its config.yaml, and the builder of its
    model (weights to save as its checkpoints)."""
    from part1_vae.train import build_model, build_parser

    run_dir = tmp_path / "vae_mlp_z2" / "version_0"
    (run_dir / "checkpoints").mkdir(parents=True)
    config = {"command": "part1_vae.train", "model": "mlp", "z_dim": 2, "hidden_dims": [16], **settings}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    args = build_parser().parse_args([])
    vars(args).update(config)
    return run_dir, lambda: build_model(args)


def test_a_finished_runs_model_has_the_weights_of_the_checkpoint_its_metrics_json_names(tmp_path):
    """The VAE reports its best epoch by validation (metrics.json's "checkpoint"): evaluate.py and compare.py score
    that one, not last.ckpt; a run not finished has only last.ckpt to give."""
    from shared.runs import checkpoint_of, load_run

    run_dir, build = vae_run_dir(tmp_path)
    saved = {}
    for seed, name in [(0, "best-epoch001.ckpt"), (1, "last.ckpt")]:
        torch.manual_seed(seed)
        saved[name] = build().state_dict()
        torch.save({"state_dict": saved[name]}, run_dir / "checkpoints" / name)
    (run_dir / "metrics.json").write_text(json.dumps({"epochs": 2, "checkpoint": "best-epoch001.ckpt"}))

    def loaded_from(name):
        weights = load_run(run_dir)[0].state_dict()
        return all(torch.equal(weights[key], value) for key, value in saved[name].items())

    assert checkpoint_of(run_dir) == run_dir / "checkpoints" / "best-epoch001.ckpt"
    assert loaded_from("best-epoch001.ckpt") and not loaded_from("last.ckpt")
    (run_dir / "metrics.json").unlink()
    assert checkpoint_of(run_dir) == run_dir / "checkpoints" / "last.ckpt" and loaded_from("last.ckpt")


@pytest.mark.parametrize("binarization, reference, binarized, dynamic, label", [
    ("threshold", "auto", True, False, "threshold-binarized"),
    ("dynamic", "auto", True, True, "dynamically binarized"),
    ("threshold", "dynamic", True, True, "dynamically binarized"),  # scored as grey by a mutant: no test ran it
    ("dynamic", "binarized", True, False, "threshold-binarized"),
    ("dynamic", "grey", False, False, "8-bit grey"),
])
def test_evaluate_compares_the_samples_with_the_mnist_reference_says(tmp_path, monkeypatch, binarization, reference,
                                                                      binarized, dynamic, label):
    """--reference auto: the MNIST the run trained on; otherwise the one named (binarized: by threshold), the JSON
    saying which. The judge's work is stubbed: only the choice is under test."""
    import shared.evaluation
    import shared.judge
    from shared.data import variant_name

    run_dir, build = vae_run_dir(tmp_path, binarization=binarization)
    torch.save({"state_dict": build().state_dict()}, run_dir / "checkpoints" / "last.ckpt")
    asked = []

    def evaluate_samples(judge, samples, binarized=False, dynamic=False, **kwargs):
        asked.append((binarized, dynamic))
        return {**dict.fromkeys(shared.evaluation.FIGURES, 0.5),
                **dict.fromkeys([f"real_{name}" for name in shared.evaluation.FIGURES], 0.5),
                "num_samples": len(samples), "reference": variant_name(binarized, dynamic)}

    monkeypatch.setattr(shared.evaluation, "evaluate_samples", evaluate_samples)
    monkeypatch.setattr(shared.judge, "load_judge", lambda path, data_dir: (None, {"test_accuracy": 0.9}))
    out = tmp_path / "figures.json"
    load_script("evaluate").main([str(run_dir), "--num_samples", "4", "--reference", reference, "--json", str(out)])
    assert asked == [(binarized, dynamic)]
    assert json.loads(out.read_text())["reference"] == label


def test_a_code_whose_every_value_draws_one_digit_matches_one_digit_not_all():
    """The mean share of each value's most read digit is 1 for a code the generator ignores; InfoGAN's figure, the
    share under the best one-to-one matching of values to digits, is 0.1 there (QA)."""
    matching = load_script("evaluate").code_digit_matching
    ignored = [[1.0 if digit == 3 else 0.0 for digit in range(10)] for _ in range(10)]
    assert matching(ignored) == (pytest.approx(0.1), 1)
    found = [[0.8 if digit == (value + 1) % 10 else 0.2 / 9 for digit in range(10)] for value in range(10)]
    assert matching(found) == (pytest.approx(0.8), 10)


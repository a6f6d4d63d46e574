"""The model contract (shared.generative): a model written against it alone trains with the shared runner,
and evaluate.py and compare.py score it with no line of theirs that knows it.

This file is also the new model's command (``python -m tests.test_generative``): a network, a
LightningModule and the four functions every train command has. The README's "Adding a model"
walks through it.
"""
import argparse
import inspect
import json
import runpy
import signal
import sys
from typing import Sequence

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shared.cli import make_parser, parse_args
from shared.data import MNISTDataModule
from shared.densities import bernoulli_nll
from shared.experiment import run_experiment
from shared.generative import GenerativeModel, check_contract, sample_count
from shared.lean_lightning import check_grouped_training
from shared.process import run_script
from shared.metrics import EpochMeans, StagedModule
from shared.runs import load_run
from shared.schedules import adam
from shared.utils import make_grid
from tests.conftest import load_script


class PixelLogits(nn.Module):
    """The network: one Bernoulli logit per pixel, shared by every image."""

    def __init__(self, image_shape=(1, 28, 28)):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(image_shape))

    def forward(self, n: int) -> torch.Tensor:
        return self.logits.expand(n, *self.logits.shape)


class IndependentPixels(GenerativeModel, StagedModule):
    """Every pixel an independent coin: the simplest model of binary MNIST with an exact likelihood."""

    data = "binary"
    likelihood_kind = "exact"
    likelihood_metric = "test_bpd"
    training_loss = "negative log-likelihood, bits per dimension"

    def __init__(self, network: nn.Module, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters(ignore=["network"], logger=False)
        self.network = network
        self.epoch_means = EpochMeans(("train", "val", "test"), ["nll"])

    def log_likelihood(self, images: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        return -bernoulli_nll(self.network(len(images)), images)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(self.network(sample_count(n))))

    def step(self, stage: str, batch) -> torch.Tensor:
        nll = -self.log_likelihood(batch[0])
        self.epoch_means.add(stage, {"nll": nll})
        return self.bpd(nll).mean()

    def log_epoch(self, stage: str) -> None:
        nll = self.epoch_means.compute_and_reset(stage)[f"{stage}_nll"]
        self.log_dict({f"{stage}_nll": nll, f"{stage}_bpd": self.bpd(nll)})

    def configure_optimizers(self):
        return adam(self.parameters(), self, lr=self.hparams.lr)

    @torch.no_grad()
    def logged_images(self) -> dict[str, torch.Tensor]:
        return {"samples": make_grid(self.sample(64))}


def build_parser() -> argparse.ArgumentParser:
    return make_parser("tests.test_generative", __doc__, epochs=2, lr=0.05, batch_size=128)


def check(args: argparse.Namespace) -> None:
    pass


def default_name(args: argparse.Namespace) -> str:
    return "independent_pixels"


def build_model(args: argparse.Namespace) -> IndependentPixels:
    return IndependentPixels(PixelLogits(), lr=args.lr)


def build_datamodule(args: argparse.Namespace) -> MNISTDataModule:
    return MNISTDataModule(args.data_dir, args.batch_size, args.num_workers, args.seed, subset=args.subset,
                           batches_per_call=args.batches_per_call)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(build_parser(), argv, check, default_name)
    pl.seed_everything(args.seed, verbose=False)
    return run_experiment(args, build_model(args), build_datamodule(args), monitor="val_bpd")


def test_the_contract_refuses_a_model_without_sample():
    class NoSample(GenerativeModel):
        pass

    with pytest.raises(TypeError, match="abstract method .*sample"):
        NoSample()


@pytest.mark.parametrize("declared, message", [
    ({"data": "binarized"}, "IndependentPixels.data must be one of binary, grey, 8bit, got 'binarized'"),
    ({"training_loss": None}, "IndependentPixels must declare training_loss"),
    ({"logged_images": None}, "IndependentPixels must define logged_images()"),
    ({"likelihood_metric": None}, "a model that defines log_likelihood declares likelihood_kind and likelihood_metric"),
    ({"likelihood_kind": None}, "a model that defines log_likelihood declares likelihood_kind and likelihood_metric"),
])
def test_a_run_refuses_a_model_that_misses_a_declaration_before_it_trains(tmp_path, monkeypatch, declared, message):
    for name, value in declared.items():
        monkeypatch.setattr(IndependentPixels, name, value)
    with pytest.raises(TypeError) as refused:
        main(["--subset", "64", "--log_dir", str(tmp_path), "--accelerator", "cpu"])
    assert message in str(refused.value) and not list(tmp_path.iterdir())  # found after the fit until 2026-12-07


def test_a_run_refuses_a_model_that_trains_one_batch_a_call_where_the_data_come_several_before_it_trains(tmp_path,
                                                                                                       monkeypatch):
    class OneBatchACall(GenerativeModel, pl.LightningModule):  # Lightning's own way: one batch, its step done for it
        training_loss = "negative log-likelihood, nats"

        def __init__(self, network: nn.Module, lr: float):
            super().__init__()
            self.network = network

        def sample(self, n: int) -> torch.Tensor:
            return torch.zeros(n, 1, 28, 28)

        def logged_images(self) -> dict[str, torch.Tensor]:
            return {}

    monkeypatch.setattr(sys.modules[__name__], "IndependentPixels", OneBatchACall)
    with pytest.raises(TypeError, match="OneBatchACall trains on one batch a call of training_step, and the data "
                                        "module serves 8: subclass shared.lean_lightning.GroupedTraining"):
        main(["--subset", "64", "--log_dir", str(tmp_path), "--accelerator", "cpu"])
    assert not list(tmp_path.iterdir())
    check_grouped_training(OneBatchACall(PixelLogits(), 0.1), MNISTDataModule(batches_per_call=1))  # one a call: fine


@pytest.mark.parametrize("schedule", [{"interval": "step"}, {"interval": "epoch", "frequency": 2}])
def test_a_module_that_trains_in_train_batch_refuses_a_schedule_it_would_step_otherwise(tmp_path, monkeypatch, schedule):
    """It steps a schedule once an epoch, as automatic optimization steps one of interval "epoch"."""
    def configure_optimizers(self):
        optimizer = adam(self.parameters(), self, lr=0.05)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1), **schedule}}

    monkeypatch.setattr(IndependentPixels, "configure_optimizers", configure_optimizers)
    with pytest.raises(TypeError, match="IndependentPixels: a learning-rate schedule of a GroupedTraining module is "
                                        "stepped once an epoch by it"):
        main(["--subset", "64", "--log_dir", str(tmp_path), "--accelerator", "cpu", "--sample_epochs", "1"])


def test_every_model_of_the_project_passes_the_runs_check():
    for name, model in every_model().items():
        check_contract(model)


def every_model() -> dict[str, pl.LightningModule]:
    """One small model of each of the project's commands, built as the command builds it."""
    from part1_vae.train import build_model as vae
    from part1_vae.train_mixture import build_model as mixture
    from part2_gan.train import build_model as gan
    from part2_gan.train_aae import build_model as aae
    from part3_flows.train import build_model as flow

    def args_of(command, *flags):
        return parse_args(command.build_parser(), list(flags), command.check, command.default_name,
                          getattr(command, "task_defaults", None))

    import part1_vae.train, part1_vae.train_mixture, part2_gan.train, part2_gan.train_aae, part3_flows.train  # noqa
    models = {"vae": vae(args_of(part1_vae.train, "--hidden_dims", "32", "--iw_samples", "4")),
              "vae_gaussian": vae(args_of(part1_vae.train, "--hidden_dims", "32", "--likelihood", "gaussian")),
              "mixture": mixture(args_of(part1_vae.train_mixture)),
              "gan": gan(args_of(part2_gan.train, "--hidden_dims_gen", "16", "--hidden_dims_disc", "16")),
              "dcgan": gan(args_of(part2_gan.train, "--model", "dcgan", "--num_filters", "4")),
              "aae": aae(args_of(part2_gan.train_aae, "--hidden_dim", "16")),
              "flow": flow(args_of(part3_flows.train, "--task", "mnist", "--num_channels", "4", "--num_blocks", "1",
                                   "--lr_final", "none"))}
    return models


def test_every_model_keeps_the_contract(tiny_datamodule):
    """Each model of the project samples [0, 1] images of its declared shape, and a likelihood, where it
    has one, agrees with the test figure its metrics.json reports under ``likelihood_metric``."""
    images = tiny_datamodule.splits["test"].images[:4]
    for name, model in every_model().items():
        model.eval()
        samples = model.sample(3)
        assert samples.shape == (3, *model.image_shape) and 0 <= samples.min() and samples.max() <= 1, name
        for count in (0, -1):  # torch's errors, a different one for each model, or for some an empty batch
            with pytest.raises(ValueError, match=rf"sample\(n\): n must be at least 1, got {count}"):
                model.sample(count)
        with pytest.raises(ValueError, match=r"sample\(n\): n must be a whole number of images, got True"):
            model.sample(True)  # one image, until 2026-12-07
        if "z" in inspect.signature(model.sample).parameters:  # latents given: as many images as n says (QA)
            with pytest.raises(ValueError, match=r"sample\(n, z\): n is 3 but z holds 5 latents"):
                model.sample(3, z=torch.zeros(5, *model.fixed_z.shape[1:]))
        assert model.data in ("binary", "grey", "8bit") and model.num_dims == 784, name
        if model.likelihood_kind is None:
            with pytest.raises(NotImplementedError):
                model.log_likelihood(images)
            continue
        data = images if model.data == "binary" else torch.round(images * 255) / 255
        torch.manual_seed(0)
        log_p = model.log_likelihood(data)
        assert log_p.shape == (4,) and torch.isfinite(log_p).all() and (log_p <= 0).all(), name
        # From the same seed (the loader's own generator draws none from it), the flow's test stage draws the same
        # dequantization noise, the VAE's other noise for its bound (0.001 bpd apart here); a term missing either
        # way (the Gaussian's D log 256 is 8 bits a dimension) would not agree.
        torch.manual_seed(0)
        loader = DataLoader(TensorDataset(data, torch.zeros(4, dtype=torch.long)), 4, generator=torch.Generator())
        tested = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                            ).test(model, loader, verbose=False)[0]
        assert model.bpd(-log_p).mean().item() == pytest.approx(tested[model.likelihood_metric], abs=0.02), name


def test_every_optimizer_of_every_model_is_fused_on_the_cpu():
    """torch's fused Adam: one kernel for all of a model's tensors rather than a few small ops per tensor (the
    flow has 160 of them)."""
    for name, model in every_model().items():
        optimizers = model.configure_optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        assert optimizers and all(optimizer.defaults["fused"] for optimizer in optimizers), name


@pytest.mark.slow
def test_a_new_model_trains_and_is_evaluated_and_compared_through_the_contract(tmp_path, tiny_judge_path, monkeypatch,
                                                                                capsys):
    # As a person runs it (`python -m tests.test_generative ...`): this file's main block, in this process (a new
    # process would spend 10 s importing Lightning).
    monkeypatch.setattr(sys, "argv", ["tests.test_generative", "--subset", "256", "--sample_epochs", "0", "--log_dir",
                                      str(tmp_path / "runs"), "--accelerator", "cpu", "--devices", "1"])
    ctrl_c = signal.getsignal(signal.SIGINT)
    try:
        runpy.run_path(__file__, run_name="__main__")
    finally:
        signal.signal(signal.SIGINT, ctrl_c)  # as run_script found it
    assert "epoch 1/" in capsys.readouterr().out
    run_dir = tmp_path / "runs" / "independent_pixels" / "version_0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_bpd"] < metrics["train_loss_first_step"] == pytest.approx(1.0)
    model, command, _ = load_run(run_dir)  # rebuilt by the command its config.yaml names: this file
    assert command.__name__ == "tests.test_generative" and type(model).__name__ == "IndependentPixels"

    figures = load_script("evaluate").main([str(run_dir), "--num_samples", "200", "--judge", str(tiny_judge_path),
                                            "--test_likelihood"])
    assert figures["reference"] == "threshold-binarized" and figures["num_samples"] == 200
    assert figures["test_bpd"] == pytest.approx(metrics["test_bpd"], abs=1e-6)  # its test stage again

    compare = load_script("compare")
    spec = compare.Model("pixels", "independent pixels", "pixels", "independent_pixels", "tests.test_generative")
    report = compare.main(["--log_dir", str(tmp_path / "runs"), "--out", str(tmp_path / "reports"),
                           "--num_samples", "200", "--frankenstein", "40", "--judge", str(tiny_judge_path)],
                          specs=(spec,)).read_text()
    likelihood_row = next(line for line in report.splitlines() if line.startswith("| independent pixels | 0."))
    assert f"{metrics['test_bpd']:.4f}" in likelihood_row and "| exact |" in likelihood_row
    assert "## Sample quality" in report and "## Frankenstein digits" in report
    assert json.loads((run_dir / "metrics.json").read_text())["train_loss"] == IndependentPixels.training_loss


if __name__ == "__main__":
    run_script(main)

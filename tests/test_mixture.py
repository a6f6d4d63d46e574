import itertools
import math

import pytest
import torch

from part1_vae.modules import MixtureModule
from part1_vae.networks import BernoulliMixture
from part1_vae.train_mixture import main
from shared.frankenstein import frankenstein_auroc, frankenstein_digits
from tests.conftest import assert_fails_fast


def brute_force_log_prob(model: BernoulliMixture, x: torch.Tensor) -> torch.Tensor:
    """sum_k p(k) prod_d p(x_d | k), in float64 products."""
    weights = torch.softmax(model.mixture_logits.double(), 0)
    probs = torch.sigmoid(model.pixel_logits().double())
    x = x.flatten(1).double()
    likelihood = (probs[None] ** x[:, None] * (1 - probs[None]) ** (1 - x[:, None])).prod(-1)
    return torch.log((likelihood * weights).sum(-1))


def test_log_prob_matches_brute_force_on_a_tiny_model():
    torch.manual_seed(0)
    model = BernoulliMixture(num_components=3, image_shape=(1, 2, 3))
    with torch.no_grad():
        model.component_logits.normal_()
        model.pixel_bias.normal_()
        model.mixture_logits.normal_()
    all_images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=6))).view(-1, 1, 2, 3)
    assert torch.allclose(model.log_prob(all_images).double(), brute_force_log_prob(model, all_images), atol=1e-5)
    assert torch.logsumexp(model.log_prob(all_images), 0).item() == pytest.approx(0.0, abs=1e-5)  # sums to one


def test_untrained_model_is_a_fair_coin_per_pixel():
    imgs = torch.bernoulli(torch.full((8, 1, 28, 28), 0.3))
    assert MixtureModule()(imgs).item() == pytest.approx(1.0, abs=0.01)
    assert BernoulliMixture().log_prob(imgs).mean().item() == pytest.approx(784 * math.log(0.5), rel=0.01)


def test_gradients_reach_every_parameter():
    model = MixtureModule(num_components=4)
    model(torch.bernoulli(torch.full((8, 1, 28, 28), 0.3))).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_samples_are_binary_images():
    samples = BernoulliMixture().sample(16)
    assert samples.shape == (16, 1, 28, 28) and set(samples.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.slow
def test_training_raises_the_likelihood(tmp_path):
    metrics = main(["--subset", "1024", "--epochs", "2", "--log_dir", str(tmp_path), "--sample_epochs", "0",
                    "--accelerator", "cpu", "--devices", "1"])
    assert metrics["train_loss_first_step"] == pytest.approx(1.0, abs=0.01)
    assert metrics["test_log_likelihood"] > -250 and metrics["val_bpd"] < 0.5
    assert {p.name for p in (tmp_path / "mixture_k20" / "version_0" / "samples").iterdir()} >= {
        "component_means_epoch002.png", "samples_epoch002.png"}


def test_a_mixture_without_components_is_refused_before_any_work(tmp_path, capsys):
    assert_fails_fast(lambda: main(["--num_components", "0", "--log_dir", str(tmp_path)]), tmp_path, capsys,
                      "--num_components must be positive, got 0")


def test_frankenstein_digits_take_halves_from_two_classes():
    torch.manual_seed(0)
    images = torch.rand(200, 1, 28, 28)
    labels = torch.arange(200) % 10
    spliced, left, right = frankenstein_digits(images, labels)
    assert spliced.shape == images.shape and (left != right).all()
    assert torch.equal(spliced[..., :14], images[..., :14])
    for i in range(0, 200, 37):
        donors = [j for j in range(200) if torch.equal(images[j, ..., 14:], spliced[i, ..., 14:])]
        assert len(donors) == 1 and labels[donors[0]] == right[i] != labels[i]


def test_frankenstein_auroc_orders_scores():
    assert frankenstein_auroc(torch.tensor([-1.0, -2.0]), torch.tensor([-5.0, -6.0])) == 1.0
    assert frankenstein_auroc(torch.tensor([-5.0, -6.0]), torch.tensor([-1.0, -2.0])) == 0.0


def test_frankenstein_auroc_ranks_log_likelihoods_of_hundreds_of_nats_and_counts_ties_half():
    natural = torch.tensor([-100.0, -120.0, -140.0, -500.0])
    frankenstein = torch.tensor([-130.0, -150.0, -160.0, -500.0])
    # Count the (Frankenstein, natural) pairs where the Frankenstein digit is the less likely; a tie counts half.
    wins = sum(float(f < n) + 0.5 * float(f == n) for f in frankenstein for n in natural)
    assert frankenstein_auroc(natural, frankenstein) == pytest.approx(wins / 16)
    assert 0.5 < frankenstein_auroc(natural, frankenstein) < 1.0


def test_the_exact_likelihood_stays_float32_under_bf16_autocast():
    """--precision bf16-mixed ran its matrix products in bf16: an image's "exact" figure moved by up to 1.8 nats (QA)."""
    from part1_vae.networks import BernoulliMixture

    torch.manual_seed(0)
    mixture = BernoulliMixture(20)
    mixture.component_logits.data.mul_(300)  # trained-like logits, far from 0
    images = (torch.rand(16, 1, 28, 28) > 0.5).float()
    exact = mixture.log_prob(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = mixture.log_prob(images)
    assert autocast.dtype == torch.float32 and torch.equal(autocast, exact)

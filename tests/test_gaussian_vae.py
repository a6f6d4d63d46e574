"""The Gaussian-likelihood VAE: the exact density, dequantization, the 8-bit bpd, sampling, and the command."""
import json
import math

import pytest
import torch
from torch.distributions import Normal

from part1_vae.networks import MLPDecoder, MLPEncoder
from part1_vae.train import main
from part1_vae.modules import VAE, dequantize_grey, quantize_grey
from shared.densities import gaussian_nll
from shared.data import to_model_range
from tests.conftest import CONFIGS, TINY_RUN


def gaussian_vae(z_dim=4, likelihood="gaussian"):
    torch.manual_seed(0)
    return VAE(MLPEncoder(784, [64], z_dim), MLPDecoder(z_dim, [64]), z_dim=z_dim, iw_chunk=32, likelihood=likelihood)


def grey_images(n=8):
    return to_model_range(torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8), binarize=False)


def test_gaussian_nll_is_the_normal_negative_log_density():
    means, imgs = torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    log_std = torch.randn(1, 28, 28)
    expected = -Normal(means, log_std.exp()).log_prob(imgs).flatten(1).sum(1)
    assert torch.allclose(gaussian_nll(means, log_std, imgs), expected, rtol=1e-5)


def test_vae_reconstruction_term_is_the_density_of_the_sigmoid_mean_and_the_pixel_std():
    vae = gaussian_vae()
    with torch.no_grad():
        vae.log_std_raw.normal_(0.0, 2.0)
    logits, imgs = torch.randn(5, 1, 28, 28), dequantize_grey(grey_images(5))
    expected = -Normal(torch.sigmoid(logits), vae.pixel_log_std().exp()).log_prob(imgs).flatten(1).sum(1)
    assert torch.allclose(vae._nll(logits, imgs), expected, rtol=1e-5)
    assert vae.pixel_log_std().min() >= -math.log(256 * math.sqrt(12))  # never below the dequantization noise


def test_bpd_is_nats_per_pixel_in_bits_plus_eight():
    vae = gaussian_vae()
    imgs = dequantize_grey(grey_images())
    torch.manual_seed(1)
    rec, kl, bpd = vae(imgs)
    assert bpd.item() == pytest.approx((rec + kl).item() / (784 * math.log(2)) + 8, rel=1e-5)
    assert torch.allclose(vae.pixel_log_std(), torch.zeros(1, 28, 28), atol=1e-5)  # starts at std 1


def test_dequantization_stays_in_the_pixel_bin_and_quantize_undoes_it():
    imgs = grey_images()
    x = dequantize_grey(imgs)
    k = torch.round(imgs * 255)
    assert (x >= k / 256).all() and (x < (k + 1) / 256).all()
    assert torch.equal(quantize_grey(x), imgs)
    assert torch.equal(quantize_grey(torch.tensor([-0.3, 1.7])), torch.tensor([0.0, 1.0]))


def test_sample_gives_8_bit_samples_and_means_in_unit_range():
    vae = gaussian_vae()
    samples, means = vae.sample(6), vae.sample(6, means=True)
    assert samples.shape == means.shape == (6, 1, 28, 28)
    assert 0 <= samples.min() and samples.max() <= 1 and torch.equal(torch.round(samples * 255) / 255, samples)
    assert 0 <= means.min() and means.max() <= 1


def test_importance_weighted_bound_works_for_the_gaussian():
    vae = gaussian_vae()
    images = dequantize_grey(grey_images(4))
    nll = vae.importance_weighted_nll(images, k=10)
    assert nll.shape == (4,) and torch.isfinite(nll).all()
    torch.manual_seed(0)
    with torch.no_grad():  # averaged over draws, more samples give a tighter bound, one sample the ELBO's
        elbo, iw = [torch.stack([vae.importance_weighted_nll(images, k=k) for _ in range(20)]).mean() for k in (1, 50)]
        rec, kl = vae._nelbo_terms(images)
    assert iw < elbo and elbo == pytest.approx((rec + kl).mean(), rel=0.01)


def test_bernoulli_vae_has_no_extra_parameter():
    assert "log_std_raw" not in dict(gaussian_vae(likelihood="bernoulli").named_parameters())
    with pytest.raises(ValueError, match="likelihood must be"):
        gaussian_vae(likelihood="laplace")


def test_cli_names_the_gaussian_run_and_rejects_unknown_likelihoods(tmp_path, capsys):
    from part1_vae.train import build_parser, check, default_name
    from shared.cli import parse_args

    args = parse_args(build_parser(), ["--config", str(CONFIGS / "vae_gaussian_z20.yaml")], check, default_name)
    assert (args.name, args.likelihood, args.z_dim) == ("vae_mlp_z20_gaussian", "gaussian", 20)
    with pytest.raises(SystemExit):
        main([*TINY_RUN, "--log_dir", str(tmp_path), "--likelihood", "poisson"])
    assert "invalid choice: 'poisson'" in capsys.readouterr().err and not any(tmp_path.iterdir())


@pytest.mark.slow
def test_smoke_training_on_grey_scale_mnist(tmp_path):
    metrics = main([*TINY_RUN, "--log_dir", str(tmp_path), "--likelihood", "gaussian", "--z_dim", "2",
                    "--subset", "1024", "--epochs", "3", "--lr", "3e-3"])
    run_dir = tmp_path / "vae_mlp_z2_gaussian" / "version_0"
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    # 8-bit probabilities are at most 1, so the bound is positive; it starts near std 1's ~9.4 bits.
    assert 0 < metrics["test_bpd"] < metrics["train_loss_first_step"] - 0.5
    assert 0 < metrics["test_iw_bpd"] < metrics["test_bpd"]
    assert {"samples_epoch003.png", "sample_means_epoch003.png", "manifold_epoch003.png"} <= {
        p.name for p in (run_dir / "samples").glob("*.png")}


def test_the_pixel_std_starts_at_one_and_never_goes_below_the_dequantization_noise():
    vae = gaussian_vae()
    assert torch.allclose(vae.pixel_log_std(), torch.zeros(1, 28, 28), atol=1e-6)
    with torch.no_grad():
        vae.log_std_raw.fill_(-50.0)
    assert torch.allclose(vae.pixel_log_std(), torch.full((1, 28, 28), -math.log(256 * math.sqrt(12))), atol=1e-6)


def test_the_log_likelihood_of_8_bit_images_is_the_dequantized_bound_less_784_log_256():
    """Per image: the bound on the density of (k + u) / 256 on [0, 1]^784, less log 256 a pixel for the cell's width
    (not log 255: 3.1 nats an image, 0.006 bpd)."""
    vae, images = gaussian_vae(), grey_images(4)
    torch.manual_seed(1)
    log_likelihood = vae.log_likelihood(images, 3)
    torch.manual_seed(1)
    bound = vae.importance_weighted_nll(dequantize_grey(images), 3)
    assert torch.allclose(log_likelihood, -(bound + 784 * math.log(256)), rtol=0, atol=1e-3)


"""The adversarial autoencoder: priors, MMD, network shapes, the three-optimizer step, and the command end to end."""
import json
import math

import pytest
import torch

from part2_gan.aae import AAE
from part2_gan.losses import adversarial_bce
from part2_gan.networks import AAEDecoder, AAEEncoder, LatentDiscriminator
from part2_gan.priors import GaussianPrior, MixtureOfGaussiansPrior, SwissRollPrior, make_prior, median_bandwidths, \
    mmd2_unbiased
from part2_gan.train_aae import main
from shared.densities import bernoulli_nll
from shared.evaluation import draw_samples
from tests.conftest import CONFIGS, assert_fails_fast, changed_by_each_optimizer_step

pytestmark = pytest.mark.filterwarnings("ignore:.*no `validation_step`.*")

# Flags that make an AAE run take seconds: 256 images (4 batches), 2 epochs, no judge.
TINY_AAE = ["--subset", "256", "--batch_size", "64", "--epochs", "2", "--sample_epochs", "0",
            "--hidden_dim", "32", "--accelerator", "cpu", "--devices", "1", "--eval_samples", "0"]


def run(tmp_path, *flags):
    return main([*TINY_AAE, "--log_dir", str(tmp_path), *flags])


@pytest.mark.slow
def test_a_subset_that_leaves_one_image_for_a_last_batch_trains(tmp_path):
    # 129 images in batches of 64: batch norm failed on the last batch of one ("Expected more than 1 value per channel")
    assert run(tmp_path, "--subset", "129", "--epochs", "1")["epochs"] == 1


@pytest.mark.parametrize("z_dim", [2, 8])
def test_network_shapes(z_dim):
    imgs = torch.rand(5, 1, 28, 28)
    codes = AAEEncoder(784, 64, z_dim)(imgs)
    assert codes.shape == (5, z_dim)
    assert AAEDecoder(z_dim, 64)(codes).shape == (5, 1, 28, 28)
    assert LatentDiscriminator(z_dim, 64)(codes).shape == (5, 1)


def test_gaussian_prior_samples_and_walks_the_quantile_grid():
    torch.manual_seed(0)
    z = GaussianPrior(3).sample(50_000)
    assert z.shape == (50_000, 3)
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=0.02) and torch.allclose(z.std(0), torch.ones(3), atol=0.02)
    walk = GaussianPrior(3).walk(100)
    assert walk.shape == (100, 3) and (walk[:, 2] == 0).all()
    assert walk[:, :2].abs().max().item() == pytest.approx(1.645, abs=1e-3)  # the 5% / 95% quantiles


def test_mixture_modes_lie_evenly_on_the_circle_and_samples_around_them():
    prior = MixtureOfGaussiansPrior()
    modes = prior.modes()
    assert modes.shape == (10, 2) and torch.allclose(modes.norm(dim=1), torch.full((10,), 4.0))
    assert torch.allclose((modes - modes.roll(1, 0)).norm(dim=1), torch.full((10,), 8 * math.sin(math.pi / 10)))
    z = prior.sample(20_000, generator=torch.Generator().manual_seed(0))
    distances, nearest = torch.cdist(z, modes).min(dim=1)
    assert z.shape == (20_000, 2) and distances.max() < 6 * prior.std
    assert torch.bincount(nearest, minlength=10).min() > 1800  # equal weights: about 2,000 each
    walk = prior.walk(100).view(10, 10, 2)
    assert torch.allclose(walk[:, 0].norm(dim=1), torch.full((10,), 3.0)) and torch.allclose(walk[:, -1].norm(dim=1),
                                                                                               torch.full((10,), 5.0))
    assert torch.allclose(walk[:, 5] / walk[:, 5].norm(dim=1, keepdim=True), modes / 4.0, atol=1e-6)


def test_swiss_roll_radius_range_arms_and_walk_from_the_centre_outwards():
    prior = SwissRollPrior(noise=0.0)
    z = prior.sample(20_000, generator=torch.Generator().manual_seed(0))
    t = z.norm(dim=1) / prior.scale
    assert z.shape == (20_000, 2)
    assert t.min() >= prior.t_min - 1e-4 and t.max() <= prior.t_max + 1e-4
    assert torch.allclose(z / z.norm(dim=1, keepdim=True), torch.stack([t.cos(), t.sin()], 1), atol=1e-3)
    # uniform along the length: half the samples below the t whose squared value is halfway
    assert (t < math.sqrt((prior.t_min ** 2 + prior.t_max ** 2) / 2)).float().mean() == pytest.approx(0.5, abs=0.02)
    radii = prior.walk(100).norm(dim=1)
    assert (radii.diff() > 0).all()
    assert radii[0] == pytest.approx(prior.scale * prior.t_min) and radii[-1] == pytest.approx(4.0)
    noisy = SwissRollPrior().sample(1000)
    assert noisy.norm(dim=1).min() > 1.33 - 0.6 and noisy.norm(dim=1).max() < 4 + 0.6


def test_only_the_gaussian_prior_takes_more_than_two_dimensions():
    assert make_prior("gaussian", 5).z_dim == 5
    with pytest.raises(ValueError, match="the mog prior is 2-D"):
        make_prior("mog", 3)


def test_mmd_is_near_zero_for_one_distribution_and_large_for_two():
    generator = torch.Generator().manual_seed(0)
    roll = SwissRollPrior()
    a, b = roll.sample(1000, generator), roll.sample(1000, generator)
    bandwidths = median_bandwidths(a)
    same = mmd2_unbiased(a, b, bandwidths)
    different = mmd2_unbiased(torch.randn(1000, 2, generator=generator) * 2, a, bandwidths)  # same spread, no roll
    assert abs(same) < 2e-3 and different > 0.01 and different > 20 * abs(same)
    assert mmd2_unbiased(b + 1.0, a, bandwidths) > mmd2_unbiased(b + 0.3, a, bandwidths) > 2 * abs(same)


def small_aae(prior="swiss_roll", z_dim=2):
    torch.manual_seed(0)
    return AAE(AAEEncoder(784, 32, z_dim), AAEDecoder(z_dim, 32), LatentDiscriminator(z_dim, 32), prior=prior,
               z_dim=z_dim)


def test_the_unbiased_mmd_leaves_each_points_kernel_with_itself_out():
    """Two points 3 apart, as both samples, bandwidth 1: the off-diagonal kernels are exp(-4.5) in each sum, so
    MMD^2 = e^-4.5 + e^-4.5 - 2 (2 + 2 e^-4.5) / 4 = e^-4.5 - 1 (the biased estimate, diagonal kept, would be 0)."""
    points = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    assert mmd2_unbiased(points, points, [1.0]) == pytest.approx(math.exp(-4.5) - 1)


def test_a_test_step_judges_each_code_once_and_scores_the_encoder_on_those_logits():
    aae = small_aae().eval()
    judged = []
    aae.discriminator.register_forward_hook(lambda module, args, out: judged.append(len(args[0])))
    imgs = (torch.rand(5, 1, 28, 28) > 0.5).float()
    aae.test_step((imgs,), 0)
    assert judged == [5, 5]  # prior samples and the codes; the generator's loss took a third pass until 2026-12-07
    g_loss = torch.nn.functional.binary_cross_entropy_with_logits(aae.discriminator(aae.encoder(imgs)),
                                                                  torch.ones(5, 1))
    assert aae.epoch_means.mean("test", "g_loss", all_processes=False).item() == pytest.approx(g_loss.item(), rel=1e-6)


def test_a_model_in_training_mode_samples_in_eval_mode_and_is_left_as_it_was():
    aae = small_aae()
    before = {name: tensor.clone() for name, tensor in aae.decoder.state_dict().items()}
    z = torch.randn(4, 2)
    samples = aae.sample(4, z)
    assert aae.sample(1).shape == (1, 1, 28, 28)
    assert all(torch.equal(before[name], tensor) for name, tensor in aae.decoder.state_dict().items())
    assert aae.training and torch.equal(samples, aae.eval().sample(4, z))


def test_sample_gives_means_in_unit_range_that_the_evaluator_takes():
    aae = small_aae().eval()
    samples = aae.sample(7)
    assert samples.shape == (7, 1, 28, 28) and aae.data == "binary"
    assert 0 <= samples.min() and samples.max() <= 1
    assert torch.equal(draw_samples(aae, 5, seed=3), draw_samples(aae, 5, seed=3))


def test_logged_images_with_and_without_test_data(tiny_datamodule):
    aae = small_aae().eval()
    assert set(aae.logged_images()) == {"samples", "prior_walk"}
    test = tiny_datamodule.splits["test"]
    aae.figure_data = (test.images, test.labels)
    grids = aae.logged_images()
    assert grids["samples"].shape == (3, 8 * 30 + 2, 8 * 30 + 2)
    assert grids["prior_walk"].shape == (3, 10 * 30 + 2, 10 * 30 + 2)
    assert grids["reconstructions"].shape == (3, 8 * 30 + 2, 8 * 30 + 2)  # 32 pairs
    latent_map = grids["latent_map"]
    assert latent_map.shape[0] == 3 and latent_map.shape[1] >= 300 and 0 <= latent_map.min() < latent_map.max() <= 1


def test_each_of_the_three_steps_updates_exactly_its_own_networks(tiny_datamodule):
    aae = small_aae()
    names = {part: {f"{part}.{n}" for n, _ in getattr(aae, part).named_parameters()}
             for part in ("encoder", "decoder", "discriminator")}
    changes = changed_by_each_optimizer_step(aae, tiny_datamodule.train_dataloader())
    # reconstruction, discriminator, encoder-as-generator
    assert changes == [names["encoder"] | names["decoder"], names["discriminator"], names["encoder"]]


def test_the_encoder_as_generator_is_trained_to_have_its_codes_read_as_prior_samples(tiny_datamodule, monkeypatch):
    """The third step's target is "real" (QA: a target of 0 passed every test, which read the test stage's g_loss)."""
    import part2_gan.aae

    aae = small_aae()
    targets = []

    def spied(logits, target):
        trained = {part for part in ("encoder", "discriminator")
                   if next(getattr(aae, part).parameters()).requires_grad}
        targets.append((trained, target))
        return adversarial_bce(logits, target)
    monkeypatch.setattr(part2_gan.aae, "adversarial_bce", spied)
    changed_by_each_optimizer_step(aae, tiny_datamodule.train_dataloader())
    assert targets == [({"discriminator"}, 1.0), ({"discriminator"}, 0.0), ({"encoder"}, 1.0)]



def without_a_trainer(aae):
    """``aae`` able to take a training batch outside Lightning: its optimizers, plain backward passes."""
    optimizers = aae.configure_optimizers()
    aae.optimizers = lambda: optimizers
    aae.toggle_optimizer = aae.untoggle_optimizer = lambda optimizer: None
    aae.manual_backward = lambda loss: loss.backward()
    return aae


def test_the_reconstruction_loss_is_nats_per_image_a_mean_over_the_batch_not_a_sum():
    aae = without_a_trainer(small_aae())
    imgs = (torch.rand(6, 1, 28, 28) > 0.5).float()
    with torch.no_grad():  # before the step changes the weights (training mode: the batch's own statistics)
        per_image = bernoulli_nll(aae.decoder(aae.encoder(imgs)), imgs)
    recon = aae.train_batch((imgs, torch.zeros(6)))["recon"]
    assert 400 < per_image.mean() < 700  # an untrained decoder: about 784 log 2 nats an image
    assert recon.item() == pytest.approx(per_image.mean().item(), rel=1e-5)
    assert aae.epoch_means.mean("train", "recon", all_processes=False).item() == pytest.approx(recon.item(), rel=1e-6)


class CodeSpotter(torch.nn.Module):
    """A discriminator that reads codes far from the origin (the test's) as fake and prior samples as real:
    logits -5 and +5."""

    def forward(self, z):
        return torch.where(z.norm(dim=1, keepdim=True) > 50, -5.0, 5.0)


def test_a_discriminator_that_tells_prior_samples_from_codes_scores_full_accuracy_on_each():
    aae = small_aae(prior="gaussian")
    aae.discriminator = CodeSpotter()
    _, figures, code_logits = aae._discriminate(torch.full((8, 2), 100.0))
    assert {name: value.item() for name, value in figures.items()} == {"d_acc_prior": 1.0, "d_acc_codes": 1.0,
                                                                       "d_acc": 1.0}
    assert torch.equal(code_logits, torch.full((8, 1), -5.0))
    _, fooled, _ = aae._discriminate(torch.zeros(8, 2))  # codes it takes for prior samples
    assert {name: value.item() for name, value in fooled.items()} == {"d_acc_prior": 1.0, "d_acc_codes": 0.0,
                                                                      "d_acc": 0.5}


def test_each_optimizer_has_its_own_rate_and_the_adversarial_ones_the_gan_style_betas():
    torch.manual_seed(0)
    aae = AAE(AAEEncoder(784, 16, 2), AAEDecoder(2, 16), LatentDiscriminator(2, 16), lr=3e-3, lr_adv=2e-4,
              betas_adv=(0.4, 0.98))
    reconstruction, discriminator, encoder = aae.configure_optimizers()

    def parameters(optimizer):
        return {id(p) for group in optimizer.param_groups for p in group["params"]}

    def settings(optimizer):
        return [(group["lr"], tuple(group["betas"])) for group in optimizer.param_groups]

    assert parameters(reconstruction) == {id(p) for p in [*aae.encoder.parameters(), *aae.decoder.parameters()]}
    assert parameters(discriminator) == {id(p) for p in aae.discriminator.parameters()}
    assert parameters(encoder) == {id(p) for p in aae.encoder.parameters()}
    assert settings(reconstruction) == [(3e-3, (0.9, 0.999))]  # Adam's own betas
    assert settings(discriminator) == settings(encoder) == [(2e-4, (0.4, 0.98))]

@pytest.mark.parametrize("flags, message", [
    (["--prior", "uniform"], "invalid choice: 'uniform'"),
    (["--z_dim", "1"], "--z_dim must be at least 2"),
    (["--prior", "mog", "--z_dim", "3"], "--prior mog is 2-D: it needs --z_dim 2, got 3"),
    (["--hidden_dim", "0"], "--hidden_dim must be positive, got 0"),
    (["--lr_adv", "-1"], "--lr_adv must be positive, got -1.0"),
    (["--eval_samples", "1"], "--eval_samples must be 0 (skip) or at least 2"),
    (["--batch_size", "1"], "--batch_size 1: batch norm cannot train on batches of one image; use 2 or more"),
])
def test_invalid_flags_fail_fast_with_one_line(tmp_path, capsys, flags, message):
    assert_fails_fast(lambda: run(tmp_path, *flags), tmp_path, capsys, message)


def test_config_parses_to_the_documented_run():
    from part2_gan.train_aae import build_parser, check, default_name
    from shared.cli import parse_args

    args = parse_args(build_parser(), ["--config", str(CONFIGS / "aae_swiss_roll.yaml")], check, default_name)
    assert (args.name, args.prior, args.z_dim, args.hidden_dim, args.binarize) == ("aae_swiss_roll_z2", "swiss_roll", 2,
                                                                                    512, True)


@pytest.mark.slow
def test_smoke_training_writes_maps_grids_and_prior_match_metrics(tmp_path):
    metrics = run(tmp_path, "--prior", "mog")
    run_dir = tmp_path / "aae_mog_z2" / "version_0"
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert metrics["train_loss_first_step"] > metrics["test_recon"] > 0  # nats per image
    assert 0 <= metrics["test_d_acc"] <= 1 and metrics["test_mmd2"] > abs(metrics["test_mmd2_reference"])
    assert abs(metrics["test_mmd2_reference"]) < 0.01
    assert {p.name for p in (run_dir / "samples").glob("*.png")} == {
        f"{name}_epoch{epoch:03d}.png" for name in ("samples", "prior_walk", "reconstructions", "latent_map")
        for epoch in (0, 2)}
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and list(run_dir.glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_samples_are_judged_against_the_training_mnist_after_training(tmp_path, tiny_judge_path):
    metrics = run(tmp_path, "--epochs", "1", "--eval_samples", "200", "--judge", str(tiny_judge_path))
    assert metrics["eval_num_samples"] == 200 and metrics["eval_reference"] == "threshold-binarized"
    assert 1 <= metrics["eval_inception_score"] <= 10 and metrics["eval_frechet_distance"] > 0
    assert json.loads((tmp_path / "aae_gaussian_z2" / "version_0" / "metrics.json").read_text()) == metrics


def test_the_grey_aaes_loss_is_named_as_what_it_is():
    """Cross-entropy to grey targets keeps the targets' own entropy (about 45 nats an image): no likelihood, which
    metrics.json's train_loss said it was by calling it the reconstruction in nats alone (QA)."""
    def aae(data):
        return AAE(AAEEncoder(784, 8, 2), AAEDecoder(2, 8), LatentDiscriminator(2, 8), data=data)
    assert aae("binary").training_loss == "reconstruction, nats per image"
    assert "binary cross-entropy to grey targets" in aae("grey").training_loss and "not a likelihood" in aae(
        "grey").training_loss


def test_the_latent_map_of_a_code_above_two_dimensions_says_which_two_it_shows(tiny_datamodule, monkeypatch):
    import part2_gan.aae

    titles = []
    monkeypatch.setattr(part2_gan.aae, "render_latent_map", lambda codes, labels, prior, title: titles.append(title))
    for z_dim in (2, 4):
        aae = small_aae("gaussian", z_dim).eval()
        test = tiny_datamodule.splits["test"]
        aae.figure_data = (test.images, test.labels)
        aae.logged_images()
    assert titles == ["test codes over the gaussian prior",
                      "test codes over the gaussian prior (dimensions 1 and 2 of 4)"]

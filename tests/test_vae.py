import math

import pytest
import pytorch_lightning as pl
import torch

import part1_vae.modules
from part1_vae.networks import CNNDecoder, CNNEncoder, MLPDecoder, MLPEncoder
from shared.densities import KLD, log_normal_diag, sample_reparameterize
from part1_vae.modules import VAE
from shared.densities import elbo_to_bpd
from shared.utils import make_grid
from tests.conftest import small_vae


@pytest.mark.parametrize("z_dim", [1, 2, 20, 64])
@pytest.mark.parametrize("encoder_cls, decoder_cls", [(MLPEncoder, MLPDecoder), (CNNEncoder, CNNDecoder)])
def test_network_shapes(encoder_cls, decoder_cls, z_dim):
    imgs = torch.rand(3, 1, 28, 28)
    mean, log_std = encoder_cls(z_dim=z_dim)(imgs)
    assert mean.shape == log_std.shape == (3, z_dim)
    assert decoder_cls(z_dim=z_dim)(mean).shape == (3, 1, 28, 28)


def test_mlp_sizes_follow_hidden_dims():
    encoder = MLPEncoder(784, [300, 100], 5)
    assert [layer.out_features for layer in encoder.net if isinstance(layer, torch.nn.Linear)] == [300, 100, 10]


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    assert torch.allclose(KLD(torch.zeros(4, 6), torch.zeros(4, 6)), torch.zeros(4))
    assert (KLD(torch.randn(4, 6), torch.randn(4, 6)) > 0).all()


def test_kl_is_symmetric_in_the_mean():
    mean, log_std = torch.randn(5, 3), torch.randn(5, 3)
    assert torch.allclose(KLD(mean, log_std), KLD(-mean, log_std))


def test_kl_matches_a_monte_carlo_estimate():
    torch.manual_seed(0)
    mean, log_std = torch.tensor([[0.7, -1.2, 0.1]]), torch.tensor([[-0.5, 0.3, 0.0]])
    z = mean + torch.exp(log_std) * torch.randn(200_000, 3)
    monte_carlo = (log_normal_diag(z, mean, log_std) - log_normal_diag(z, torch.zeros(3), torch.zeros(3))).mean()
    assert KLD(mean, log_std).item() == pytest.approx(monte_carlo.item(), rel=0.02)


def test_reparameterisation_gradients_reach_mean_and_std():
    mean = torch.zeros(10, 4, requires_grad=True)
    std = torch.ones(10, 4, requires_grad=True)
    sample_reparameterize(mean, std).pow(2).sum().backward()
    assert mean.grad.abs().sum() > 0 and std.grad.abs().sum() > 0


def test_reparameterised_samples_have_the_right_moments():
    torch.manual_seed(0)
    mean, std = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 3.0])
    z = sample_reparameterize(mean.expand(100_000, 2), std.expand(100_000, 2))
    assert torch.allclose(z.mean(0), mean, atol=0.03) and torch.allclose(z.std(0), std, rtol=0.02)


def test_a_std_broadcast_over_the_mean_still_gives_each_entry_its_own_noise():
    z = sample_reparameterize(torch.zeros(4, 3), torch.ones(1, 3))
    assert z.shape == (4, 3) and len(set(z[:, 0].tolist())) == 4


def test_forward_returns_batch_means_and_bpd_of_their_sum():
    vae = small_vae()
    imgs = torch.bernoulli(torch.full((8, 1, 28, 28), 0.2))
    torch.manual_seed(1)
    rec, kl, bpd = vae(imgs)
    assert rec.shape == kl.shape == bpd.shape == ()
    assert bpd.item() == pytest.approx(elbo_to_bpd(rec + kl, imgs.shape).item(), rel=1e-5)


def test_sample_gives_binary_images_and_their_means():
    vae = small_vae()
    torch.manual_seed(3)
    samples, after_samples = vae.sample(16), torch.rand(1)
    torch.manual_seed(3)
    means, after_means = vae.sample(16, means=True), torch.rand(1)
    assert torch.equal(after_samples, after_means)  # the same draws either way: the means are the samples'
    assert samples.shape == means.shape == (16, 1, 28, 28)
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    assert means.min() >= 0 and means.max() <= 1


@pytest.mark.slow
def test_importance_weighted_bound_is_tighter_than_the_elbo(tiny_datamodule):
    vae = small_vae()
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    for _ in range(3):
        for imgs, _ in tiny_datamodule.train_dataloader():
            optimizer.zero_grad()
            vae(imgs)[2].backward()
            optimizer.step()
    imgs = tiny_datamodule.splits["test"].images[:64]
    torch.manual_seed(0)
    with torch.no_grad():
        elbo_nll = torch.stack([sum(vae._nelbo_terms(imgs)) for _ in range(50)]).mean(0)
    iw_nll = vae.importance_weighted_nll(imgs, k=100)
    assert iw_nll.mean() < elbo_nll.mean() - 1.0  # nats per image
    assert iw_nll.mean() > 0 and math.isfinite(iw_nll.mean().item())


def test_the_importance_weighted_bound_stays_finite_where_the_posterior_std_underflows():
    """A diverged encoder's log std of -200 makes its std 0 in float32: z is then the mean, and log q(z | x) computed as
    ((z - mean) / std)^2 was 0 / 0, a NaN test_iw_bpd beside a finite test_bpd (QA: --lr 0.05)."""
    vae = small_vae()
    imgs = (torch.rand(8, 1, 28, 28) > 0.5).float()
    mean, log_std = vae.encoder(imgs)
    collapsed = torch.cat([log_std[:, :1].detach() * 0 - 200.0, log_std[:, 1:]], dim=1)
    vae.encoder.forward = lambda x: (mean, collapsed)
    assert torch.isfinite(vae.importance_weighted_nll(imgs, k=10)).all()


def test_tanh_activation_reaches_the_mlps():
    encoder, decoder = MLPEncoder(784, [16], 2, activation="tanh"), MLPDecoder(2, [16], activation="tanh")
    assert any(isinstance(layer, torch.nn.Tanh) for layer in encoder.net)
    assert any(isinstance(layer, torch.nn.Tanh) for layer in decoder.net)


def test_the_iwae_objective_is_a_tighter_bound_than_the_elbo():
    torch.manual_seed(0)
    imgs = torch.bernoulli(torch.full((16, 1, 28, 28), 0.2))
    elbo_vae = small_vae()
    iwae_vae = VAE(elbo_vae.encoder, elbo_vae.decoder, z_dim=elbo_vae.hparams.z_dim, objective="iwae", train_k=50)
    torch.manual_seed(1)
    nelbo = elbo_vae.step("train", (imgs,))
    torch.manual_seed(1)
    iwae = iwae_vae.step("train", (imgs,))
    assert iwae < nelbo and iwae.requires_grad
    assert iwae_vae.training_loss == "negative IWAE bound (k=50), bits per dimension"


def test_lr_final_decays_the_learning_rate_exponentially_to_it_at_the_last_epoch():
    vae = VAE(MLPEncoder(784, [8], 2), MLPDecoder(2, [8]), z_dim=2, lr=1e-3, lr_final=1e-4)
    vae.trainer = pl.Trainer(max_epochs=5, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    scheduler = vae.configure_optimizers()["lr_scheduler"]
    rates = []
    for _ in range(5):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-4)
    assert rates[2] == pytest.approx(1e-3 * 10 ** -0.5)


def test_an_injected_decoder_with_batch_norm_and_dropout_samples_in_eval_mode_as_the_contract_says():
    """shared.generative: samples in eval mode whatever mode the model is in; the VAE's were drawn in its mode, so an
    injected decoder's batch norm moved its statistics and failed on one image (QA)."""
    from torch import nn

    from shared.utils import visualize_manifold

    decoder = nn.Sequential(nn.Linear(2, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 784),
                            nn.Unflatten(1, (1, 28, 28)))
    vae = VAE(MLPEncoder(784, [32], 2), decoder, z_dim=2).train()
    statistics = decoder[1].running_mean.clone()
    torch.manual_seed(0)
    in_training = vae.sample(3, means=True)
    assert vae.sample(1).shape == (1, 1, 28, 28) and visualize_manifold(decoder, grid_size=3).shape[0] == 3
    assert torch.equal(decoder[1].running_mean, statistics) and all(module.training for module in decoder.modules())
    torch.manual_seed(0)
    assert torch.equal(vae.eval().sample(3, means=True), in_training)


def independent_log_weights(vae, images, noise):
    """``[k, B]`` log p(x, z) - log q(z | x) at z = mean + std * noise, from torch.distributions and torch's BCE: none
    of the module's own density code (QA: an estimate off by log k, or a KL of 0, passed every ordering test)."""
    mean, log_std = vae.encoder(images)
    z = mean + log_std.exp() * noise
    logits = vae.decoder(z.flatten(0, 1)).view(len(noise), len(images), -1)
    targets = images.flatten(1).expand(len(noise), -1, -1)
    log_px_z = -torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1)
    normal = torch.distributions.Normal
    return log_px_z + normal(0.0, 1.0).log_prob(z).sum(-1) - normal(mean, log_std.exp()).log_prob(z).sum(-1)


def test_the_elbo_the_iw_bound_and_the_iwae_loss_are_their_formulas():
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(784, [32], 4), MLPDecoder(4, [32]), z_dim=4, objective="iwae", train_k=5)
    with torch.no_grad():
        for parameter in vae.encoder.parameters():
            parameter.mul_(3)  # a posterior far from the prior: a KL of several nats
    images = (torch.rand(6, 1, 28, 28) > 0.5).float()
    bits = 784 * math.log(2)
    with torch.no_grad():
        torch.manual_seed(1)
        rec, kl, bpd = vae(images)  # batch means of the ELBO's terms, one draw of z each
        torch.manual_seed(1)
        mean, log_std = vae.encoder(images)
        z = mean + log_std.exp() * torch.randn_like(mean)
        rec_expected = torch.nn.functional.binary_cross_entropy_with_logits(vae.decoder(z), images,
                                                                            reduction="none").sum((1, 2, 3))
        kl_expected = torch.distributions.kl_divergence(torch.distributions.Normal(mean, log_std.exp()),
                                                         torch.distributions.Normal(0.0, 1.0)).sum(-1)
        assert rec.item() == pytest.approx(rec_expected.mean().item(), rel=1e-5)
        assert kl.item() == pytest.approx(kl_expected.mean().item(), rel=1e-5) and kl.item() > 1
        assert bpd.item() == pytest.approx((rec_expected + kl_expected).mean().item() / bits, rel=1e-5)
        for k in (1, 7):  # the bound, -(logsumexp - log k), from k draws
            torch.manual_seed(2)
            iw = vae.importance_weighted_nll(images, k)
            torch.manual_seed(2)
            weights = independent_log_weights(vae, images, torch.randn(k, *mean.shape))
            assert torch.allclose(iw, -(torch.logsumexp(weights, 0) - math.log(k)), rtol=1e-5)
        torch.manual_seed(3)
        loss = vae.step("train", (images,))  # the IWAE objective, k = 5, in bits per dimension
        torch.manual_seed(3)
        weights = independent_log_weights(vae, images, torch.randn(5, *mean.shape))
        assert loss.item() == pytest.approx((-(torch.logsumexp(weights, 0) - math.log(5))).mean().item() / bits, rel=1e-5)



def test_the_importance_weighted_bound_draws_exactly_k_samples_when_k_is_no_multiple_of_the_chunk():
    """k = 7 in chunks of 3: 3 + 3 + 1 draws, the bound of those 7 (a last chunk of 3 would average 9 weights and
    divide by 7)."""
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(784, [32], 4), MLPDecoder(4, [32]), z_dim=4, iw_chunk=3)
    images = (torch.rand(5, 1, 28, 28) > 0.5).float()
    decoded = []
    vae.decoder.register_forward_hook(lambda module, args, out: decoded.append(len(args[0])))
    torch.manual_seed(2)
    iw = vae.importance_weighted_nll(images, 7)
    assert decoded == [3 * 5, 3 * 5, 1 * 5]
    torch.manual_seed(2)
    noise = torch.cat([torch.randn(n, 5, 4) for n in (3, 3, 1)])  # as the chunks draw it
    with torch.no_grad():
        weights = independent_log_weights(vae, images, noise)
    assert torch.allclose(iw, -(torch.logsumexp(weights, 0) - math.log(7)), rtol=1e-5)

@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_the_optimizer_takes_the_adam_eps_and_the_gaussians_log_std_its_faster_rate(likelihood):
    """The IWAE paper's eps 1e-4 (configs/vae_iwae_paper.yaml) and the log-std's 10x rate reach Adam (QA: dropping
    either passed every test)."""
    vae = VAE(MLPEncoder(784, [8], 2), MLPDecoder(2, [8]), z_dim=2, lr=2e-3, adam_eps=1e-4, likelihood=likelihood)
    optimizer = vae.configure_optimizers()
    assert optimizer.defaults["eps"] == 1e-4
    rates = {len(group["params"]): group["lr"] for group in optimizer.param_groups}
    assert rates == ({1: 2e-2, len(list(vae.parameters())) - 1: 2e-3} if likelihood == "gaussian"
                     else {len(list(vae.parameters())): 2e-3})


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_the_figures_of_test_images_decode_their_posterior_means_and_draw_no_random_number(likelihood):
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(784, [64], 2), MLPDecoder(2, [64]), z_dim=2, likelihood=likelihood)
    levels = torch.randint(0, 256, (40, 1, 28, 28)).float()
    images = (levels > 127).float() if likelihood == "bernoulli" else levels / 255
    labels = torch.arange(40) % 10
    assert set(vae.logged_images()) == {"samples", "sample_means", "manifold"}  # no test images: none of theirs
    vae.figure_data = (images, labels)
    state = torch.random.get_rng_state()
    grids = vae.logged_images()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert {"reconstructions", "interpolations", "latent_map"} <= set(grids)
    # The encoder sees what the likelihood models: an 8-bit value at its cell's centre, (k + 0.5) / 256
    seen = (levels + 0.5) / 256 if likelihood == "gaussian" else images
    codes = vae.encoder(seen)[0]
    decoded = torch.sigmoid(vae.decoder(codes)).detach()
    expected = make_grid(torch.stack([images[:32], decoded[:32]], dim=1).flatten(0, 1), nrow=8)
    assert torch.allclose(grids["reconstructions"], expected, atol=1e-6)
    ends = torch.sigmoid(vae.decoder(torch.stack([codes[:4], codes[4:8]], dim=1).flatten(0, 1))).detach()
    row = grids["interpolations"][0, 2:30, :].unfold(1, 30, 30)[:, :7, 2:].permute(1, 0, 2)  # first row, 7 images
    assert torch.allclose(row[0], ends[0, 0], atol=1e-6) and torch.allclose(row[6], ends[1, 0], atol=1e-6)
    assert grids["interpolations"].shape == (3, 4 * 30 + 2, 7 * 30 + 2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(part1_vae.modules, "render_latent_map", lambda codes, labels, prior, title: (codes, labels))
        mapped, mapped_labels = vae.test_image_figures(images, labels)["latent_map"]
    assert torch.allclose(mapped, codes, atol=1e-6) and torch.equal(mapped_labels, labels)


def test_a_vae_takes_the_test_split_of_its_data_module_for_its_figures(tiny_datamodule):
    vae = small_vae()
    vae.trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    vae.trainer.datamodule = tiny_datamodule  # as fit() attaches it before setup
    vae.setup("fit")
    assert vae.figure_data[0] is tiny_datamodule.splits["test"].images
    grids = vae.logged_images()
    assert "latent_map" not in grids and grids["reconstructions"].shape == (3, 8 * 30 + 2, 8 * 30 + 2)

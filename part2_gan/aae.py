"""The adversarial autoencoder (Makhzani et al., 2016): a deterministic autoencoder whose codes a
discriminator pushes towards an imposed prior, as a thin LightningModule around injected networks."""
from __future__ import annotations

from itertools import chain
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import nn
from torchmetrics import CatMetric

from part1_vae.vae import bernoulli_nll
from part2_gan.gan import _bce
from part2_gan.priors import make_prior, median_bandwidths, mmd2_unbiased
from shared.metrics import EpochMeans
from shared.utils import figure_to_tensor, make_grid


def _linear_bn_relu(sizes: Sequence[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU()]
    return layers


class AAEEncoder(nn.Module):
    """Images ``[B, 1, 28, 28]`` -> codes ``[B, z_dim]``: ``num_layers`` Linear-BatchNorm-ReLU blocks, then linear."""

    def __init__(self, input_dim: int = 784, hidden_dim: int = 512, z_dim: int = 2, num_layers: int = 2):
        super().__init__()
        sizes = [input_dim] + [hidden_dim] * num_layers
        self.net = nn.Sequential(*_linear_bn_relu(sizes), nn.Linear(hidden_dim, z_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class AAEDecoder(nn.Module):
    """Codes ``[B, z_dim]`` -> Bernoulli logits ``[B, 1, 28, 28]`` (the encoder's mirror; no sigmoid)."""

    def __init__(self, z_dim: int = 2, hidden_dim: int = 512, output_shape: Sequence[int] = (1, 28, 28),
                 num_layers: int = 2):
        super().__init__()
        self.output_shape = tuple(output_shape)
        sizes = [z_dim] + [hidden_dim] * num_layers
        self.net = nn.Sequential(*_linear_bn_relu(sizes), nn.Linear(hidden_dim, int(np.prod(output_shape))))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.output_shape)


class LatentDiscriminator(nn.Module):
    """Codes ``[B, z_dim]`` -> logits ``[B, 1]`` (prior sample vs encoder code).

    No batch norm: real and fake batches go through separately, and normalising each by its own
    statistics would erase exactly what tells them apart (a shifted or squeezed cloud of codes).
    """

    def __init__(self, z_dim: int = 2, hidden_dim: int = 512, num_layers: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        for n_in in [z_dim] + [hidden_dim] * (num_layers - 1):
            layers += [nn.Linear(n_in, hidden_dim), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Linear(hidden_dim, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def render_latent_map(codes: torch.Tensor, labels: torch.Tensor, prior_samples: torch.Tensor,
                      title: str = "") -> torch.Tensor:
    """The first two code dimensions as dots coloured by digit over a grey hexbin of prior samples,
    rendered off-screen (Agg, no pyplot state) to a ``[3, H, W]`` image in [0, 1]."""
    tab10 = list(colormaps["tab10"].colors)
    figure = Figure(figsize=(6, 6), dpi=100)
    ax = figure.add_subplot()
    prior_samples, codes = prior_samples.cpu().numpy(), codes.cpu().numpy()
    ax.hexbin(prior_samples[:, 0], prior_samples[:, 1], gridsize=50, cmap="Greys", bins="log", mincnt=1,
              linewidths=0, alpha=0.4)
    digits = ListedColormap([*tab10[:7], "black", *tab10[8:]])  # tab10's grey 7 would vanish in the hexbin
    points = ax.scatter(codes[:, 0], codes[:, 1], c=labels.cpu().numpy(), cmap=digits, vmin=-0.5, vmax=9.5, s=3,
                        alpha=0.8, linewidths=0)
    figure.colorbar(points, ax=ax, ticks=range(10), label="digit", fraction=0.046, pad=0.04)
    ax.set(xlabel="$z_1$", ylabel="$z_2$", title=title, aspect="equal")
    figure.tight_layout()
    return figure_to_tensor(figure)


class AAE(pl.LightningModule):
    """Adversarial autoencoder, trained with three Adam optimizers (manual optimization).

    Each training batch takes three steps, each updating only its own networks:
      1. reconstruction: encoder and decoder on the Bernoulli negative log-likelihood (BCE with
         logits, summed over pixels, mean over images);
      2. discriminator: prior samples are real, encoder codes (no gradient to the encoder) fake;
      3. encoder as generator: the non-saturating ``-log D(E(x))``.
    The encoder has a separate Adam for step 3 rather than sharing step 1's, so the moment
    estimates of two very differently scaled losses (~100 nats vs ~1) are not mixed.

    Args:
        encoder: images -> codes ``[B, z_dim]``; decoder: codes -> Bernoulli logits;
        discriminator: codes -> logits ``[B, 1]``.
        prior: name in :data:`part2_gan.priors.PRIORS`; z_dim: code size.
        lr: Adam learning rate of the reconstruction step; lr_adv, betas_adv: Adam settings of the two
            adversarial steps (GAN-style betas).
        eval_points: test images in the latent map and in the MMD (whose cost grows with its square:
            5,000 points take seconds on one CPU core, 10,000 about a minute).

    Set ``latent_map_data = (images, labels)`` (not saved with the checkpoint) to get the latent map
    and the reconstructions among :meth:`image_grids`.
    """

    # Range of what ``sample`` returns, for the sample-quality evaluator.
    sample_range = (0.0, 1.0)

    def __init__(self, encoder: nn.Module, decoder: nn.Module, discriminator: nn.Module, prior: str = "gaussian",
                 z_dim: int = 2, lr: float = 1e-3, lr_adv: float = 1e-3,
                 betas_adv: tuple[float, float] = (0.5, 0.999), eval_points: int = 5000):
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "decoder", "discriminator"])
        self.automatic_optimization = False
        self.encoder, self.decoder, self.discriminator = encoder, decoder, discriminator
        self.prior = make_prior(prior, z_dim)
        # Fixed prior samples (saved with the checkpoint) so the grids of different epochs compare.
        self.register_buffer("fixed_z", self.prior.sample(64))
        self.example_input_array = torch.zeros(2, 1, 28, 28)
        self.latent_map_data: tuple[torch.Tensor, torch.Tensor] | None = None
        names = ["recon", "d_loss", "g_loss", "d_acc_prior", "d_acc_codes", "d_acc"]
        self.epoch_means = EpochMeans(("train", "test"), names)
        self.test_codes = CatMetric(nan_strategy="disable")

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        """The codes of ``imgs``."""
        return self.encoder(imgs)

    @torch.no_grad()
    def sample(self, batch_size: int, z: torch.Tensor | None = None) -> torch.Tensor:
        """Decoded Bernoulli means ``[B, 1, 28, 28]`` in [0, 1] of latents ``z`` (default: prior samples)."""
        z = self.prior.sample(batch_size, device=self.device) if z is None else z
        return torch.sigmoid(self.decoder(z))

    def _discriminate(self, codes: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The discriminator's loss on a batch of codes against as many fresh prior samples, and its accuracies."""
        prior_logits = self.discriminator(self.prior.sample(len(codes), device=self.device))
        code_logits = self.discriminator(codes)
        loss = _bce(prior_logits, 1.0) + _bce(code_logits, 0.0)
        acc_prior, acc_codes = (prior_logits > 0).float().mean(), (code_logits < 0).float().mean()
        return loss, {"d_acc_prior": acc_prior, "d_acc_codes": acc_codes, "d_acc": (acc_prior + acc_codes) / 2}

    def _step(self, optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()
        self.untoggle_optimizer(optimizer)

    def training_step(self, batch, batch_idx):
        """Returns ``loss`` (reconstruction, nats per image), ``d_loss`` and ``g_loss``."""
        imgs = batch[0]
        opt_ae, opt_d, opt_g = self.optimizers()

        self.toggle_optimizer(opt_ae)
        recon = bernoulli_nll(self.decoder(self.encoder(imgs)), imgs).mean()
        self._step(opt_ae, recon)

        self.toggle_optimizer(opt_d)
        with torch.no_grad():
            codes = self.encoder(imgs)
        d_loss, figures = self._discriminate(codes)
        self._step(opt_d, d_loss)

        self.toggle_optimizer(opt_g)
        g_loss = _bce(self.discriminator(self.encoder(imgs)), 1.0)
        self._step(opt_g, g_loss)

        self.epoch_means.add("train", {"recon": recon, "d_loss": d_loss, "g_loss": g_loss, **figures},
                             count=len(imgs))
        return {"loss": recon, "d_loss": d_loss, "g_loss": g_loss}

    def _log_epoch(self, stage: str) -> None:
        self.log_dict(self.epoch_means.compute_and_reset(stage), prog_bar=stage == "train")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def test_step(self, batch, batch_idx):
        imgs = batch[0]
        codes = self.encoder(imgs)
        d_loss, figures = self._discriminate(codes)
        recon = bernoulli_nll(self.decoder(codes), imgs).mean()
        g_loss = _bce(self.discriminator(codes), 1.0)
        self.epoch_means.add("test", {"recon": recon, "d_loss": d_loss, "g_loss": g_loss, **figures},
                             count=len(imgs))
        self.test_codes.update(codes)

    def on_test_epoch_end(self) -> None:
        """Besides the means: MMD^2 between the first ``eval_points`` test codes and as many prior samples,
        and, as the floor it would reach if the codes matched the prior, between two independent prior samples."""
        self._log_epoch("test")
        codes = self.test_codes.compute().float()[:self.hparams.eval_points]
        self.test_codes.reset()
        generator = torch.Generator().manual_seed(0)  # the same prior samples for every run
        prior, other = (self.prior.sample(len(codes), generator=generator).to(codes.device) for _ in range(2))
        bandwidths = median_bandwidths(prior)
        self.log_dict({"test_mmd2": mmd2_unbiased(codes, prior, bandwidths),
                       "test_mmd2_reference": mmd2_unbiased(other, prior, bandwidths)})

    def configure_optimizers(self):
        fused = self.device.type in ("cpu", "cuda")
        adv = dict(lr=self.hparams.lr_adv, betas=tuple(self.hparams.betas_adv), fused=fused)
        return [torch.optim.Adam(chain(self.encoder.parameters(), self.decoder.parameters()), lr=self.hparams.lr,
                                 fused=fused),
                torch.optim.Adam(self.discriminator.parameters(), **adv),
                torch.optim.Adam(self.encoder.parameters(), **adv)]

    @torch.no_grad()
    def image_grids(self) -> dict[str, torch.Tensor]:
        """Samples from the fixed prior noise (8x8), a 10x10 walk through the prior (the swiss roll:
        centre outwards, row by row), and with ``latent_map_data`` the latent map and 32
        reconstructions (each original left of its reconstruction). Decoded images are Bernoulli means."""
        grids = {"samples": make_grid(self.sample(64, self.fixed_z)),
                 "prior_walk": make_grid(self.sample(100, self.prior.walk(100).to(self.device)), nrow=10)}
        if self.latent_map_data is not None:
            images, labels = (t[:self.hparams.eval_points].to(self.device) for t in self.latent_map_data)
            codes = self.encoder(images)
            pairs = torch.stack([images[:32], torch.sigmoid(self.decoder(codes[:32]))], dim=1)
            grids["reconstructions"] = make_grid(pairs.flatten(0, 1), nrow=8)
            prior = self.prior.sample(20_000, generator=torch.Generator().manual_seed(0))
            title = f"test codes over the {self.hparams.prior} prior"
            grids["latent_map"] = render_latent_map(codes, labels, prior, title)
        return grids

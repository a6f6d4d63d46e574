"""Part 2's adversarial autoencoder, a thin LightningModule around injected networks."""
from __future__ import annotations

from itertools import chain

import torch
from torch import nn
from torchmetrics import CatMetric

from part2_gan.losses import adversarial_bce
from part2_gan.priors import make_prior, median_bandwidths, mmd2_unbiased
from shared.batches import figure_split
from shared.densities import bernoulli_nll
from shared.generative import GenerativeModel, check_data_kind, evaluating, sample_count
from shared.lean_lightning import GroupedTraining
from shared.metrics import EpochMeans
from shared.schedules import adam
from shared.utils import make_grid, pairs_grid, render_latent_map


class AAE(GenerativeModel, GroupedTraining):
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
        eval_points: test images in the latent map and the MMD (cost grows with its square: 5,000 take seconds).
        data: the MNIST variant trained on, "binary" or "grey" (its samples are scored against it).

    ``figure_data = (images, labels)`` (not saved with the checkpoint; ``setup`` takes the test split of
    the trainer's data module) adds the latent map and the reconstructions to :meth:`logged_images`.
    """

    training_loss = "reconstruction, nats per image"
    progress_metrics = ("train_recon", "train_d_loss", "train_d_acc")
    leaves_networks_unused = True  # each optimizer step trains one network (DDP: find them)
    charts = {"adversarial losses: discriminator and encoder": r"^train_(d|g)_loss$",
              "discriminator accuracy on prior samples and codes": r"^train_d_acc_(prior|codes)$"}

    def __init__(self, encoder: nn.Module, decoder: nn.Module, discriminator: nn.Module, prior: str = "gaussian",
                 z_dim: int = 2, lr: float = 1e-3, lr_adv: float = 1e-3,
                 betas_adv: tuple[float, float] = (0.5, 0.999), eval_points: int = 5000, data: str = "binary"):
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "decoder", "discriminator"], logger=False)
        self.data = check_data_kind(data)
        if self.data == "grey":  # cross-entropy to grey targets keeps their own entropy (about 45 nats an image)
            self.training_loss = "reconstruction: binary cross-entropy to grey targets, nats per image (not a likelihood)"
        self.encoder, self.decoder, self.discriminator = encoder, decoder, discriminator
        self.prior = make_prior(prior, z_dim)
        # Fixed prior samples (saved with the checkpoint) so the grids of different epochs compare.
        self.register_buffer("fixed_z", self.prior.sample(64))
        self.example_input_array = torch.zeros(2, 1, 28, 28)
        self.figure_data: tuple[torch.Tensor, torch.Tensor] | None = None
        names = ["recon", "d_loss", "g_loss", "d_acc_prior", "d_acc_codes", "d_acc"]
        self.epoch_means = EpochMeans(("train", "test"), names)
        self.test_codes = CatMetric(nan_strategy="disable")

    def setup(self, stage: str) -> None:
        if self.figure_data is None:
            self.figure_data = figure_split(self.trainer)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        """The codes of ``imgs``."""
        return self.encoder(imgs)

    @torch.no_grad()
    def sample(self, n: int, z: torch.Tensor | None = None) -> torch.Tensor:
        """Decoded Bernoulli means ``[n, 1, 28, 28]`` in [0, 1] of latents ``z`` (default: prior samples):
        the AAE's samples are these means, as in Makhzani et al.; in eval mode."""
        count = sample_count(n, z)
        z = self.prior.sample(count, device=self.device) if z is None else z
        with evaluating(self.decoder) as decoder:
            return torch.sigmoid(decoder(z))

    def _discriminate(self, codes: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """The discriminator's loss on a batch of codes against as many fresh prior samples, its accuracies, and its
        logits of the codes (the test's generator loss: no second pass)."""
        prior_logits = self.discriminator(self.prior.sample(len(codes), device=self.device))
        code_logits = self.discriminator(codes)
        loss = adversarial_bce(prior_logits, 1.0) + adversarial_bce(code_logits, 0.0)
        acc_prior, acc_codes = (prior_logits > 0).float().mean(), (code_logits < 0).float().mean()
        figures = {"d_acc_prior": acc_prior, "d_acc_codes": acc_codes, "d_acc": (acc_prior + acc_codes) / 2}
        return loss, figures, code_logits

    def _step(self, optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()
        self.untoggle_optimizer(optimizer)

    def train_batch(self, batch):
        """Returns ``recon`` (the training loss: reconstruction, nats per image), ``d_loss`` and ``g_loss``."""
        imgs = batch[0]
        opt_ae, opt_d, opt_g = self.optimizers()

        self.toggle_optimizer(opt_ae)
        recon = bernoulli_nll(self.decoder(self.encoder(imgs)), imgs).mean()
        self._step(opt_ae, recon)

        self.toggle_optimizer(opt_d)
        with torch.no_grad():
            codes = self.encoder(imgs)
        d_loss, figures, _ = self._discriminate(codes)
        self._step(opt_d, d_loss)

        self.toggle_optimizer(opt_g)
        g_loss = adversarial_bce(self.discriminator(self.encoder(imgs)), 1.0)
        self._step(opt_g, g_loss)

        self.epoch_means.add("train", {"recon": recon, "d_loss": d_loss, "g_loss": g_loss, **figures},
                             count=len(imgs))
        return {"recon": recon, "d_loss": d_loss, "g_loss": g_loss}

    def _log_epoch(self, stage: str) -> None:
        self.log_dict(self.epoch_means.compute_and_reset(stage), prog_bar=stage == "train", sync_dist=True)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def test_step(self, batch, batch_idx):
        imgs = batch[0]
        codes = self.encoder(imgs)
        d_loss, figures, code_logits = self._discriminate(codes)
        recon = bernoulli_nll(self.decoder(codes), imgs).mean()
        g_loss = adversarial_bce(code_logits, 1.0)
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
                       "test_mmd2_reference": mmd2_unbiased(other, prior, bandwidths)}, sync_dist=True)

    def configure_optimizers(self):
        adversarial = dict(lr=self.hparams.lr_adv, betas=tuple(self.hparams.betas_adv))
        return [adam(chain(self.encoder.parameters(), self.decoder.parameters()), self, lr=self.hparams.lr),
                adam(self.discriminator.parameters(), self, **adversarial),
                adam(self.encoder.parameters(), self, **adversarial)]

    @torch.no_grad()
    def logged_images(self) -> dict[str, torch.Tensor]:
        """Samples from the fixed prior noise (8x8), a 10x10 walk through the prior (the swiss roll:
        centre outwards, row by row), and with ``figure_data`` the latent map and 32
        reconstructions (each original left of its reconstruction). Decoded images are Bernoulli means."""
        grids = {"samples": make_grid(self.sample(64, self.fixed_z)),
                 "prior_walk": make_grid(self.sample(100, self.prior.walk(100).to(self.device)), nrow=10)}
        if self.figure_data is not None:
            images, labels = (t[:self.hparams.eval_points].to(self.device) for t in self.figure_data)
            codes = self.encoder(images)
            grids["reconstructions"] = pairs_grid(images[:32], torch.sigmoid(self.decoder(codes[:32])))
            prior = self.prior.sample(20_000, generator=torch.Generator().manual_seed(0))
            title = f"test codes over the {self.hparams.prior} prior" + (
                f" (dimensions 1 and 2 of {self.hparams.z_dim})" if self.hparams.z_dim > 2 else "")
            grids["latent_map"] = render_latent_map(codes, labels, prior, title)
        return grids

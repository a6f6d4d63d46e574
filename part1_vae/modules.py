"""Part 1's LightningModules: the VAE around an injected encoder and decoder, and the Bernoulli mixture."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from part1_vae.networks import BernoulliMixture
from shared.densities import (KLD, bernoulli_nll, dequantize, gaussian_nll, log_standard_normal,
                              quantize, sample_reparameterize)
from shared.batches import figure_split
from shared.generative import GenerativeModel, evaluating, sample_count
from shared.metrics import EpochMeans, StagedModule
from shared.schedules import adam, decayed_to
from shared.utils import interpolate_latents, make_grid, pairs_grid, render_latent_map, visualize_manifold


def dequantize_grey(imgs: torch.Tensor) -> torch.Tensor:
    """Grey-scale images k / 255 (k the 8-bit value) -> (k + u) / 256 with u ~ U[0, 1) per pixel.

    A continuous density fitted to these lower-bounds the probability of the 8-bit data: per pixel,
    P(k) >= exp(E_u log p((k + u) / 256)) / 256, hence the + 8 bits of :data:`DEQUANTIZED_BPD_OFFSET`.
    """
    return dequantize(torch.round(imgs * 255.0), 256)


def quantize_grey(x: torch.Tensor) -> torch.Tensor:
    """Continuous samples on the [0, 1] scale -> the 8-bit images they fall in, as k / 255 like the data."""
    return quantize(x, 256) / 255.0


# log2(256): the density on [0, 1] in bits, plus this, bounds bits per 8-bit pixel (see ``dequantize_grey``).
DEQUANTIZED_BPD_OFFSET = 8.0
# The Gaussian's std never goes below the std of the dequantization noise, 1 / (256 sqrt(12)): no
# Gaussian fits a uniform bin better than one of that width, and below it gradients blow up.
_LOG_STD_FLOOR = -math.log(256 * math.sqrt(12))
# The log-std learns this many times faster than the networks (why: ``VAE.configure_optimizers``).
LOG_STD_LR_FACTOR = 10.0
# Test images in the 2-D latent map (the first of the test split): enough to show each digit's region.
LATENT_MAP_POINTS = 5000


class VAE(GenerativeModel, StagedModule):
    """VAE trained on the negative ELBO in bits per dimension, with one of two decoder likelihoods.

    ``likelihood="bernoulli"``: images in {0, 1} (data "binary"); the decoder gives per-pixel
    Bernoulli logits. ``likelihood="gaussian"``: grey-scale images k / 255 (data "8bit"),
    dequantized on the fly to (k + u) / 256; the Gaussian mean is the sigmoid of the decoder's
    output (so it lies in [0, 1] like the data) and its log-std is one learned parameter per pixel
    (the background needs a far smaller std than the strokes), kept above the dequantization noise's
    std. The loss is the exact Gaussian negative log-density, and every bpd reported then bounds
    bits per *8-bit* pixel: nats / (D ln 2) + 8.

    Args:
        encoder: images ``[B, 1, 28, 28]`` -> ``(mean, log_std)`` of q(z|x), each ``[B, z_dim]``.
        decoder: latents ``[B, z_dim]`` -> ``[B, 1, 28, 28]`` (Bernoulli logits, or the Gaussian
            mean before its sigmoid).
        z_dim: latent size (for the prior and the fixed noise of the sample grids).
        lr: Adam learning rate.
        iw_samples: importance samples per test image for ``test_iw_bpd``.
        iw_chunk: how many of those go through the decoder at once (memory, not result).
        likelihood: "bernoulli" or "gaussian".
        objective: "elbo", or "iwae": the importance-weighted bound with ``train_k`` samples per image
            (Burda et al. 2016) as the training loss and the val/test ``*_bpd``. At ``train_k = 1`` the
            IWAE bound is the ELBO, computed as the VAE computes it (analytic KL), so it trains the VAE exactly.
        adam_eps: Adam's epsilon (the IWAE paper's is 1e-4).
        lr_final: if given, the learning rate decays exponentially, epoch by epoch, from ``lr`` to this
            at the trainer's last epoch (the IWAE paper decays from 1e-3 to 1e-4 over its run).

    ``figure_data = (images, labels)`` (not saved with the checkpoint; ``setup`` takes the test split of the
    trainer's data module) adds reconstructions, interpolations and, when z is 2-D, the latent map of test images
    to :meth:`logged_images`.
    """

    likelihood_kind = "importance-weighted bound"
    likelihood_metric = "test_iw_bpd"
    training_loss = "negative ELBO, bits per dimension"

    def __init__(self, encoder: nn.Module, decoder: nn.Module, z_dim: int, lr: float = 1e-3,
                 iw_samples: int = 1000, iw_chunk: int = 100, likelihood: str = "bernoulli", objective: str = "elbo",
                 train_k: int = 1, adam_eps: float = 1e-8, lr_final: float | None = None):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        if objective not in ("elbo", "iwae"):
            raise ValueError(f"objective must be 'elbo' or 'iwae', got {objective!r}")
        self.save_hyperparameters(ignore=["encoder", "decoder"], logger=False)
        self.encoder, self.decoder = encoder, decoder
        self.gaussian = likelihood == "gaussian"
        self.iwae_k = train_k if objective == "iwae" and train_k > 1 else None
        if self.iwae_k:
            self.training_loss = f"negative IWAE bound (k={train_k}), bits per dimension"
        self.data = "8bit" if self.gaussian else "binary"
        self.bpd_offset = DEQUANTIZED_BPD_OFFSET if self.gaussian else 0.0
        if self.gaussian:  # log_std = floor + softplus(raw), starting at log_std = 0
            self.log_std_raw = nn.Parameter(torch.full((1, 28, 28), math.log(math.expm1(-_LOG_STD_FLOOR))))
        # Fixed noise (saved with the checkpoint) so sample grids of different epochs compare.
        self.register_buffer("fixed_z", torch.randn(64, z_dim))
        self.example_input_array = torch.zeros(2, *self.image_shape)
        # Running means per stage, in nats per image (test_iw_nll in the test stage only).
        self.epoch_means = EpochMeans(("train", "val", "test"), ["recon", "kl", "iwae_nll", "iw_nll"])
        self.figure_data: tuple[torch.Tensor, torch.Tensor] | None = None

    def setup(self, stage: str) -> None:
        if self.figure_data is None:
            self.figure_data = figure_split(self.trainer)

    def pixel_log_std(self) -> torch.Tensor:
        """The Gaussian likelihood's per-pixel log-std ``[1, 28, 28]``."""
        return _LOG_STD_FLOOR + F.softplus(self.log_std_raw)

    def _nll(self, logits: torch.Tensor, imgs: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) summed per image (nats), under the chosen likelihood."""
        if self.gaussian:
            return gaussian_nll(torch.sigmoid(logits), self.pixel_log_std(), imgs)
        return bernoulli_nll(logits, imgs)

    def _prepare(self, imgs: torch.Tensor) -> torch.Tensor:
        """A batch as the likelihood models it: dequantized for the Gaussian, as is for the Bernoulli."""
        return dequantize_grey(imgs) if self.gaussian else imgs

    def _bpd(self, nll: torch.Tensor) -> torch.Tensor:
        return self.bpd(nll) + self.bpd_offset

    def _nelbo_terms(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.encoder(imgs)
        z = sample_reparameterize(mean, torch.exp(log_std))
        return self._nll(self.decoder(z), imgs), KLD(mean, log_std)

    def forward(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch means of reconstruction loss (nats), KL (nats) and negative-ELBO bits per dimension.

        ``imgs`` are taken as the likelihood models them (for the Gaussian: already dequantized).
        """
        rec, kl = self._nelbo_terms(imgs)
        return rec.mean(), kl.mean(), self._bpd(rec + kl).mean()

    @torch.no_grad()
    def sample(self, n: int, means: bool = False) -> torch.Tensor:
        """``[n, 1, 28, 28]`` samples in [0, 1], or with ``means`` the per-pixel means they are drawn from.

        Bernoulli: binary samples. Gaussian: mean + std * noise, quantized to the 8-bit image it falls
        in (shown as k / 255); the means are the sigmoid outputs. The samples are drawn either way, so
        that ``means=True`` under a seed gives the means of exactly the samples ``means=False`` gives.
        """
        z = torch.randn(sample_count(n), self.hparams.z_dim, device=self.device)
        pixel_means, samples = self._decode_and_draw(z)
        return pixel_means if means else samples

    def _decode_and_draw(self, z: torch.Tensor, generator: torch.Generator | None = None):
        """(the per-pixel means of the images of ``z``, the images drawn from them), with the decoder in eval mode
        (an injected one with batch norm or dropout: as shared.generative asks of every model's samples)."""
        with evaluating(self.decoder) as decoder:
            pixel_means = torch.sigmoid(decoder(z))
        if self.gaussian:
            noise = torch.randn(pixel_means.shape, generator=generator, device=self.device)
            return pixel_means, quantize_grey(pixel_means + torch.exp(self.pixel_log_std()) * noise)
        return pixel_means, torch.bernoulli(pixel_means, generator=generator)

    def _log_weights(self, imgs: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, n: int) -> torch.Tensor:
        """``[n, B]``: log p(x, z_i) - log q(z_i | x) for n reparameterised draws z_i ~ q(z | x) per image."""
        noise = torch.randn(n, *mean.shape, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(log_std) * noise
        logits = self.decoder(z.reshape(-1, z.shape[-1]))
        log_px_z = -self._nll(logits, imgs.repeat(n, 1, 1, 1)).view(n, -1)
        # log q(z | x) from the noise: from (z - mean) / std it is 0 / 0 where a diverged encoder's std underflows to 0
        # (test_iw_bpd was NaN beside a finite test_bpd, QA).
        return log_px_z + log_standard_normal(z) - (log_standard_normal(noise) - log_std.sum(dim=-1))

    @torch.no_grad()
    def importance_weighted_nll(self, imgs: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """-log p(x) estimated with k importance samples from q(z|x) (the IWAE bound), nats per image.

        log p(x) >= log (1/k) sum_i p(x, z_i) / q(z_i | x); the bound tightens as k grows and equals
        the ELBO at k = 1. ``imgs`` as the likelihood models them (for the Gaussian: dequantized). The
        draws go through the decoder ``iw_chunk`` at a time: memory, not result.
        """
        k = k or self.hparams.iw_samples
        mean, log_std = self.encoder(imgs)
        log_weights = [self._log_weights(imgs, mean, log_std, min(self.hparams.iw_chunk, k - start))
                       for start in range(0, k, self.hparams.iw_chunk)]
        return -(torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k))

    @torch.no_grad()
    def log_likelihood(self, images: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        """The importance-weighted lower bound on log P(x) of the data (binary, or 8-bit: the bound of
        the dequantized density less D log 256), nats per image; ``num_samples`` defaults to ``iw_samples``."""
        nll = self.importance_weighted_nll(self._prepare(images), num_samples)
        return -(nll + self.num_dims * math.log(256)) if self.gaussian else -nll

    def step(self, stage: str, batch) -> torch.Tensor:
        return self._update_means(stage, self._prepare(batch[0]))

    def _update_means(self, stage: str, imgs: torch.Tensor) -> torch.Tensor:
        """Add the batch to the stage's running means; return the batch's bpd under the objective (the
        training loss)."""
        if self.iwae_k:
            mean, log_std = self.encoder(imgs)
            nll = -(torch.logsumexp(self._log_weights(imgs, mean, log_std, self.iwae_k), dim=0)
                    - math.log(self.iwae_k))
            self.epoch_means.add(stage, {"iwae_nll": nll})
            return self._bpd(nll).mean()
        rec, kl = self._nelbo_terms(imgs)
        self.epoch_means.add(stage, {"recon": rec, "kl": kl})
        return self._bpd(rec + kl).mean()

    def log_epoch(self, stage: str) -> None:
        means = {key.removeprefix(f"{stage}_"): mean for key, mean in self.epoch_means.compute_and_reset(stage).items()}
        if "iwae_nll" in means:
            logged = {f"{stage}_iwae_nll": means["iwae_nll"], f"{stage}_bpd": self._bpd(means["iwae_nll"])}
        else:
            nelbo = means["recon"] + means["kl"]  # nELBO and bpd are linear in the means
            logged = {f"{stage}_recon": means["recon"], f"{stage}_kl": means["kl"], f"{stage}_nelbo": nelbo,
                      f"{stage}_bpd": self._bpd(nelbo)}
        if "iw_nll" in means:
            logged[f"{stage}_iw_bpd"] = self._bpd(means["iw_nll"])
        self.log_dict(logged, prog_bar=True, sync_dist=True)

    def test_step(self, batch, batch_idx):
        imgs = self._prepare(batch[0])  # one dequantization draw for both figures
        self._update_means("test", imgs)
        self.epoch_means.add("test", {"iw_nll": self.importance_weighted_nll(imgs)})

    def configure_optimizers(self):
        if not self.gaussian:
            return decayed_to(adam(self.parameters(), self, lr=self.hparams.lr, eps=self.hparams.adam_eps),
                              self.hparams.lr_final, self)
        # The log-std must travel several units (std 1 down to ~1e-3 on the always-black border); Adam moves
        # a parameter by about lr a step, so at the networks' rate that alone would take ~20 epochs.
        networks = [p for name, p in self.named_parameters() if name != "log_std_raw"]
        log_std = {"params": [self.log_std_raw], "lr": LOG_STD_LR_FACTOR * self.hparams.lr}
        return adam([{"params": networks}, log_std], self, lr=self.hparams.lr, eps=self.hparams.adam_eps)

    @torch.no_grad()
    def logged_images(self) -> dict[str, torch.Tensor]:
        """8x8 grids from the fixed noise: the means and samples drawn from them; the manifold (means) when z is 2-D;
        with ``figure_data``, the figures of :meth:`test_image_figures`."""
        means, samples = self._decode_and_draw(self.fixed_z, torch.Generator(device=self.device).manual_seed(0))
        grids = {"samples": make_grid(samples), "sample_means": make_grid(means)}
        if self.hparams.z_dim == 2:
            grids["manifold"] = visualize_manifold(self.decoder)
        if self.figure_data is not None:
            shown = LATENT_MAP_POINTS if self.hparams.z_dim == 2 else 32  # the map's points, else a grid's images
            grids.update(self.test_image_figures(*(t[:shown].to(self.device) for t in self.figure_data)))
        return grids

    @torch.no_grad()
    def test_image_figures(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Of test images as served, each coded by its posterior mean and decoded to pixel means (no draw, so the
        figures change no random stream): 32 reconstructions (each image left of its own), 4 interpolations
        between the codes of two images (ends included, 5 steps between) and, when z is 2-D, the latent map of
        every image given over the prior."""
        count = min(4, len(images) // 2)  # a --subset of one test image has no pair
        with evaluating(self) as vae:
            codes = vae.encoder(self._centred(images))[0]
            figures = {"reconstructions": pairs_grid(images[:32], torch.sigmoid(vae.decoder(codes[:32])))}
            if count:
                lines = interpolate_latents(codes[:count], codes[count:2 * count], 5).flatten(0, 1)
                figures["interpolations"] = make_grid(torch.sigmoid(vae.decoder(lines)), nrow=7)
        if self.hparams.z_dim == 2:
            prior = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0))
            figures["latent_map"] = render_latent_map(codes, labels, prior, "test posterior means over the N(0, I) prior")
        return figures

    def _centred(self, imgs: torch.Tensor) -> torch.Tensor:
        """A batch as the likelihood models it without noise: for the Gaussian, each 8-bit value at its cell's centre."""
        return dequantize(torch.round(imgs * 255.0), 256, torch.full_like(imgs, 0.5)) if self.gaussian else imgs


class MixtureModule(GenerativeModel, StagedModule):
    """The Bernoulli mixture (:class:`part1_vae.networks.BernoulliMixture`) trained by Adam on its exact
    log-likelihood; the training loss is its negative in bits per dimension."""

    likelihood_kind = "exact"
    likelihood_metric = "test_bpd"
    training_loss = "negative log-likelihood, bits per dimension"

    def __init__(self, num_components: int = 20, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.mixture = BernoulliMixture(num_components, self.image_shape)
        self.example_input_array = torch.zeros(2, *self.image_shape)
        self.epoch_means = EpochMeans(("train", "val", "test"), ["nll"])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of the batch in bits per dimension."""
        return self.bpd(-self.mixture.log_prob(images)).mean()

    @torch.no_grad()
    def log_likelihood(self, images: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        return self.mixture.log_prob(images)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mixture.sample(sample_count(n), generator)

    def step(self, stage: str, batch) -> torch.Tensor:
        nll = -self.mixture.log_prob(batch[0])
        self.epoch_means.add(stage, {"nll": nll})
        return self.bpd(nll).mean()

    def log_epoch(self, stage: str) -> None:
        nll = self.epoch_means.compute_and_reset(stage)[f"{stage}_nll"]
        self.log_dict({f"{stage}_log_likelihood": -nll, f"{stage}_bpd": self.bpd(nll)}, prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        return adam(self.parameters(), self, lr=self.hparams.lr)

    @torch.no_grad()
    def logged_images(self) -> dict[str, torch.Tensor]:
        """The K component means (ordered by weight) and 16 samples from a fixed seed."""
        order = torch.argsort(self.mixture.mixture_logits, descending=True)
        means = torch.sigmoid(self.mixture.pixel_logits()[order]).view(-1, *self.image_shape)
        generator = torch.Generator(device=self.device).manual_seed(0)
        return {"component_means": make_grid(means, nrow=10), "samples": make_grid(self.sample(16, generator), nrow=4)}

"""The VAE as a thin LightningModule around an injected encoder and decoder."""
from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from part1_vae.utils import KLD, log_normal_diag, log_standard_normal, sample_reparameterize
from shared.metrics import EpochMeans
from shared.utils import dequantize, elbo_to_bpd, make_grid, quantize, visualize_manifold


def bernoulli_nll(logits: torch.Tensor, imgs: torch.Tensor) -> torch.Tensor:
    """-log p(x | z) of images in {0, 1} under per-pixel Bernoulli logits, summed per image (nats)."""
    return F.binary_cross_entropy_with_logits(logits, imgs, reduction="none").flatten(1).sum(dim=1)


def gaussian_nll(means: torch.Tensor, log_std: torch.Tensor, imgs: torch.Tensor) -> torch.Tensor:
    """-log N(x; mean, exp(log_std)^2) per pixel, summed per image (nats): the exact density, not a bare MSE."""
    return -log_normal_diag(imgs.flatten(1), means.flatten(1), torch.broadcast_to(log_std, means.shape).flatten(1))


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


class VAE(pl.LightningModule):
    """VAE trained on the negative ELBO in bits per dimension, with one of two decoder likelihoods.

    ``likelihood="bernoulli"``: images in {0, 1}; the decoder gives per-pixel Bernoulli logits.
    ``likelihood="gaussian"``: grey-scale images k / 255, dequantized on the fly to (k + u) / 256;
    the Gaussian mean is the sigmoid of the decoder's output (so it lies in [0, 1] like the data)
    and its log-std is one learned parameter per pixel (the background needs a far smaller std than
    the strokes), kept above the dequantization noise's std. The loss is the exact Gaussian negative
    log-density, and every bpd reported then bounds bits per *8-bit* pixel: nats / (D ln 2) + 8.

    Args:
        encoder: images ``[B, 1, 28, 28]`` -> ``(mean, log_std)`` of q(z|x), each ``[B, z_dim]``.
        decoder: latents ``[B, z_dim]`` -> logits ``[B, 1, 28, 28]`` (Bernoulli logits, or the Gaussian
            mean before its sigmoid).
        z_dim: latent size (for the prior and the fixed noise of the sample grids).
        lr: Adam learning rate.
        iw_samples: importance samples per test image for ``test_iw_bpd``.
        iw_chunk: how many of those go through the decoder at once (memory, not result).
        likelihood: "bernoulli" or "gaussian".
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, z_dim: int, lr: float = 1e-3,
                 iw_samples: int = 1000, iw_chunk: int = 100, likelihood: str = "bernoulli"):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        self.save_hyperparameters(ignore=["encoder", "decoder"])
        self.encoder, self.decoder = encoder, decoder
        self.gaussian = likelihood == "gaussian"
        self.bpd_offset = DEQUANTIZED_BPD_OFFSET if self.gaussian else 0.0
        if self.gaussian:  # log_std = floor + softplus(raw), starting at log_std = 0
            self.log_std_raw = nn.Parameter(torch.full((1, 28, 28), math.log(math.expm1(-_LOG_STD_FLOOR))))
        # Fixed noise (saved with the checkpoint) so sample grids of different epochs compare.
        self.register_buffer("fixed_z", torch.randn(64, z_dim))
        self.example_input_array = torch.zeros(2, 1, 28, 28)
        # Running means per stage, in nats per image (test_iw_nll in the test stage only).
        self.epoch_means = EpochMeans(("train", "val", "test"), ["recon", "kl", "iw_nll"])

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

    def _bpd(self, nll: torch.Tensor, shape) -> torch.Tensor:
        return elbo_to_bpd(nll, shape) + self.bpd_offset

    def _nelbo_terms(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.encoder(imgs)
        z = sample_reparameterize(mean, torch.exp(log_std))
        return self._nll(self.decoder(z), imgs), KLD(mean, log_std)

    def forward(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch means of reconstruction loss (nats), KL (nats) and negative-ELBO bits per dimension.

        ``imgs`` are taken as the likelihood models them (for the Gaussian: already dequantized).
        """
        rec, kl = self._nelbo_terms(imgs)
        return rec.mean(), kl.mean(), self._bpd(rec + kl, imgs.shape).mean()

    @torch.no_grad()
    def sample(self, batch_size: int, z: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``[B, 1, 28, 28]`` and the means they were drawn from.

        Bernoulli: binary samples. Gaussian: mean + std * noise, quantized to the 8-bit image it falls
        in (shown as k / 255, so in [0, 1]); the means are the sigmoid outputs, in [0, 1].
        """
        if z is None:
            z = torch.randn(batch_size, self.hparams.z_dim, device=self.device)
        means = torch.sigmoid(self.decoder(z))
        if self.gaussian:
            return quantize_grey(means + torch.exp(self.pixel_log_std()) * torch.randn_like(means)), means
        return torch.bernoulli(means), means

    @torch.no_grad()
    def importance_weighted_nll(self, imgs: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """-log p(x) estimated with k importance samples from q(z|x) (the IWAE bound), nats per image.

        log p(x) >= log (1/k) sum_i p(x, z_i) / q(z_i | x); the bound tightens as k grows and equals
        the ELBO at k = 1.
        """
        k = k or self.hparams.iw_samples
        mean, log_std = self.encoder(imgs)
        log_weights = []
        for start in range(0, k, self.hparams.iw_chunk):
            n = min(self.hparams.iw_chunk, k - start)
            z = sample_reparameterize(mean.expand(n, *mean.shape), torch.exp(log_std).expand(n, *log_std.shape))
            logits = self.decoder(z.reshape(-1, z.shape[-1]))
            log_px_z = -self._nll(logits, imgs.repeat(n, 1, 1, 1)).view(n, -1)
            log_weights.append(log_px_z + log_standard_normal(z) - log_normal_diag(z, mean, log_std))
        return -(torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k))

    def _update_means(self, stage: str, imgs: torch.Tensor) -> torch.Tensor:
        """Add the batch to the stage's running means; return the batch's bpd (the training loss)."""
        rec, kl = self._nelbo_terms(imgs)
        self.epoch_means.add(stage, {"recon": rec, "kl": kl})
        return self._bpd(rec + kl, imgs.shape).mean()

    def _log_epoch(self, stage: str) -> None:
        means = {key.removeprefix(f"{stage}_"): mean for key, mean in self.epoch_means.compute_and_reset(stage).items()}
        nelbo = means["recon"] + means["kl"]  # nELBO and bpd are linear in the means
        logged = {f"{stage}_recon": means["recon"], f"{stage}_kl": means["kl"], f"{stage}_nelbo": nelbo,
                  f"{stage}_bpd": self._bpd(nelbo, self.example_input_array.shape)}
        if "iw_nll" in means:
            logged[f"{stage}_iw_bpd"] = self._bpd(means["iw_nll"], self.example_input_array.shape)
        self.log_dict(logged, prog_bar=True, sync_dist=True)

    def training_step(self, batch, batch_idx):
        return self._update_means("train", self._prepare(batch[0]))

    def validation_step(self, batch, batch_idx):
        self._update_means("val", self._prepare(batch[0]))

    def test_step(self, batch, batch_idx):
        imgs = self._prepare(batch[0])
        self._update_means("test", imgs)
        self.epoch_means.add("test", {"iw_nll": self.importance_weighted_nll(imgs)})

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        fused = self.device.type in ("cpu", "cuda")
        if not self.gaussian:
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, fused=fused)
        # The log-std must travel several units (std 1 down to ~1e-3 on the always-black border); Adam moves
        # a parameter by about lr a step, so at the networks' rate that alone would take ~20 epochs.
        networks = [p for name, p in self.named_parameters() if name != "log_std_raw"]
        log_std = {"params": [self.log_std_raw], "lr": LOG_STD_LR_FACTOR * self.hparams.lr}
        return torch.optim.Adam([{"params": networks}, log_std], lr=self.hparams.lr, fused=fused)

    @torch.no_grad()
    def image_grids(self) -> dict[str, torch.Tensor]:
        """8x8 grids from the fixed noise: the means and samples drawn from them; the manifold (means) when z is 2-D."""
        generator = torch.Generator(device=self.device).manual_seed(0)
        means = torch.sigmoid(self.decoder(self.fixed_z))
        if self.gaussian:
            noise = torch.randn(means.shape, generator=generator, device=self.device)
            samples = quantize_grey(means + torch.exp(self.pixel_log_std()) * noise)
        else:
            samples = torch.bernoulli(means, generator=generator)
        grids = {"samples": make_grid(samples), "sample_means": make_grid(means)}
        if self.hparams.z_dim == 2:
            grids["manifold"] = visualize_manifold(self.decoder)
        return grids

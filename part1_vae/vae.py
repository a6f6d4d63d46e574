"""The VAE as a thin LightningModule around an injected encoder and decoder."""
from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from part1_vae.utils import KLD, log_normal_diag, log_standard_normal, sample_reparameterize
from shared.utils import elbo_to_bpd, make_grid, visualize_manifold


def bernoulli_nll(logits: torch.Tensor, imgs: torch.Tensor) -> torch.Tensor:
    """-log p(x | z) of images in {0, 1} under per-pixel Bernoulli logits, summed per image (nats)."""
    return F.binary_cross_entropy_with_logits(logits, imgs, reduction="none").flatten(1).sum(dim=1)


class VAE(pl.LightningModule):
    """Bernoulli VAE on images in {0, 1}, trained on the negative ELBO in bits per dimension.

    Args:
        encoder: images ``[B, 1, 28, 28]`` -> ``(mean, log_std)`` of q(z|x), each ``[B, z_dim]``.
        decoder: latents ``[B, z_dim]`` -> Bernoulli logits ``[B, 1, 28, 28]``.
        z_dim: latent size (for the prior and the fixed noise of the sample grids).
        lr: Adam learning rate.
        iw_samples: importance samples per test image for ``test_iw_bpd``.
        iw_chunk: how many of those go through the decoder at once (memory, not result).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, z_dim: int, lr: float = 1e-3,
                 iw_samples: int = 1000, iw_chunk: int = 100):
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "decoder"])
        self.encoder, self.decoder = encoder, decoder
        # Fixed noise (saved with the checkpoint) so sample grids of different epochs compare.
        self.register_buffer("fixed_z", torch.randn(64, z_dim))
        self.example_input_array = torch.zeros(2, 1, 28, 28)
        # One running mean per stage and quantity, in nats per image (torchmetrics syncs them under DDP).
        names = ["train_recon", "train_kl", "val_recon", "val_kl", "test_recon", "test_kl", "test_iw_nll"]
        self.epoch_means = nn.ModuleDict({name: MeanMetric(nan_strategy="disable") for name in names})

    def _nelbo_terms(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.encoder(imgs)
        z = sample_reparameterize(mean, torch.exp(log_std))
        return bernoulli_nll(self.decoder(z), imgs), KLD(mean, log_std)

    def forward(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch means of reconstruction loss (nats), KL (nats) and negative-ELBO bits per dimension."""
        rec, kl = self._nelbo_terms(imgs)
        return rec.mean(), kl.mean(), elbo_to_bpd(rec + kl, imgs.shape).mean()

    @torch.no_grad()
    def sample(self, batch_size: int, z: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary samples ``[B, 1, 28, 28]`` and the Bernoulli means they were drawn from."""
        if z is None:
            z = torch.randn(batch_size, self.hparams.z_dim, device=self.device)
        means = torch.sigmoid(self.decoder(z))
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
            log_px_z = -bernoulli_nll(logits, imgs.repeat(n, 1, 1, 1)).view(n, -1)
            log_weights.append(log_px_z + log_standard_normal(z) - log_normal_diag(z, mean, log_std))
        return -(torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k))

    def _update_means(self, stage: str, imgs: torch.Tensor) -> torch.Tensor:
        """Add the batch to the stage's running means; return the batch's bpd (the training loss)."""
        rec, kl = self._nelbo_terms(imgs)
        self.epoch_means[f"{stage}_recon"].update(rec)
        self.epoch_means[f"{stage}_kl"].update(kl)
        return elbo_to_bpd(rec + kl, imgs.shape).mean()

    def _log_epoch(self, stage: str) -> None:
        # Means are accumulated per image and logged once per epoch because Lightning's per-step
        # self.log costs more than a step of this small model. nELBO and bpd are linear in the means.
        keys = [key for key in self.epoch_means if key.startswith(f"{stage}_")]
        means = {key.removeprefix(f"{stage}_"): self.epoch_means[key].compute() for key in keys}
        nelbo = means["recon"] + means["kl"]
        logged = {f"{stage}_recon": means["recon"], f"{stage}_kl": means["kl"], f"{stage}_nelbo": nelbo,
                  f"{stage}_bpd": elbo_to_bpd(nelbo, self.example_input_array.shape)}
        if "iw_nll" in means:
            logged[f"{stage}_iw_bpd"] = elbo_to_bpd(means["iw_nll"], self.example_input_array.shape)
        self.log_dict(logged, prog_bar=True, sync_dist=True)
        for key in keys:
            self.epoch_means[key].reset()

    def training_step(self, batch, batch_idx):
        return self._update_means("train", batch[0])

    def validation_step(self, batch, batch_idx):
        self._update_means("val", batch[0])

    def test_step(self, batch, batch_idx):
        self._update_means("test", batch[0])
        self.epoch_means["test_iw_nll"].update(self.importance_weighted_nll(batch[0]))

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, fused=self.device.type in ("cpu", "cuda"))

    @torch.no_grad()
    def image_grids(self) -> dict[str, torch.Tensor]:
        """8x8 grids from the fixed noise: Bernoulli means and binary samples; the manifold when z is 2-D."""
        generator = torch.Generator(device=self.device).manual_seed(0)
        means = torch.sigmoid(self.decoder(self.fixed_z))
        grids = {"samples": make_grid(torch.bernoulli(means, generator=generator)), "sample_means": make_grid(means)}
        if self.hparams.z_dim == 2:
            grids["manifold"] = visualize_manifold(self.decoder)
        return grids

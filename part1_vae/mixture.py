"""A latent-class baseline with an exact likelihood: a mixture of K product-Bernoulli images."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from shared.metrics import EpochMeans
from shared.utils import elbo_to_bpd, make_grid


class BernoulliMixture(pl.LightningModule):
    """p(z = k) = softmax(b)_k and p(x_d = 1 | z = k) = sigmoid(w_kd + c_d), pixels independent given z.

    Trained by gradient ascent on the exact log-likelihood. With ``w`` near 0 and ``c = 0`` every
    pixel starts as a fair coin, so an untrained model scores D log(1/2) = -543 nats per MNIST image.
    """

    def __init__(self, num_components: int = 20, image_shape: tuple[int, ...] = (1, 28, 28), lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        num_pixels = int(torch.tensor(image_shape).prod())
        self.mixture_logits = nn.Parameter(torch.zeros(num_components))  # b
        # Small random w breaks the symmetry between components; c is shared by all of them.
        self.component_logits = nn.Parameter(0.01 * torch.randn(num_components, num_pixels))  # w
        self.pixel_bias = nn.Parameter(torch.zeros(num_pixels))  # c
        self.example_input_array = torch.zeros(2, *image_shape)
        self.epoch_means = EpochMeans(("train", "val", "test"), ["nll"])

    def pixel_logits(self) -> torch.Tensor:
        """``[K, D]`` logits of p(x_d = 1 | z = k)."""
        return self.component_logits + self.pixel_bias

    def log_prob(self, imgs: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) in nats for images ``[B, ...]`` in {0, 1}: logsumexp over components, never a product."""
        x = imgs.flatten(1)
        logits = self.pixel_logits()
        # log p(x | k) = sum_d x_d log s(l_kd) + (1 - x_d) log s(-l_kd), as two matrix products.
        log_px_given_k = x @ F.logsigmoid(logits).T + (1 - x) @ F.logsigmoid(-logits).T
        return torch.logsumexp(log_px_given_k + F.log_softmax(self.mixture_logits, dim=0), dim=1)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of the batch in bits per dimension."""
        return elbo_to_bpd(-self.log_prob(imgs), imgs.shape).mean()

    @torch.no_grad()
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Binary images ``[B, *image_shape]``: a component from p(z), then independent pixels."""
        components = torch.multinomial(F.softmax(self.mixture_logits, dim=0), batch_size, replacement=True,
                                       generator=generator)
        probs = torch.sigmoid(self.pixel_logits()[components])
        return torch.bernoulli(probs, generator=generator).view(batch_size, *self.hparams.image_shape)

    def _step(self, stage: str, imgs: torch.Tensor) -> torch.Tensor:
        nll = -self.log_prob(imgs)
        self.epoch_means.add(stage, {"nll": nll})
        return elbo_to_bpd(nll, imgs.shape).mean()

    def _log_epoch(self, stage: str) -> None:
        nll = self.epoch_means.compute_and_reset(stage)[f"{stage}_nll"]
        self.log_dict({f"{stage}_log_likelihood": -nll, f"{stage}_bpd": elbo_to_bpd(nll, self.example_input_array.shape)},
                      prog_bar=True, sync_dist=True)

    def training_step(self, batch, batch_idx):
        return self._step("train", batch[0])

    def validation_step(self, batch, batch_idx):
        self._step("val", batch[0])

    def test_step(self, batch, batch_idx):
        self._step("test", batch[0])

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    @torch.no_grad()
    def image_grids(self) -> dict[str, torch.Tensor]:
        """The K component means (ordered by weight) and 16 samples from a fixed seed."""
        order = torch.argsort(self.mixture_logits, descending=True)
        means = torch.sigmoid(self.pixel_logits()[order]).view(-1, *self.hparams.image_shape)
        generator = torch.Generator(device=self.device).manual_seed(0)
        return {"component_means": make_grid(means, nrow=10), "samples": make_grid(self.sample(16, generator), nrow=4)}

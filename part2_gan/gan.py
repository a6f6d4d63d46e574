"""The GAN as a thin LightningModule around an injected generator and discriminator."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MaxMetric

from shared.metrics import EpochMeans
from shared.utils import interpolate_latents, make_grid


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class GAN(pl.LightningModule):
    """GAN with the non-saturating generator loss, trained with two Adam optimizers (manual optimization).

    Each training step first updates the generator on ``-log D(G(z))``, then the discriminator on
    ``-log D(x) - log(1 - D(G(z')))`` with a freshly drawn fake batch ``z'``, so the discriminator
    never judges the very batch the generator was just tuned against.

    Args:
        generator: latents ``[B, z_dim]`` -> images ``[B, 1, 28, 28]`` in [-1, 1].
        discriminator: images -> logits ``[B, 1]``.
        z_dim: latent size (for the prior and the fixed noise of the sample grids).
        lr, betas: Adam settings shared by both optimizers.
        num_interpolations, interpolation_steps: the interpolation grid drawn at logged epochs.
    """

    # Range of what ``sample`` returns, for the sample-quality evaluator.
    sample_range = (-1.0, 1.0)

    def __init__(self, generator: nn.Module, discriminator: nn.Module, z_dim: int, lr: float = 2e-4,
                 betas: tuple[float, float] = (0.5, 0.999), num_interpolations: int = 4, interpolation_steps: int = 5):
        super().__init__()
        self.save_hyperparameters(ignore=["generator", "discriminator"])
        self.automatic_optimization = False
        self.generator, self.discriminator = generator, discriminator
        # Fixed latents (saved with the checkpoint) so the grids of different epochs compare.
        self.register_buffer("fixed_z", torch.randn(64, z_dim))
        self.register_buffer("fixed_interpolation_ends", torch.randn(2, num_interpolations, z_dim))
        self.example_input_array = torch.zeros(2, z_dim)
        self.epoch_means = EpochMeans(("train", "test"), ["g_loss", "d_loss", "d_acc_real", "d_acc_fake", "d_real",
                                                          "d_fake"])
        # Collapse watch: the epoch's highest fraction of fakes that fooled the discriminator.
        self.most_fakes_passed = MaxMetric()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def _noise(self, batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size, self.hparams.z_dim, device=self.device)

    @torch.no_grad()
    def sample(self, batch_size: int, z: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``[B, 1, 28, 28]`` in [-1, 1] from latents ``z`` (default: drawn from the prior)."""
        return self.generator(self._noise(batch_size) if z is None else z)

    @torch.no_grad()
    def interpolate(self, batch_size: int, interpolation_steps: int, z_start: torch.Tensor | None = None,
                    z_end: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, interpolation_steps + 2, 1, 28, 28]``: images along straight latent lines, ends included.

        The end latents are drawn from the prior unless given.
        """
        z_start = self._noise(batch_size) if z_start is None else z_start
        z_end = self._noise(batch_size) if z_end is None else z_end
        z = interpolate_latents(z_start, z_end, interpolation_steps)
        images = self.generator(z.flatten(0, 1))
        return images.view(batch_size, interpolation_steps + 2, *images.shape[1:])

    def _discriminate(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The discriminator's loss on a real and a fake batch, and the figures that tell how it is doing."""
        real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
        loss = _bce(real_logits, 1.0) + _bce(fake_logits, 0.0)
        figures = {"d_acc_real": (real_logits > 0).float().mean(), "d_acc_fake": (fake_logits < 0).float().mean(),
                   "d_real": torch.sigmoid(real_logits).mean(), "d_fake": torch.sigmoid(fake_logits).mean()}
        return loss, figures

    def _log_epoch(self, stage: str) -> None:
        self.log_dict(self.epoch_means.compute_and_reset(stage), prog_bar=stage == "train")

    def training_step(self, batch, batch_idx):
        """Returns ``loss`` (the discriminator's: 2 ln 2 for one that cannot tell) and ``g_loss``."""
        real = batch[0]
        opt_g, opt_d = self.optimizers()

        self.toggle_optimizer(opt_g)
        g_loss = _bce(self.discriminator(self.generator(self._noise(len(real)))), 1.0)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        self.toggle_optimizer(opt_d)
        with torch.no_grad():
            fake = self.generator(self._noise(len(real)))
        d_loss, figures = self._discriminate(real, fake)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        self.epoch_means.add("train", {"g_loss": g_loss, "d_loss": d_loss, **figures}, count=len(real))
        self.most_fakes_passed.update(1.0 - figures["d_acc_fake"].detach())
        return {"loss": d_loss, "g_loss": g_loss}

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")
        collapsed = bool(self.most_fakes_passed.compute() == 0.0)
        self.most_fakes_passed.reset()
        self.log("train_d_collapsed", float(collapsed))
        if collapsed:
            rank_zero_warn(f"discriminator collapse in epoch {self.current_epoch}: it caught every fake image of "
                           f"every batch (accuracy on fake pinned at 100%), so the generator learns little; "
                           f"consider a lower discriminator learning rate or more discriminator dropout")

    def test_step(self, batch, batch_idx):
        real = batch[0]
        fake = self.generator(self._noise(len(real)))
        d_loss, figures = self._discriminate(real, fake)
        self.epoch_means.add("test", {"g_loss": _bce(self.discriminator(fake), 1.0), "d_loss": d_loss, **figures},
                             count=len(real))

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        adam = dict(lr=self.hparams.lr, betas=tuple(self.hparams.betas), fused=self.device.type in ("cpu", "cuda"))
        return [torch.optim.Adam(self.generator.parameters(), **adam),
                torch.optim.Adam(self.discriminator.parameters(), **adam)]

    @torch.no_grad()
    def image_grids(self) -> dict[str, torch.Tensor]:
        """An 8x8 grid from the fixed noise; one row per fixed interpolation, ends included."""
        z_start, z_end = self.fixed_interpolation_ends
        lines = self.interpolate(len(z_start), self.hparams.interpolation_steps, z_start, z_end)
        return {"samples": make_grid(self.generator(self.fixed_z), nrow=8, value_range=self.sample_range),
                "interpolations": make_grid(lines.flatten(0, 1), nrow=lines.shape[1], value_range=self.sample_range)}

"""Part 2's GAN, a thin LightningModule around injected networks (the adversarial autoencoder: part2_gan.aae)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from part2_gan.losses import adversarial_bce, r1_penalty, top_k_generator_loss, top_k_kept
from shared.generative import GenerativeModel, check_data_kind, evaluating, sample_count
from shared.lean_lightning import GroupedTraining
from shared.metrics import EpochMeans
from shared.schedules import adam
from shared.utils import interpolate_latents, make_grid
from shared.weight_average import averaged_copy, update_average


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> [0, 1], the range of every model's samples."""
    return (images + 1.0) / 2.0


class GAN(GenerativeModel, GroupedTraining):
    """GAN with the non-saturating generator loss, trained with two Adam optimizers (manual optimization).

    Each training step first updates the generator on ``-log D(G(z))``, then the discriminator on
    ``-log D(x) - log(1 - D(G(z')))`` with a freshly drawn fake batch ``z'``, so the discriminator
    never judges the very batch the generator was just tuned against. Real batches come in the generator's range,
    [-1, 1]: ``MNISTDataModule(value_range="pm1", binarize=data == "binary")``, as ``part2_gan.train`` builds it (not
    checked per step, which would cost a host sync; the default [0, 1] data would train a GAN to another range).

    Args:
        generator: latents ``[B, z_dim]`` -> images ``[B, 1, 28, 28]`` in [-1, 1]; discriminator: images -> logits.
        z_dim: latent size (for the prior and the fixed noise of the sample grids).
        lr, betas: Adam settings of both optimizers; lr_disc: the discriminator's learning rate, if not ``lr``
            (the two time-scale update rule, Heusel et al., 2017).
        real_label: the discriminator's target for real images; below 1, one-sided label smoothing
            (Salimans et al., 2016), which keeps the discriminator from growing over-confident.
        r1_gamma: above 0, the discriminator's training loss adds ``r1_gamma / 2`` times
            :func:`part2_gan.losses.r1_penalty` (the test's ``test_d_loss`` does not: it needs no gradient).
        top_k, top_k_decay: below 1, top-k training (:func:`part2_gan.losses.top_k_generator_loss`): the
            generator's loss keeps the fakes the discriminator scores highest, a fraction of the batch falling from
            1 by ``top_k_decay`` an epoch down to ``top_k`` (:func:`part2_gan.losses.top_k_kept`); ``train_g_loss``
            is then the loss on the kept fakes.
        num_interpolations, interpolation_steps: the interpolation grid drawn at logged epochs.
        data: the MNIST variant trained on, "grey" or "binary" (shown to the generator in [-1, 1]).
        ema_decay: above 0, samples come from a moving average of the generator (:mod:`shared.weight_average`),
            updated after every generator step; training is the same. ``sample_from_average = False``
            samples from the trained generator instead. The test stage's figures (``test_d_*``, ``test_g_loss``)
            pit the discriminator against the trained generator, the one it was trained against.
        num_categories: above 0, InfoGAN's categorical code (Chen et al., 2016): the latent is ``z_dim`` Gaussian
            dimensions followed by a one-hot code drawn uniformly from ``num_categories``, the generator takes
            ``z_dim + num_categories`` inputs and the discriminator returns ``1 + num_categories`` logits, the
            last ones its guess of a fake's code (the Q head, sharing its body). Both networks also minimise
            ``info_weight`` times that guess's cross-entropy (a lower bound on the code's mutual information
            with the image), so that each code settles on a distinct kind of image; on MNIST, a digit.
    """

    training_loss = "discriminator loss, nats (2 ln 2 for a discriminator that cannot tell)"
    progress_metrics = ("train_d_loss", "train_g_loss", "train_d_acc_real", "train_d_acc_fake")
    leaves_networks_unused = True  # each optimizer step trains one network (DDP: find them)
    charts = {"losses: discriminator and generator": r"^train_(d|g)_loss$",
              "mean D(x) and D(G(z))": r"^train_d_(real|fake)$",
              "discriminator accuracy on real and fake": r"^train_d_acc_(real|fake)$"}

    def __init__(self, generator: nn.Module, discriminator: nn.Module, z_dim: int, lr: float = 2e-4,
                 betas: tuple[float, float] = (0.5, 0.999), num_interpolations: int = 4, interpolation_steps: int = 5,
                 data: str = "grey", lr_disc: float | None = None, real_label: float = 1.0, ema_decay: float = 0.0,
                 r1_gamma: float = 0.0, top_k: float = 1.0, top_k_decay: float = 0.99, num_categories: int = 0,
                 info_weight: float = 1.0):
        super().__init__()
        self.save_hyperparameters(ignore=["generator", "discriminator"], logger=False)
        self.data = check_data_kind(data)
        self.generator, self.discriminator = generator, discriminator
        self.generator_ema = averaged_copy(generator) if ema_decay > 0 else None
        self.register_buffer("ema_updates", torch.zeros(()) if ema_decay > 0 else None)
        self.keeps_weight_average, self.sample_from_average = ema_decay > 0, True
        # Fixed latents (saved with the checkpoint) so the grids of different epochs compare.
        cpu = torch.device("cpu")
        self.register_buffer("fixed_z", self._prior_latents(64, cpu))
        ends = self._prior_latents(2 * num_interpolations, cpu).view(2, num_interpolations, -1)
        ends[1, :, z_dim:] = ends[0, :, z_dim:]  # a line keeps its code: a blend of two one-hot codes is no prior draw
        self.register_buffer("fixed_interpolation_ends", ends)
        self.example_input_array = torch.zeros(2, z_dim + num_categories)
        added = [f"{info_weight:g} x the code's cross-entropy"] * (num_categories > 0)
        added += ["the R1 penalty"] * (r1_gamma > 0)
        if added:  # the 2 ln 2 is then the real/fake part's alone
            self.training_loss = f"{self.training_loss} + {' + '.join(added)}"
        figures = ["g_loss", "d_loss", "d_acc_real", "d_acc_fake", "d_real", "d_fake"]
        self.epoch_means = EpochMeans(("train", "test"), figures + ["code_acc"] * (num_categories > 0))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The generator's images in [-1, 1], the range it trains in."""
        return self.generator(z)

    def latents(self, noise: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        """The generator's input ``[..., z_dim (+ num_categories)]`` for Gaussian ``noise [..., z_dim]`` and, where
        the GAN has a categorical code, the code's values ``codes [...]`` (as a one-hot after the noise)."""
        if not self.hparams.num_categories:
            return noise
        return torch.cat([noise, F.one_hot(codes, self.hparams.num_categories).to(noise.dtype)], dim=-1)

    def _prior_latents(self, batch_size: int, device: torch.device | None = None, code: int | None = None
                       ) -> torch.Tensor:
        """Draws of the prior on ``device`` (the module's by default): Gaussian noise, and the code's values if any
        (uniform, or ``code`` for every row)."""
        device = self.device if device is None else device
        noise = torch.randn(batch_size, self.hparams.z_dim, device=device)
        codes = None
        if self.hparams.num_categories:
            codes = (torch.randint(self.hparams.num_categories, (batch_size,), device=device) if code is None
                     else torch.full((batch_size,), code, device=device))
        return self.latents(noise, codes)

    def _codes(self, latents: torch.Tensor) -> torch.Tensor:
        """The code value of each latent row (the one-hot part's index)."""
        return latents[:, self.hparams.z_dim:].argmax(1)

    def _plus_code_loss(self, loss: torch.Tensor, fake_outputs: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """``loss`` plus ``info_weight`` times the cross-entropy of the Q head's guess of the fakes' codes, if any."""
        if not self.hparams.num_categories:
            return loss
        return loss + self.hparams.info_weight * F.cross_entropy(fake_outputs[:, 1:].float(), self._codes(latents))

    @property
    def sampling_generator(self) -> nn.Module:
        """The network that :meth:`sample` and :meth:`interpolate` draw from: the weight average when kept."""
        return self.generator_ema if self.generator_ema is not None and self.sample_from_average else self.generator

    @torch.no_grad()
    def sample(self, n: int, z: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``[n, 1, 28, 28]`` in [0, 1] from latents ``z`` (default: drawn from the prior), in eval mode."""
        count = sample_count(n, z)
        with evaluating(self.sampling_generator) as generator:
            return _to_unit(generator(self._prior_latents(count) if z is None else z))

    @torch.no_grad()
    def sample_with_code(self, n: int, code: int) -> torch.Tensor:
        """Images ``[n, 1, 28, 28]`` in [0, 1] drawn with categorical code ``code`` (the Gaussian part from the
        prior): what one value of the code has come to mean."""
        if not 0 <= code < self.hparams.num_categories:
            raise ValueError(f"code {code} outside the categorical code's {self.hparams.num_categories} values")
        return self.sample(n, self._prior_latents(n, code=code))

    @torch.no_grad()
    def interpolate(self, batch_size: int, interpolation_steps: int, z_start: torch.Tensor | None = None,
                    z_end: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, interpolation_steps + 2, 1, 28, 28]`` images in [0, 1] along straight latent lines, ends included
        (drawn from the prior unless given)."""
        z_start = self._prior_latents(batch_size) if z_start is None else z_start
        z_end = self._prior_latents(batch_size) if z_end is None else z_end
        z = interpolate_latents(z_start, z_end, interpolation_steps)
        with evaluating(self.sampling_generator) as generator:
            images = _to_unit(generator(z.flatten(0, 1)))
        return images.view(batch_size, interpolation_steps + 2, *images.shape[1:])

    def _discriminate(self, real: torch.Tensor, fake: torch.Tensor, fake_latents: torch.Tensor
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """The discriminator's loss on a real and a fake batch (drawn from ``fake_latents``), the figures that
        tell how it is doing, and its outputs for the fakes (the test's generator loss: no second pass)."""
        penalized = self.hparams.r1_gamma > 0 and torch.is_grad_enabled()
        real = real.detach().requires_grad_(True) if penalized else real
        real_logits, fake_outputs = self.discriminator(real)[:, :1], self.discriminator(fake)
        fake_logits = fake_outputs[:, :1]
        loss = self._plus_code_loss(adversarial_bce(real_logits, self.hparams.real_label)
                                    + adversarial_bce(fake_logits, 0.0), fake_outputs, fake_latents)
        if penalized:
            loss = loss + self.hparams.r1_gamma / 2 * r1_penalty(real_logits, real)
        figures = {"d_acc_real": (real_logits > 0).float().mean(), "d_acc_fake": (fake_logits < 0).float().mean(),
                   "d_real": torch.sigmoid(real_logits).mean(), "d_fake": torch.sigmoid(fake_logits).mean()}
        if self.hparams.num_categories:
            figures["code_acc"] = (fake_outputs[:, 1:].argmax(1) == self._codes(fake_latents)).float().mean()
        return loss, figures, fake_outputs

    def train_batch(self, batch):
        """Returns ``d_loss`` (the training loss: 2 ln 2 for a discriminator that cannot tell) and ``g_loss``."""
        real = batch[0]
        opt_g, opt_d = self.optimizers()

        self.toggle_optimizer(opt_g)
        latents = self._prior_latents(len(real))
        fake_outputs = self.discriminator(self.generator(latents))
        kept = top_k_kept(len(real), self.current_epoch, self.hparams.top_k, self.hparams.top_k_decay)
        g_loss = self._plus_code_loss(top_k_generator_loss(fake_outputs[:, :1], kept), fake_outputs, latents)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        if self.generator_ema is not None:
            update_average(self.generator_ema, self.generator, self.ema_updates, self.hparams.ema_decay)

        self.toggle_optimizer(opt_d)
        latents = self._prior_latents(len(real))
        with torch.no_grad():
            fake = self.generator(latents)
        d_loss, figures, _ = self._discriminate(real, fake, latents)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        self.epoch_means.add("train", {"g_loss": g_loss, "d_loss": d_loss, **figures}, count=len(real))
        return {"d_loss": d_loss, "g_loss": g_loss}

    def on_train_epoch_end(self) -> None:
        means = self.epoch_means.compute_and_reset("train")
        self.log_dict(means, prog_bar=True, sync_dist=True)
        # Every batch's accuracy on fakes is k / B, so the epoch's mean is exactly 1 only if each batch's was.
        collapsed = bool(means["train_d_acc_fake"] == 1.0)
        self.log("train_d_collapsed", float(collapsed), sync_dist=True)
        if collapsed:
            rank_zero_warn(f"discriminator collapse in epoch {self.current_epoch + 1}: it caught every fake image of "
                           f"every batch (accuracy on fake pinned at 100%), so the generator learns little; "
                           f"consider a lower discriminator learning rate or more discriminator dropout")

    def test_step(self, batch, batch_idx):
        real = batch[0]
        latents = self._prior_latents(len(real))
        fake = self.generator(latents)
        d_loss, figures, fake_outputs = self._discriminate(real, fake, latents)
        # As in training (without top-k, a schedule of training): with a code, its cross-entropy too, as d_loss has.
        g_loss = self._plus_code_loss(adversarial_bce(fake_outputs[:, :1], 1.0), fake_outputs, latents)
        self.epoch_means.add("test", {"g_loss": g_loss, "d_loss": d_loss, **figures}, count=len(real))

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.epoch_means.compute_and_reset("test"), sync_dist=True)

    def configure_optimizers(self):
        betas = tuple(self.hparams.betas)
        return [adam(self.generator.parameters(), self, lr=self.hparams.lr, betas=betas),
                adam(self.discriminator.parameters(), self, lr=self.hparams.lr_disc or self.hparams.lr, betas=betas)]

    @torch.no_grad()
    def logged_images(self) -> dict[str, torch.Tensor]:
        """An 8x8 grid from the fixed noise; one row per fixed interpolation, ends included."""
        z_start, z_end = self.fixed_interpolation_ends
        lines = self.interpolate(len(z_start), self.hparams.interpolation_steps, z_start, z_end)
        return {"samples": make_grid(self.sample(len(self.fixed_z), self.fixed_z), nrow=8),
                "interpolations": make_grid(lines.flatten(0, 1), nrow=lines.shape[1])}

"""Part 3's LightningModules around an injected flow: the toy 2-D flow and the image flow on MNIST with
binary or 8-bit pixels.

Each stage accumulates the negative log-likelihood per point and logs it once per epoch (``*_nll``
in nats, ``*_bpd`` in bits per dimension); the training loss is the batch's bpd.

The image flow's likelihood of discrete data (L levels per pixel: 2 for binary images, 256 for 8-bit
ones). A flow has a density p(y) on continuous y, not a probability for x in {0, ..., L - 1}^D, so each
pixel level k owns the cell [k/L, (k+1)/L) of (0, 1) (``shared.densities.dequantize``) and P(x) = integral
of p(y) over the cells of x. A dequantizer (:mod:`part3_flows.dequantization`) draws u in (0, 1)^D with
density q(u | x) and y = (x + u) / L, whose density on the cells is q(u | x) L^D; by Jensen

    log P(x) = log E_q[p(y) / (q(u | x) L^D)] >= E_q[log p(y) - log q(u | x)] - D log L,

so  -log P(x) <= E_q[-log p(y) + log q(u | x)] + D log L  (nats per image; bpd divides by D ln 2, so
the figure is in bits per discrete pixel, the papers' unit). Uniform dequantization has q = 1 and
log q = 0; variational dequantization (Flow++) learns q with the flow, which tightens the bound.
Training minimises the right-hand side with one u per image; the test figure averages it over several
u (same bound, less noise) and also reports the tighter -log mean_k p(y_k) / (q(u_k | x) L^D), still an
upper bound on -log P(x) by Jensen.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from part3_flows.dequantization import UniformDequantizer
from part3_flows.distributions import BimodalGaussianDiag
from part3_flows.networks import ImageFlow, NormalizingFlow
from part3_flows.plots import bpd_curve, density_contours, scatter_with_modes
from shared.densities import dequantize, nll_to_bpd, quantize
from shared.generative import GenerativeModel, sample_count
from shared.metrics import EpochMeans, StagedModule
from shared.schedules import adam, decayed_to
from shared.utils import interpolate_latents, make_grid
from shared.weight_average import averaged_copy, update_average

NUM_LEVELS = {"binary": 2, "8bit": 256}  # the levels of a pixel of each kind of data the image flow models


class FlowModule(StagedModule):
    """What both flows share: per-epoch NLL means, their bpd, Adam. Subclasses define ``nll(x)`` and
    ``num_dims``."""

    training_loss = "negative log-likelihood, bits per dimension"
    num_dims: int

    def _init_means(self, names: list[str]) -> None:
        self.epoch_means = EpochMeans(("train", "val", "test"), names)

    def bpd(self, nll: torch.Tensor) -> torch.Tensor:
        return nll_to_bpd(nll, self.num_dims)

    def step(self, stage: str, batch) -> torch.Tensor:
        nll = self.nll(batch[0])
        self.epoch_means.add(stage, {"nll": nll})
        return self.bpd(nll).mean()

    def log_epoch(self, stage: str) -> dict[str, torch.Tensor]:
        means = self.epoch_means.compute_and_reset(stage)
        logged = {**means, **{key.replace("nll", "bpd"): self.bpd(mean) for key, mean in means.items()}}
        self.log_dict(logged, prog_bar=True, sync_dist=True)
        return logged

    def configure_optimizers(self):
        return decayed_to(adam(self.parameters(), self, lr=self.hparams.lr), self.hparams.lr_final, self)


class ToyFlowModule(FlowModule):
    """The 2-D flow fitted to ``target`` by maximum likelihood; bpd = NLL / (2 ln 2).

    ``logged_images()`` returns plots: contours of the base, target and learned densities, a
    scatter of flow samples (fixed base noise) with the true modes marked, and the
    per-epoch train/val bpd curve with the target's entropy as the floor.
    """

    def __init__(self, flow: NormalizingFlow, target: BimodalGaussianDiag, lr: float = 1e-3,
                 target_entropy_bpd: float | None = None, plot_limit: float = 2.5, lr_final: float | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["flow", "target"], logger=False)
        self.flow, self.target = flow, target
        self.num_dims = flow.dim
        self.register_buffer("fixed_z", flow.base_density.sample(1000))
        self.history: dict[str, list[float]] = {"train": [], "val": []}
        self._init_means(["nll"])

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """-log p(x) per point ``[N]``, nats."""
        return -self.flow.log_prob(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nll(x)

    def sample(self, num_samples: int) -> torch.Tensor:
        return self.flow.sample(num_samples)

    def log_epoch(self, stage: str) -> dict[str, torch.Tensor]:
        logged = super().log_epoch(stage)
        if stage in self.history and not self.trainer.sanity_checking:
            self.history[stage].append(logged[f"{stage}_bpd"].item())
        return logged

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["bpd_history"] = self.history  # so the curve of a resumed run starts at epoch 1

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.history = checkpoint.get("bpd_history", {"train": [], "val": []})

    @torch.no_grad()
    def logged_images(self) -> dict[str, torch.Tensor]:
        limit, n = self.hparams.plot_limit, 100
        axis = torch.linspace(-limit, limit, n, device=self.device)
        x, y = torch.meshgrid(axis, axis, indexing="xy")
        mesh = torch.stack([x, y], dim=-1)  # [n, n, 2]: the densities take meshes directly
        learned = self.flow.log_prob(mesh.reshape(-1, 2)).reshape(n, n)
        history = {stage: list(values) for stage, values in self.history.items()}
        # Callbacks see an epoch's end before its train mean is logged. Rank zero alone draws (a mean over all
        # processes here would wait for the others forever): its own.
        if (train_nll := self.epoch_means.mean("train", "nll", all_processes=False)) is not None:
            history["train"].append(self.bpd(train_nll).item())
        epochs = len(history["train"])
        densities = {"base": self.flow.base_density.log_prob(mesh).exp(), "target": self.target.log_prob(mesh).exp(),
                     f"learned (epoch {epochs})": learned.exp()}
        samples = self.flow.transform(self.fixed_z, inverse=True)[0]
        figures = {"densities": density_contours(densities, x, y),
                   "flow_samples": scatter_with_modes(samples, self.target.mu, limit, f"epoch {epochs}")}
        if epochs:
            curves = {f"{stage} bpd": values for stage, values in history.items() if values}
            figures["bpd_curve"] = bpd_curve(curves, floor=self.hparams.target_entropy_bpd)
        return figures


class ImageFlowModule(GenerativeModel, FlowModule):
    """RealNVP/Glow on binary or 8-bit MNIST, trained on the dequantized bound (see the module docstring).

    ``nll(x)`` is E_q[-log p(y) + log q(u | x)] + D log L estimated with one dequantization draw, an upper
    bound on -log P(x) in nats per image. The test stage averages it over ``test_dequant_samples`` draws
    per image (``test_bpd``) and also logs the tighter multi-draw bound (``test_iw_bpd``).

    Args:
        flow: an :class:`ImageFlow` on (0, 1)-valued ``[1, 28, 28]`` images.
        dequantizer: a dequantizer of :mod:`part3_flows.dequantization`, trained with the flow; none: uniform.
        data: "binary" (images in {0, 1}) or "8bit" (images k / 255), as the DataModule serves them.
        lr: Adam learning rate; lr_final: if given, it decays exponentially per epoch to this at the last epoch.
        temperature: scale on the base noise for ``sample`` and the sample grids.
        test_dequant_samples: dequantization draws per test image.
        num_interpolations, interpolation_steps: the interpolation grid between pairs of test images.
        ema_decay: above 0, a moving average of the flow's and the dequantizer's weights (Polyak averaging, as
            Glow and Flow++ evaluate) is kept, updated after every training step; validation, test, samples and
            interpolations use it, and training is the same. ``sample_from_average = False`` uses the
            trained weights instead.
    """

    likelihood_metric = "test_bpd"

    def __init__(self, flow: ImageFlow, dequantizer: nn.Module | None = None, data: str = "binary", lr: float = 1e-3,
                 temperature: float = 1.0, test_dequant_samples: int = 4, num_interpolations: int = 4,
                 interpolation_steps: int = 6, lr_final: float | None = None, ema_decay: float = 0.0):
        super().__init__()
        if data not in NUM_LEVELS:
            raise ValueError(f"data must be one of {', '.join(NUM_LEVELS)}, got {data!r}")
        self.save_hyperparameters(ignore=["flow", "dequantizer"], logger=False)
        self.flow, self.dequantizer = flow, dequantizer or UniformDequantizer()
        self.averaged = averaged_copy(nn.ModuleList([self.flow, self.dequantizer])) if ema_decay > 0 else None
        self.register_buffer("ema_updates", torch.zeros(()) if ema_decay > 0 else None)
        self.keeps_weight_average, self.sample_from_average = ema_decay > 0, True
        self.data, self.num_levels = data, NUM_LEVELS[data]
        self.likelihood_kind = self.dequantizer.bound
        self.image_shape = flow.shape
        # Fixed noise and interpolation ends (saved with the checkpoint) so grids of different epochs compare.
        self.register_buffer("fixed_z", torch.randn(64, flow.dims))
        self.register_buffer("interpolation_ends", torch.zeros(2, num_interpolations, *flow.shape))
        # Set once the actnorms are initialised from data and the interpolation ends are chosen.
        self.register_buffer("data_ready", torch.tensor(False))
        self.example_input_array = torch.zeros(2, *flow.shape)
        self._init_means(["nll", "iw_nll"])

    def networks(self, sampling: bool = False) -> tuple[ImageFlow, nn.Module]:
        """(flow, dequantizer): their weight average when one is kept, but the trained ones for a training step
        (training mode, unless ``sampling``: samples come from the average whatever the mode, as the GAN's do)."""
        if self.averaged is None or (self.training and not sampling) or not self.sample_from_average:
            return self.flow, self.dequantizer
        return self.averaged[0], self.averaged[1]

    def train_batch(self, batch) -> torch.Tensor:
        loss = super().train_batch(batch)
        self.update_weight_average()
        return loss

    def update_weight_average(self) -> None:
        """The weight average (if one is kept) one step on towards the trained weights: after each optimizer step."""
        if self.averaged is not None:
            update_average(self.averaged, nn.ModuleList([self.flow, self.dequantizer]), self.ema_updates,
                           self.hparams.ema_decay)

    def levels(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] as served (k / (L - 1)) -> their levels k."""
        return torch.round(images * (self.num_levels - 1))

    def images(self, y: torch.Tensor) -> torch.Tensor:
        """Points y of (0, 1)^D -> the images k / (L - 1) of the cells they fall in."""
        return quantize(y, self.num_levels) / (self.num_levels - 1)

    def dequantized(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(y in the cells of ``x``, log q(u | x) per image): one draw of the dequantizer (``noise``: its base draw)."""
        u, log_q = self.networks()[1](x, noise)
        return dequantize(self.levels(x), self.num_levels, u), log_q

    def nll(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """One-draw estimate of the dequantized bound on -log P(x), nats per image ``[B]``."""
        y, log_q = self.dequantized(x, noise)
        return -self.networks()[0].log_prob(y) + log_q + self.num_dims * math.log(self.num_levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nll(x)

    def setup(self, stage: str) -> None:
        """Before the first fit: actnorm data init from a training batch; pick the interpolation ends.

        Runs before the weights of a resumed run are restored, which then overwrite both.
        """
        # cuDNN's convolutions default to TF32 on a GPU (10 mantissa bits): emulated on the CPU, on a perturbed
        # untrained flow, it moved an 8-bit flow's bpd by up to 0.002 an image and its inverse by 3 of 256 levels,
        # as bf16 does, which the flow command refuses. The process's setting: any later convolution stays float32.
        torch.backends.cudnn.allow_tf32 = False
        if stage != "fit" or bool(self.data_ready):
            return
        datamodule = self.trainer.datamodule
        if not hasattr(datamodule, "training_batches"):  # plain loaders: no batch to take before the fit loop's first
            raise RuntimeError(f"{type(self).__name__} initialises actnorm from a training batch as the fit starts: fit "
                               f"it with shared.data.MNISTDataModule, or call init_from_data(images) first (the "
                               f"interpolation grids' ends, test images, then stay blank)")
        # Moved as a training batch is (Lightning's transfer, with the data module's hook: with workers, the step
        # that draws dynamically binarized images), then back to the module, which Lightning moves to the device
        # only after this hook.
        batch = self.trainer.strategy.batch_to_device(next(iter(datamodule.training_batches())))
        self.init_from_data(batch[0].to(self.device))
        test_images = next(iter(datamodule.test_dataloader()))[0]
        index = torch.arange(2 * self.hparams.num_interpolations) % len(test_images)
        self.interpolation_ends.copy_(test_images[index].view_as(self.interpolation_ends))

    def init_from_data(self, images: torch.Tensor) -> None:
        """Actnorm's data init from a training batch (``images`` as served), the weight average from its result."""
        self.flow.data_init(self.dequantized(images)[0])
        if self.averaged is not None:  # the average starts at the initialised weights, as its grids at epoch 0 show
            self.averaged.load_state_dict(nn.ModuleList([self.flow, self.dequantizer]).state_dict())
        self.data_ready.fill_(True)

    def nll_draws(self, x: torch.Tensor, draws: int | None = None) -> torch.Tensor:
        """``[draws, B]`` (default ``test_dequant_samples``): the one-draw bound for independent
        dequantization draws; their mean is the test figure, and -log mean exp(-.) the tighter multi-draw bound."""
        return torch.stack([self.nll(x) for _ in range(draws or self.hparams.test_dequant_samples)])

    @torch.no_grad()
    def log_likelihood(self, images: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        """Minus the dequantized bound, averaged over ``num_samples`` draws (default ``test_dequant_samples``), of
        the networks :meth:`networks` gives: with a weight average, the trained weights' in training mode (as
        Lightning leaves a module after ``fit``), the average's in eval mode, as the test stage's."""
        return -self.nll_draws(images, num_samples).mean(dim=0)

    def test_step(self, batch, batch_idx):
        nlls = self.nll_draws(batch[0])
        self.epoch_means.add("test", {"nll": nlls.mean(dim=0),
                                      "iw_nll": -(torch.logsumexp(-nlls, dim=0) - math.log(len(nlls)))})

    @torch.no_grad()
    def sample(self, n: int, z: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``[n, 1, 28, 28]`` of the data's levels (the cells the flow's samples fall in), at ``temperature``."""
        return self.images(self.networks(sampling=True)[0].sample(sample_count(n, z), self.hparams.temperature, z=z))

    @torch.no_grad()
    def interpolate(self, x_start: torch.Tensor, x_end: torch.Tensor, steps: int) -> torch.Tensor:
        """``[B, steps + 2, C, H, W]``: images decoded along straight lines between the encodings of
        ``x_start`` and ``x_end`` (dequantized at the cell centres, so the ends decode to themselves)."""
        flow = self.networks(sampling=True)[0]
        z_start, z_end = (flow.transform(dequantize(self.levels(x), self.num_levels, torch.full_like(x, 0.5)))[0]
                          for x in (x_start, x_end))
        z = interpolate_latents(z_start, z_end, steps)
        images = self.images(flow.transform(z.flatten(0, 1), inverse=True)[0])
        return images.view(len(x_start), steps + 2, *self.flow.shape)

    @torch.no_grad()
    def logged_images(self) -> dict[str, torch.Tensor]:
        """8x8 samples from the fixed noise; one row per interpolation between two test images."""
        lines = self.interpolate(*self.interpolation_ends, self.hparams.interpolation_steps)
        return {"samples": make_grid(self.sample(len(self.fixed_z), z=self.fixed_z)),
                "interpolations": make_grid(lines.flatten(0, 1), nrow=lines.shape[1])}

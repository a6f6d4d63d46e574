"""Part 3's LightningModules around an injected flow: the toy 2-D flow and the image flow on binary MNIST.

Each stage accumulates the negative log-likelihood per point and logs it once per epoch (``*_nll``
in nats, ``*_bpd`` in bits per dimension); the training loss is the batch's bpd.

The image flow's likelihood of binary data (2 levels per pixel). A flow has a density p(y) on
continuous y, not a probability for x in {0, 1}^D, so each pixel value x owns the cell
[x/2, (x+1)/2) of (0, 1) and P(x) = integral of p(y) over the cell of x. Uniform dequantization
draws y = (x + u) / 2 with u ~ U(0, 1)^D, i.e. y has density q(y | x) = 2^D on the cell, and by Jensen

    log P(x) = log E_u[p(y) / q(y | x)] >= E_u[log p(y)] - D log 2,

so  -log P(x) <= E_u[-log p(y)] + D log 2  (nats per image). Training minimises the right-hand
side with one u per image; the test figure averages it over several u (same bound, less noise)
and also reports the tighter -log mean_k p(y_k) 2^-D, still an upper bound on -log P(x) by Jensen.
"""
from __future__ import annotations

import math

import torch

from part3_flows.distributions import BimodalGaussianDiag
from part3_flows.networks import ImageFlow, NormalizingFlow
from part3_flows.plots import bpd_curve, density_contours, scatter_with_modes
from shared.densities import dequantize, nll_to_bpd, quantize
from shared.generative import GenerativeModel
from shared.metrics import EpochMeans, StagedModule
from shared.utils import interpolate_latents, make_grid

LEVELS = 2  # binary pixels


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
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class ToyFlowModule(FlowModule):
    """The 2-D flow fitted to ``target`` by maximum likelihood; bpd = NLL / (2 ln 2).

    ``logged_images()`` returns plots: contours of the base, target and learned densities, a
    scatter of flow samples (fixed base noise) with the true modes marked, and the
    per-epoch train/val bpd curve with the target's entropy as the floor.
    """

    def __init__(self, flow: NormalizingFlow, target: BimodalGaussianDiag, lr: float = 1e-3,
                 target_entropy_bpd: float | None = None, plot_limit: float = 2.5):
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
        self.history = checkpoint.get("bpd_history", {"train": [], "val": []})

    @torch.no_grad()
    def logged_images(self) -> dict[str, torch.Tensor]:
        limit, n = self.hparams.plot_limit, 100
        axis = torch.linspace(-limit, limit, n, device=self.device)
        x, y = torch.meshgrid(axis, axis, indexing="xy")
        mesh = torch.stack([x, y], dim=-1)  # [n, n, 2]: the densities take meshes directly
        learned = self.flow.log_prob(mesh.reshape(-1, 2)).reshape(n, n)
        history = {stage: list(values) for stage, values in self.history.items()}
        if self.epoch_means["train_nll"].update_count:  # callbacks see an epoch's end before its train mean is logged
            history["train"].append(self.bpd(self.epoch_means["train_nll"].compute()).item())
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
    """RealNVP on binarized MNIST, trained on the dequantized bound (see the module docstring).

    ``nll(x)`` is E_u[-log p(y)] + D log 2 estimated with one dequantization draw, an upper bound on
    -log P(x) in nats per image. The test stage averages it over ``test_dequant_samples`` draws per
    image (``test_bpd``) and also logs the tighter multi-sample bound -log mean_k p(y_k) 2^-D
    (``test_iw_bpd``).

    Args:
        flow: an :class:`ImageFlow` on (0, 1)-valued ``[1, 28, 28]`` images.
        lr: Adam learning rate.
        temperature: scale on the base noise for ``sample`` and the sample grids.
        test_dequant_samples: dequantization draws per test image.
        num_interpolations, interpolation_steps: the interpolation grid between pairs of test images.
    """

    likelihood_kind = "dequantized bound (exact for the dequantized model, an upper bound on the discrete NLL)"
    likelihood_metric = "test_bpd"

    def __init__(self, flow: ImageFlow, lr: float = 1e-3, temperature: float = 1.0, test_dequant_samples: int = 4,
                 num_interpolations: int = 4, interpolation_steps: int = 6):
        super().__init__()
        self.save_hyperparameters(ignore=["flow"], logger=False)
        self.flow = flow
        self.image_shape = flow.shape
        # Fixed noise and interpolation ends (saved with the checkpoint) so grids of different epochs compare.
        self.register_buffer("fixed_z", torch.randn(64, flow.dims))
        self.register_buffer("interpolation_ends", torch.zeros(2, num_interpolations, *flow.shape))
        # Set once the actnorms are initialised from data and the interpolation ends are chosen.
        self.register_buffer("data_ready", torch.tensor(False))
        self.example_input_array = torch.zeros(2, *flow.shape)
        self._init_means(["nll", "iw_nll"])

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """One-draw estimate of the dequantized bound on -log P(x), nats per image ``[B]``."""
        return -self.flow.log_prob(dequantize(x, LEVELS)) + self.num_dims * math.log(LEVELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nll(x)

    def setup(self, stage: str) -> None:
        """Before the first fit: actnorm data init from a training batch; pick the interpolation ends.

        Runs before the weights of a resumed run are restored, which then overwrite both.
        """
        if stage != "fit" or bool(self.data_ready):
            return
        datamodule = self.trainer.datamodule
        self.flow.data_init(dequantize(next(iter(datamodule.train_dataloader()))[0], LEVELS).to(self.device))
        test_images = next(iter(datamodule.test_dataloader()))[0]
        index = torch.arange(2 * self.hparams.num_interpolations) % len(test_images)
        self.interpolation_ends.copy_(test_images[index].view_as(self.interpolation_ends))
        self.data_ready.fill_(True)

    def nll_draws(self, x: torch.Tensor, draws: int | None = None) -> torch.Tensor:
        """``[draws, B]`` (default ``test_dequant_samples``): the one-draw bound for independent
        dequantization draws; their mean is the test figure, and -log mean exp(-.) the tighter multi-draw bound."""
        return torch.stack([self.nll(x) for _ in range(draws or self.hparams.test_dequant_samples)])

    @torch.no_grad()
    def log_likelihood(self, images: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        """Minus the dequantized bound, averaged over ``num_samples`` draws (default ``test_dequant_samples``)."""
        return -self.nll_draws(images, num_samples).mean(dim=0)

    def test_step(self, batch, batch_idx):
        nlls = self.nll_draws(batch[0])
        self.epoch_means.add("test", {"nll": nlls.mean(dim=0),
                                      "iw_nll": -(torch.logsumexp(-nlls, dim=0) - math.log(len(nlls)))})

    @torch.no_grad()
    def sample(self, n: int, z: torch.Tensor | None = None) -> torch.Tensor:
        """Binary images ``[n, 1, 28, 28]`` (the cells the flow's samples fall in), at ``temperature``."""
        return quantize(self.flow.sample(n, self.hparams.temperature, z=z), LEVELS)

    @torch.no_grad()
    def interpolate(self, x_start: torch.Tensor, x_end: torch.Tensor, steps: int) -> torch.Tensor:
        """``[B, steps + 2, C, H, W]``: binary images decoded along straight lines between the encodings
        of ``x_start`` and ``x_end`` (dequantized at the cell centres, so the ends decode to themselves)."""
        z_start = self.flow.transform(dequantize(x_start, LEVELS, torch.full_like(x_start, 0.5)))[0]
        z_end = self.flow.transform(dequantize(x_end, LEVELS, torch.full_like(x_end, 0.5)))[0]
        z = interpolate_latents(z_start, z_end, steps)
        images = quantize(self.flow.transform(z.flatten(0, 1), inverse=True)[0], LEVELS)
        return images.view(len(x_start), steps + 2, *self.flow.shape)

    @torch.no_grad()
    def logged_images(self) -> dict[str, torch.Tensor]:
        """8x8 samples from the fixed noise; one row per interpolation between two test images."""
        lines = self.interpolate(*self.interpolation_ends, self.hparams.interpolation_steps)
        return {"samples": make_grid(self.sample(len(self.fixed_z), z=self.fixed_z)),
                "interpolations": make_grid(lines.flatten(0, 1), nrow=lines.shape[1])}

"""Training throughput of the project's Lightning pipeline against plain PyTorch, in one process.

    python scripts/benchmark.py                 # default VAE, one epoch of 45,000 images per method
    python scripts/benchmark.py --model gan     # default MLP GAN, one epoch of 60,000 images per method

Three ways to train the same model for one epoch, each timed ``--repeats`` times (interleaved,
best kept so that a background hiccup does not decide the result):
  lightning   the project's pipeline: MNISTDataModule + the LightningModule + a Trainer
              set up as in shared.cli (TensorBoard logger, loss monitor), validation off; the
              epoch is timed from its start to its end (fit()'s one-off set-up is printed apart);
  plain       a hand-written loop over batches sliced from the same in-memory tensor;
  per-image   the same loop fed by a DataLoader of PIL images through a per-image
              torchvision transform (ToTensor + threshold), the usual tutorial pipeline.
Prints images/second of each and the ratios lightning/plain and lightning/per-image.
The GAN is timed as lightning (manual optimization, two optimizers) against plain: the same
generator and discriminator steps written by hand.
"""
from __future__ import annotations

import argparse
import copy
import platform
import tempfile
import time
from typing import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from part1_vae.modules import VAE
from part1_vae.networks import MLPDecoder, MLPEncoder
from part2_gan.modules import GAN
from part2_gan.networks import DiscriminatorMLP, GeneratorMLP
from shared.callbacks import LossMonitor
from shared.cli import OneLineArgumentParser
from shared.data import MNISTDataModule, load_mnist


class PerImagePILDataset(Dataset):
    """The tutorial-style pipeline: one PIL image and one transform call per item."""

    def __init__(self, images: torch.Tensor):
        self.images = images.numpy()
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Lambda(lambda x: (x > 0.5).float())])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.images[index], mode="L")), 0


class EpochTimer(pl.Callback):
    """Wall-clock time of the training epoch itself, without the Trainer's one-off set-up and tear-down."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start


def time_lightning(model: pl.LightningModule, datamodule: MNISTDataModule, log_dir: str) -> tuple[float, float]:
    """(seconds of the epoch, seconds of the whole ``fit`` call)."""
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=1, accelerator="auto", devices=1, logger=TensorBoardLogger(log_dir),
                         callbacks=[LossMonitor(), timer], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    return timer.seconds, time.perf_counter() - start


def time_plain_loop(model: VAE, batches: Callable[[], object], device: torch.device) -> float:
    model.to(device).train()
    optimizer = model.configure_optimizers()
    start = time.perf_counter()
    for imgs, _ in batches():
        imgs = imgs.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        model(imgs)[2].backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_plain_gan_loop(model: GAN, batches: Callable[[], object], device: torch.device) -> float:
    """The GAN's training step by hand: generator on -log D(G(z)), then discriminator on real and fresh fakes."""
    model.to(device).train()
    generator, discriminator = model.generator, model.discriminator
    opt_g, opt_d = model.configure_optimizers()
    z_dim = model.hparams.z_dim
    start = time.perf_counter()
    for imgs, _ in batches():
        real = imgs.to(device, non_blocking=True)
        ones = torch.ones(len(real), 1, device=device)
        discriminator.requires_grad_(False)  # what toggle_optimizer does: no discriminator gradients here
        opt_g.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(discriminator(generator(torch.randn(len(real), z_dim, device=device))),
                                           ones).backward()
        opt_g.step()
        discriminator.requires_grad_(True)
        with torch.no_grad():
            fake = generator(torch.randn(len(real), z_dim, device=device))
        opt_d.zero_grad(set_to_none=True)
        (F.binary_cross_entropy_with_logits(discriminator(real), ones)
         + F.binary_cross_entropy_with_logits(discriminator(fake), torch.zeros_like(ones))).backward()
        opt_d.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def report(title: str, seconds: dict[str, list[float]], fit_seconds: list[float], n_images: int,
           device: torch.device) -> None:
    machine = torch.cuda.get_device_name(0) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"
    print(f"{title}, best of {len(fit_seconds)}, on {machine}")
    rate = {name: n_images / min(times) for name, times in seconds.items()}
    for name, times in seconds.items():
        print(f"  {name:<10} {rate[name]:>9.0f} images/s   (epoch times: {', '.join(f'{t:.2f}' for t in times)} s)")
    print(f"  lightning's whole fit() call, set-up and tear-down included: {', '.join(f'{t:.2f}' for t in fit_seconds)} s")
    for name in seconds:
        if name != "lightning":
            print(f"  lightning / {name:<9} = {rate['lightning'] / rate[name]:.2f}x")


def benchmark(title: str, template: pl.LightningModule, datamodule: MNISTDataModule,
              plain_loops: dict[str, tuple[Callable, Callable[[], object]]], repeats: int) -> None:
    """Time ``repeats`` interleaved rounds of the Lightning epoch and each plain loop, from the same initial weights."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seconds: dict[str, list[float]] = {"lightning": [], **{name: [] for name in plain_loops}}
    fit_seconds = []
    with tempfile.TemporaryDirectory() as log_dir:
        for _ in range(repeats):
            epoch, fit = time_lightning(copy.deepcopy(template), datamodule, log_dir)
            seconds["lightning"].append(epoch)
            fit_seconds.append(fit)
            for name, (loop, batches) in plain_loops.items():
                seconds[name].append(loop(copy.deepcopy(template), batches, device))
    report(title, seconds, fit_seconds, len(datamodule.splits["train"]), device)


def main() -> None:
    parser = OneLineArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["vae", "gan"], default="vae")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--per_image_workers", type=int, default=0,
                        help="DataLoader workers for the per-image pipeline (0: the same process, like the others)")
    args = parser.parse_args()
    if args.batch_size <= 0 or args.repeats <= 0:
        parser.error("--batch_size and --repeats must be positive")

    pl.seed_everything(0, verbose=False)
    if args.model == "vae":
        template = VAE(MLPEncoder(), MLPDecoder(), z_dim=20)
        datamodule = MNISTDataModule(batch_size=args.batch_size)
        datamodule.setup()
        per_image_loader = DataLoader(PerImagePILDataset(load_mnist("train")[0][:len(datamodule.splits["train"])]),
                                      batch_size=args.batch_size, shuffle=True, num_workers=args.per_image_workers)
        loops = {"plain": (time_plain_loop, datamodule.train_dataloader),
                 "per-image": (time_plain_loop, lambda: per_image_loader)}
        title = f"VAE (MLP, z=20), one epoch of 45000 threshold-binarized MNIST images, batch {args.batch_size}"
    else:
        template = GAN(GeneratorMLP(), DiscriminatorMLP(), z_dim=32)
        datamodule = MNISTDataModule(batch_size=args.batch_size, binarize=False, value_range="pm1",
                                              train_on_all=True)
        datamodule.setup()
        loops = {"plain": (time_plain_gan_loop, datamodule.train_dataloader)}
        title = f"GAN (MLP, z=32), one epoch of 60000 grey-scale MNIST images in [-1, 1], batch {args.batch_size}"
    benchmark(title, template, datamodule, loops, args.repeats)


if __name__ == "__main__":
    main()

"""Training throughput of the project's Lightning pipeline against plain PyTorch, in one process.

    python scripts/benchmark.py                 # default VAE, one epoch of 45,000 images per method

Three ways to train the same model for one epoch, each timed ``--repeats`` times (interleaved,
best kept so that a background hiccup does not decide the result):
  lightning   the project's pipeline: BinarizedMNISTDataModule + the LightningModule + a Trainer
              set up as in shared.cli (TensorBoard logger, NaN guard), validation off;
  plain       a hand-written loop over batches sliced from the same in-memory tensor;
  per-image   the same loop fed by a DataLoader of PIL images through a per-image
              torchvision transform (ToTensor + threshold), the usual tutorial pipeline.
Prints images/second of each and the ratios lightning/plain and lightning/per-image.
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
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from part1_vae.models import MLPDecoder, MLPEncoder
from part1_vae.vae import VAE
from shared.callbacks import LossMonitor
from shared.data import BinarizedMNISTDataModule, load_mnist


class PerImagePILDataset(Dataset):
    """The tutorial-style pipeline: one PIL image and one transform call per item."""

    def __init__(self, images: torch.Tensor):
        self.images = images.numpy()
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Lambda(lambda x: (x > 0.5).float())])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.images[index], mode="L")), 0


def time_lightning(model: pl.LightningModule, datamodule: BinarizedMNISTDataModule, log_dir: str) -> float:
    trainer = pl.Trainer(max_epochs=1, accelerator="auto", devices=1, logger=TensorBoardLogger(log_dir),
                         callbacks=[LossMonitor()], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    return time.perf_counter() - start


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--per_image_workers", type=int, default=0,
                        help="DataLoader workers for the per-image pipeline (0: the same process, like the others)")
    args = parser.parse_args()
    if args.batch_size <= 0 or args.repeats <= 0:
        parser.error("--batch_size and --repeats must be positive")

    pl.seed_everything(0, verbose=False)
    template = VAE(MLPEncoder(), MLPDecoder(), z_dim=20)
    datamodule = BinarizedMNISTDataModule(batch_size=args.batch_size)
    datamodule.setup()
    n_images = len(datamodule.splits["train"])
    per_image_loader = DataLoader(PerImagePILDataset(load_mnist("train")[0][:n_images]), batch_size=args.batch_size,
                                  shuffle=True, num_workers=args.per_image_workers)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    seconds: dict[str, list[float]] = {"lightning": [], "plain": [], "per-image": []}
    with tempfile.TemporaryDirectory() as log_dir:
        for _ in range(args.repeats):
            seconds["lightning"].append(time_lightning(copy.deepcopy(template), datamodule, log_dir))
            seconds["plain"].append(time_plain_loop(copy.deepcopy(template), datamodule.train_dataloader, device))
            seconds["per-image"].append(time_plain_loop(copy.deepcopy(template), lambda: per_image_loader, device))

    machine = torch.cuda.get_device_name(0) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"
    print(f"VAE (MLP, z=20), one epoch of {n_images} threshold-binarized MNIST images, batch {args.batch_size}, "
          f"best of {args.repeats}, on {machine}")
    rate = {name: n_images / min(times) for name, times in seconds.items()}
    for name, times in seconds.items():
        print(f"  {name:<10} {rate[name]:>9.0f} images/s   (epoch times: {', '.join(f'{t:.2f}' for t in times)} s)")
    print(f"  lightning / plain     = {rate['lightning'] / rate['plain']:.2f}x")
    print(f"  lightning / per-image = {rate['lightning'] / rate['per-image']:.2f}x")


if __name__ == "__main__":
    main()

"""The judge: a small MNIST digit classifier whose features and predictions score generated samples.

No Inception weights can be downloaded, so the codebase trains its own. ``load_judge`` returns the
cached judge (``runs/judge/judge.ckpt``), training it first if it is missing; the training is
deterministic given the seed. Train or retrain it explicitly with ``python scripts/train_judge.py``.

The judge takes images ``[B, 1, 28, 28]`` in [0, 1]. Half of every training batch is
threshold-binarized (pixels > 0.5), so that it reads both grey-scale samples (the GAN's) and
binary ones (the VAE's).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from shared.data import TensorBatchDataset, batch_loader, load_mnist, to_model_range

DEFAULT_JUDGE_PATH = Path(__file__).resolve().parent.parent / "runs" / "judge" / "judge.ckpt"


class DigitClassifier(nn.Module):
    """Three 3x3 convolution stages 28 -> 14 -> 7, a ``feature_dim`` layer (the features), 10 logits."""

    def __init__(self, num_filters: int = 32, feature_dim: int = 128):
        super().__init__()
        c = num_filters
        self.num_features = feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14 -> 7
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * c * 7 * 7, feature_dim), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, 10))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations ``[B, feature_dim]`` (what the Fréchet distance compares)."""
        return self.body(images - 0.5)  # centred input: what the conv biases start from matters less

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def _binarize_half(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    chosen = torch.rand(len(images), 1, 1, 1, generator=generator) < 0.5
    return torch.where(chosen, (images > 0.5).float(), images)


@torch.no_grad()
def accuracy(judge: DigitClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``images`` (in [0, 1]) whose predicted digit is the label."""
    judge.eval()
    correct = sum((judge(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum().item()
                  for i in range(0, len(images), batch_size))
    return correct / len(images)


def fit_judge(seed: int = 42, epochs: int = 4, batch_size: int = 128, lr: float = 1e-3, num_filters: int = 32,
              feature_dim: int = 128, subset: int | None = None, data_dir: str | Path | None = None,
              verbose: bool = False) -> DigitClassifier:
    """A judge trained on the MNIST training set (its first ``subset`` images if given), in eval mode."""
    torch.manual_seed(seed)
    judge = DigitClassifier(num_filters, feature_dim)
    images, labels = load_mnist("train", data_dir)
    images, labels = to_model_range(images[:subset], binarize=False), labels[:subset]
    loader = batch_loader(TensorBatchDataset(images, labels), batch_size, shuffle=True, seed=seed)
    augment = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(judge.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(loader))
    start = time.perf_counter()
    for epoch in range(epochs):
        judge.train()
        for batch, batch_labels in loader:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(judge(_binarize_half(batch, augment)), batch_labels).backward()
            optimizer.step()
            schedule.step()
        if verbose:
            print(f"judge epoch {epoch + 1}/{epochs} done ({time.perf_counter() - start:.0f} s)", flush=True)
    return judge.eval()


def train_judge(seed: int = 42, epochs: int = 4, batch_size: int = 128, lr: float = 1e-3, num_filters: int = 32,
                feature_dim: int = 128, subset: int | None = None, data_dir: str | Path | None = None,
                verbose: bool = False) -> tuple[DigitClassifier, dict]:
    """:func:`fit_judge`, and a record of how the judge was made with its accuracy on the 10,000 test
    images, grey-scale and threshold-binarized."""
    settings = dict(seed=seed, epochs=epochs, batch_size=batch_size, lr=lr, num_filters=num_filters,
                    feature_dim=feature_dim, subset=subset)
    judge = fit_judge(**settings, data_dir=data_dir, verbose=verbose)
    test_images, test_labels = load_mnist("test", data_dir)
    record = {**settings,
              "test_accuracy": accuracy(judge, to_model_range(test_images, binarize=False), test_labels),
              "test_accuracy_binarized": accuracy(judge, to_model_range(test_images, binarize=True), test_labels)}
    return judge, record


def save_judge(judge: DigitClassifier, record: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": judge.state_dict(), "record": record}, path)
    return path


def load_judge(path: str | Path = DEFAULT_JUDGE_PATH, data_dir: str | Path | None = None) -> tuple[DigitClassifier, dict]:
    """The judge cached at ``path`` and its record; trains and caches the default judge first if it is missing."""
    path = Path(path)
    if not path.is_file():
        print(f"No judge at {path}: training it on MNIST (a few minutes, once)", flush=True)
        judge, record = train_judge(data_dir=data_dir, verbose=True)
        save_judge(judge, record, path)
        print(f"Judge saved to {path}: test accuracy {record['test_accuracy']:.4f}", flush=True)
        return judge, record
    saved = torch.load(path, map_location="cpu", weights_only=True)
    record = saved["record"]
    judge = DigitClassifier(record["num_filters"], record["feature_dim"])
    judge.load_state_dict(saved["state_dict"])
    return judge.eval(), record

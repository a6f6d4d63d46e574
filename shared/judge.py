"""The judge: a small MNIST digit classifier whose features and predictions score generated samples.

No Inception weights can be downloaded, so the codebase trains its own, and ships it: the trained
judge travels with the package like the MNIST files (``shared/datasets/judge/judge.pt``, made by
``python scripts/train_judge.py`` with the default settings; its record holds those settings and its
test accuracy). ``load_judge()`` returns it at once. ``load_judge(path)`` reads another judge, and
trains one there first if the file is missing: minutes on a CPU, announced, with progress and an ETA.
The training is deterministic given the seed (on one machine, torch build and thread count).

The judge takes images ``[B, 1, 28, 28]`` in [0, 1]. Half of every training batch is
threshold-binarized (pixels > 0.5), so that it reads both grey-scale samples (the GAN's) and
binary ones (the VAE's).
"""
from __future__ import annotations

import pickle
import re
import time
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from shared.batches import TensorBatchDataset
from shared.checks import DEFAULT_JUDGE_PATH
from shared.data import DataFileError, load_mnist, to_model_range
from shared.progress import Progress, duration


class JudgeFileError(DataFileError):
    """A judge checkpoint is missing, truncated or corrupt, or a file is no judge's; the one-line message names the
    file and the fix."""


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
    """A judge trained on the MNIST training set (its first ``subset`` images if given), in eval mode.

    ``verbose``: a progress line with the elapsed time and an ETA every 30 s and at each epoch's end.
    """
    torch.manual_seed(seed)
    judge = DigitClassifier(num_filters, feature_dim)
    images, labels = load_mnist("train", data_dir)
    images, labels = to_model_range(images[:subset], binarize=False), labels[:subset]
    # torch's RandomSampler and the global generator's draws of the DataLoader, as the bundled judge was trained.
    batches = BatchSampler(RandomSampler(images, generator=torch.Generator().manual_seed(seed)), batch_size, False)
    loader = DataLoader(TensorBatchDataset(images, labels), sampler=batches, batch_size=None)
    augment = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(judge.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(loader))
    progress = Progress("training the judge", epochs * len(loader), "batches", enabled=verbose, first=10, every=30)
    for epoch in range(epochs):
        judge.train()
        for batch, batch_labels in loader:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(judge(_binarize_half(batch, augment)), batch_labels).backward()
            optimizer.step()
            schedule.step()
            progress.advance()
        progress.report(f"epoch {epoch + 1}/{epochs} done, ")
    progress.finish()
    return judge.eval()


def train_judge(seed: int = 42, epochs: int = 4, batch_size: int = 128, lr: float = 1e-3, num_filters: int = 32,
                feature_dim: int = 128, subset: int | None = None, data_dir: str | Path | None = None,
                verbose: bool = False) -> tuple[DigitClassifier, dict]:
    """:func:`fit_judge`, and a record of how the judge was made with its accuracy on the 10,000 test
    images, grey-scale and threshold-binarized."""
    settings = dict(seed=seed, epochs=epochs, batch_size=batch_size, lr=lr, num_filters=num_filters,
                    feature_dim=feature_dim, subset=subset)
    test_images, test_labels = load_mnist("test", data_dir)  # first: a bad test file stops it before the training
    judge = fit_judge(**settings, data_dir=data_dir, verbose=verbose)
    record = {**settings,
              "test_accuracy": accuracy(judge, to_model_range(test_images, binarize=False), test_labels),
              "test_accuracy_binarized": accuracy(judge, to_model_range(test_images, binarize=True), test_labels)}
    return judge, record


def save_judge(judge: DigitClassifier, record: dict, path: str | Path) -> Path:
    """Write the judge and its record to ``path``; an interrupted write leaves any older file there whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        torch.save({"state_dict": judge.state_dict(), "record": record}, partial)
        partial.replace(path)
    except BaseException:  # Ctrl-C or a full disk: no half-written file left beside it
        partial.unlink(missing_ok=True)
        raise
    return path


def _fix_hint(path: Path) -> str:
    if path == DEFAULT_JUDGE_PATH:
        return "rebuild it with `python scripts/train_judge.py` (minutes) or reinstall the package"
    return f"delete it to retrain it there (minutes), or pass the bundled one ({DEFAULT_JUDGE_PATH})"


def _not_a_judge(saved) -> str | None:
    """What a loaded torch file holds where it is no judge's file (a model's checkpoint, a bare tensor); None for
    a judge's, whole or damaged (a dict of at most its two keys)."""
    if not isinstance(saved, dict):
        return f"it holds a {type(saved).__name__}, not a judge's state_dict and record"
    if "pytorch-lightning_version" in saved:
        return "it is a Lightning checkpoint, a run's model"
    if not set(saved) <= {"state_dict", "record"}:
        keys = sorted(map(str, saved))
        return f"it holds {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}, not a judge's state_dict and record"
    return None


def _corrupt(path: Path, err: BaseException) -> JudgeFileError:
    reason = (str(err).strip().splitlines() or [""])[0].split(". ")[0]  # torch's first sentence
    reason = reason if any(c.isalpha() for c in reason) else "not a torch checkpoint"  # a bare KeyError's key
    return JudgeFileError(f"judge checkpoint {path} is corrupt or truncated ({reason}): {_fix_hint(path)}")


def _starts_as_a_torch_file(path: Path) -> bool:
    """Whether ``path`` may be a torch.save file, whole or cut short: a zip archive (whose first bytes a truncation
    keeps) holding a pickle where it is whole (an .npz holds none)."""
    try:
        with open(path, "rb") as file:
            if file.read(4) != b"PK\x03\x04":
                return False
        if not zipfile.is_zipfile(path):  # its index, at the end, is gone
            return True
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):  # unreadable: the caller's error names the file as it stands
        return True


def _read_judge(path: Path) -> tuple[DigitClassifier, dict]:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        what = _not_a_judge(saved)
    except (RuntimeError, EOFError, OSError, KeyError, pickle.UnpicklingError) as err:
        other = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))  # whole, but of objects no judge holds
        if other is not None:
            what = f"it holds {other.group(1)} objects, which no judge's file does"
        elif not _starts_as_a_torch_file(path):
            what = "it is no torch file"
        else:
            raise _corrupt(path, err) from None
    if what is not None:
        hint = _fix_hint(path) if path == DEFAULT_JUDGE_PATH else "pass a judge's file with --judge"
        raise JudgeFileError(f"{path} is not a judge checkpoint ({what}): {hint}")
    try:
        record = saved["record"]
        judge = DigitClassifier(record["num_filters"], record["feature_dim"])
        judge.load_state_dict(saved["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise _corrupt(path, err) from None
    return judge.eval(), record


def load_judge(path: str | Path | None = None, data_dir: str | Path | None = None
               ) -> tuple[DigitClassifier, dict]:
    """The judge at ``path`` (default: the bundled one) and its record.

    A missing ``path`` other than the bundled one gets the default judge trained there first (on the
    MNIST of ``data_dir``), announced, with progress and an ETA. A missing bundled judge, or a file
    that cannot be read as a judge, raises :class:`JudgeFileError` naming the file and the fix.
    """
    path = DEFAULT_JUDGE_PATH if path is None else Path(path).resolve()
    if path.is_file():
        return _read_judge(path)
    if path == DEFAULT_JUDGE_PATH:
        raise JudgeFileError(f"the bundled judge {path} is missing: {_fix_hint(path)}")
    print(f"No judge at {path}: training the default judge there on the 60,000 MNIST training images (minutes on "
          f"a CPU, 6 to 18 on 2 cores; progress and ETA follow; the bundled judge, no path, needs no training)",
          flush=True)
    start = time.perf_counter()
    judge, record = train_judge(data_dir=data_dir, verbose=True)
    save_judge(judge, record, path)
    print(f"Judge saved to {path} after {duration(time.perf_counter() - start)}: test accuracy "
          f"{record['test_accuracy']:.4f}", flush=True)
    return judge, record

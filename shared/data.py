"""MNIST decoded once into tensors, served as batches by slicing (``shared.batches``).

Reading order for the raw files: ``data_dir`` if given, else the copy bundled in
``shared/datasets``, else torchvision's download. Every split is decoded once into a single
``[N, 1, 28, 28]`` float tensor.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from shared.batches import DynamicallyBinarizedDataset, TensorBatchDataset, TensorSplitsDataModule

BUNDLED_DIR = Path(__file__).resolve().parent / "datasets"
IMAGE_SHAPE = (1, 28, 28)
TRAIN_SIZE, VAL_SIZE = 45_000, 5_000
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # ubyte tensors of rank 3 (images) and 1 (labels)
# Dynamically binarized MNIST: val and test are drawn once, from these seeds, so that every evaluation of
# every run sees the same binary images.
DYNAMIC_EVAL_SEEDS = {"val": 0, "test": 1}

# The data variants every figure is labelled with: figures of different variants never share a ranking.
THRESHOLD, DYNAMIC, GREY = "threshold-binarized", "dynamically binarized", "8-bit grey"


def variant_name(binarized: bool, dynamic: bool = False) -> str:
    """The variant of MNIST binarized (by threshold, or with ``dynamic`` drawn from the grey levels) or not."""
    return (DYNAMIC if dynamic else THRESHOLD) if binarized else GREY


class DataFileError(RuntimeError):
    """A data file is missing, truncated or corrupt; the message names the file and the fix."""


def _fix_hint(path: Path) -> str:
    if BUNDLED_DIR in path.parents:  # the project's own copy: no fresh one to take from it
        return ("the project's own copy is damaged: restore it (`git checkout -- shared/datasets` in a clone, or "
                "reinstall the project) or pass --data_dir to a folder holding MNIST/raw")
    return (f"replace it with a fresh copy of {path.name.removesuffix('.gz')}(.gz) from the bundled "
            f"shared/datasets/MNIST/raw or pass --data_dir to a folder holding MNIST/raw")


def _find_raw_file(raw_dir: Path, name: str) -> Path:
    for candidate in (raw_dir / f"{name}.gz", raw_dir / name):
        if candidate.exists():
            return candidate
    raise DataFileError(f"MNIST file {raw_dir / name}(.gz) is missing: {_fix_hint(raw_dir / name)}")


def read_idx(path: Path, rank: int, count: int) -> np.ndarray:
    """Read one IDX file (gzip or plain) of ``count`` uint8 items, checking it is whole."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataFileError(f"MNIST file {path} is corrupt or truncated ({err}): {_fix_hint(path)}") from None
    header = 4 + 4 * rank
    if len(raw) < header or struct.unpack(">I", raw[:4])[0] != _IDX_MAGIC[rank]:
        raise DataFileError(f"MNIST file {path} is not an IDX file of rank {rank}: {_fix_hint(path)}")
    dims = struct.unpack(f">{rank}I", raw[4:header])
    if rank == 3 and dims[1:] != IMAGE_SHAPE[1:]:
        raise DataFileError(f"MNIST file {path} holds {dims[1]}x{dims[2]} images, not MNIST's "
                            f"{IMAGE_SHAPE[1]}x{IMAGE_SHAPE[2]}: {_fix_hint(path)}")
    if dims[0] != count:
        raise DataFileError(f"MNIST file {path} holds {dims[0]} items, not the {count} of its MNIST file: "
                            f"{_fix_hint(path)}")
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataFileError(f"MNIST file {path} has {len(raw)} bytes, expected {expected} for its {dims[0]} items: "
                            f"{_fix_hint(path)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _download_with_torchvision(root: Path) -> Path:
    from torchvision.datasets import MNIST  # imported late: only needed when no local copy exists

    MNIST(str(root), train=True, download=True)
    MNIST(str(root), train=False, download=True)
    return root / "MNIST" / "raw"


def resolve_raw_dir(data_dir: str | Path | None) -> Path:
    """The folder that holds the four raw MNIST files, following the documented reading order."""
    if data_dir is not None:
        raw_dir = Path(data_dir) / "MNIST" / "raw"
        if not raw_dir.is_dir():
            raise DataFileError(f"--data_dir {data_dir}: no folder {raw_dir}; put the four MNIST files "
                                f"there or leave --data_dir out to use the bundled copy")
        return raw_dir
    bundled = BUNDLED_DIR / "MNIST" / "raw"
    if bundled.is_dir():
        return bundled
    return _download_with_torchvision(Path.home() / ".cache" / "genmodels")


def load_mnist(split: str, data_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``split`` in {"train", "test"} -> (uint8 images ``[N, 28, 28]``, int64 labels ``[N]``)."""
    raw_dir = resolve_raw_dir(data_dir)
    image_name, label_name, count = _FILES[split]
    images = read_idx(_find_raw_file(raw_dir, image_name), rank=3, count=count)
    labels = read_idx(_find_raw_file(raw_dir, label_name), rank=1, count=count)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def to_model_range(images: torch.Tensor, binarize: bool = True, value_range: str = "01") -> torch.Tensor:
    """uint8 ``[N, 28, 28]`` -> float ``[N, 1, 28, 28]``.

    ``binarize``: pixels > 0.5 (of 1) become 1, others 0 ("threshold-binarized MNIST").
    ``value_range``: "01" keeps [0, 1]; "pm1" maps to [-1, 1] (GAN generators end in tanh).
    """
    x = images.unsqueeze(1).float().div_(255.0)
    if binarize:
        x = (x > 0.5).float()
    if value_range == "pm1":
        x = x.mul_(2.0).sub_(1.0)
    elif value_range != "01":
        raise ValueError(f"value_range must be '01' or 'pm1', got {value_range!r}")
    return x


def dynamically_binarized(images: torch.Tensor, seed: int) -> torch.Tensor:
    """uint8 ``[N, 28, 28]`` -> ``[N, 1, 28, 28]`` of 0 and 1: each pixel one draw from Bernoulli(its grey level), the
    same draw for the same ``seed`` (the fixed val and test sets of dynamically binarized MNIST, and the images
    every evaluation compares with them)."""
    return torch.bernoulli(to_model_range(images, binarize=False), generator=torch.Generator().manual_seed(seed))


class MNISTDataModule(TensorSplitsDataModule):
    """MNIST split 45,000 / 5,000 / 10,000 (train / val / test), decoded once into tensors.

    Batches are ``(images, labels)`` with images ``[B, 1, 28, 28]`` float: binary by default, grey-scale
    k / 255 in [0, 1] with ``binarize=False``, and mapped to [-1, 1] with ``value_range="pm1"``. Binary
    images are ``binarization="threshold"`` (pixels > 0.5 become 1, others 0: the course's data) or
    ``"dynamic"`` (training images re-drawn from Bernoulli(grey) at every fetch, seeded by ``seed``;
    val and test drawn once from :data:`DYNAMIC_EVAL_SEEDS`).
    ``train_on_all=True`` trains on all 60,000 training images (the GAN's default; val, images 45,000-49,999
    as always, is then among them). ``subset`` keeps only the first n images of each split (tests).
    """

    def __init__(self, data_dir: str | None = None, batch_size: int = 128, num_workers: int = 0,
                 seed: int = 42, binarize: bool = True, value_range: str = "01",
                 train_on_all: bool = False, subset: int | None = None, binarization: str = "threshold",
                 batches_per_call: int = 1):
        super().__init__(batch_size, seed, num_workers, batches_per_call)
        if binarization not in ("threshold", "dynamic"):
            raise ValueError(f"binarization must be 'threshold' or 'dynamic', got {binarization!r}")
        if binarization == "dynamic" and value_range != "01":
            raise ValueError("dynamic binarization serves images in [0, 1] only")
        self.data_dir, self.binarize, self.value_range = data_dir, binarize, value_range
        self.train_on_all, self.subset = train_on_all, subset
        self.dynamic = binarize and binarization == "dynamic"

    def description(self) -> dict:
        """What a run's config.yaml records about its data."""
        end_of_train = 60_000 if self.train_on_all else TRAIN_SIZE
        return {"dataset": "MNIST", "pixels": variant_name(self.binarize, self.dynamic),
                "value_range": "[-1, 1]" if self.value_range == "pm1" else "[0, 1]",
                "train": self._span("training images", 0, end_of_train),
                "val": self._span("training images", TRAIN_SIZE, VAL_SIZE),
                "test": self._span("test images", 0, 10_000), "subset": self.subset}

    def _span(self, images: str, start: int, size: int) -> str:
        whole = f"{images} {start}-{start + size - 1}"
        if self.subset is None or self.subset >= size:
            return whole
        return f"{images} {start}-{start + self.subset - 1} (--subset {self.subset} of {whole})"

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train_images, train_labels = load_mnist("train", self.data_dir)
        test_images, test_labels = load_mnist("test", self.data_dir)
        end_of_train = 60_000 if self.train_on_all else TRAIN_SIZE
        ranges = {
            "train": (train_images[:end_of_train], train_labels[:end_of_train]),
            "val": (train_images[TRAIN_SIZE:TRAIN_SIZE + VAL_SIZE], train_labels[TRAIN_SIZE:TRAIN_SIZE + VAL_SIZE]),
            "test": (test_images, test_labels),
        }
        for name, (images, labels) in ranges.items():
            images, labels = images[:self.subset], labels[:self.subset]
            if not self.dynamic:
                self.splits[name] = TensorBatchDataset(to_model_range(images, self.binarize, self.value_range), labels)
            elif name == "train":
                self.splits[name] = DynamicallyBinarizedDataset(to_model_range(images, binarize=False), labels, self.seed)
            else:
                self.splits[name] = TensorBatchDataset(dynamically_binarized(images, DYNAMIC_EVAL_SEEDS[name]), labels)


# The name of the first layout (the DataModule also serves grey-scale images, hence the new one).
BinarizedMNISTDataModule = MNISTDataModule

"""In-memory tensor splits served as batches: a batch is one fancy-index into a split's tensor, so the training
loop never touches PIL or a per-image transform. Without DataLoader workers (the default) each split is moved to
the training device once and batches are drawn there (:class:`ResidentBatches`); nothing is copied from the host
in a training step. With workers, a DataLoader (:func:`batch_loader`) serves the same batches from host memory.
Training batches may be served several at a time (:class:`GroupedBatches`), so that Lightning's fixed cost of a
call of ``training_step`` is paid once for them.
"""
from __future__ import annotations


import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def figure_split(trainer) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(images, labels) of the test split of ``trainer``'s data module, as it serves them, for a module's figures of
    test images (reconstructions, latent maps); None for a data module without tensor splits (plain loaders)."""
    split = getattr(getattr(trainer, "datamodule", None), "splits", {}).get("test")
    return None if split is None else (split.images, split.labels)


class TensorBatchDataset(Dataset):
    """Indexed by a *list* of indices, returns a whole batch ``(images, labels)`` at once."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, indices):
        return self.images[indices], self.labels[indices]

    def to(self, device: torch.device) -> TensorBatchDataset:
        """The same data on ``device`` (this dataset itself when it is there already)."""
        if self.images.device == device:
            return self
        return TensorBatchDataset(self.images.to(device), self.labels.to(device))


class DynamicallyBinarizedDataset(TensorBatchDataset):
    """Grey images ``[N, 1, 28, 28]`` in [0, 1]; every fetch re-draws each pixel as Bernoulli(grey), so each
    epoch sees new binary images (the data of the IWAE paper and most published binary-MNIST likelihoods).
    The draws come from a generator on ``draws_on`` (the images' device by default) seeded with ``seed`` (so a
    GPU draws other binary images than the CPU, from the same seed)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, seed: int, draws_on: torch.device | None = None):
        super().__init__(images, labels)
        self.seed = seed
        self.generator = torch.Generator(draws_on or images.device).manual_seed(seed)

    def binarize(self, grey: torch.Tensor) -> torch.Tensor:
        """The next draw of binary images from ``grey`` ones (on the generator's device)."""
        return torch.bernoulli(grey, generator=self.generator)

    def __getitem__(self, indices):
        return self.binarize(self.images[indices]), self.labels[indices]

    def to(self, device: torch.device) -> DynamicallyBinarizedDataset:
        if self.images.device == device:
            return self
        return DynamicallyBinarizedDataset(self.images.to(device), self.labels.to(device), self.seed)

    def grey(self) -> TensorBatchDataset:
        """The grey images themselves, served without drawing."""
        return TensorBatchDataset(self.images, self.labels)


def epoch_order(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """One epoch's order of ``n`` items: one permutation drawn from ``generator`` (in order without one)."""
    if generator is None:
        return torch.arange(n)
    return torch.randperm(n, generator=generator)


def process_slices(n: int, batch_size: int, rank: int = 0, world_size: int = 1, shard: bool = False) -> list[slice]:
    """The slices of an epoch's order of ``n`` items that process ``rank`` of ``world_size`` takes as its batches.

    Training: every ``world_size``-th batch, the list padded with its first batches to a multiple of ``world_size``
    so that all processes run as many steps (they average their gradients at each), as Lightning's distributed
    sampler does; a last batch of one item is left out (batch norm cannot train on one: the GANs' and the AAE's
    networks failed on it). A split evaluated (``shard=True``): the process's own ``1/world_size`` of the items, so
    that each counts once in the figures, except in a split of fewer items than processes, where a process whose
    share is empty takes the first item again."""
    if shard:
        first, end = rank * n // world_size, (rank + 1) * n // world_size
        if first == end:  # more processes than items: each needs a batch (they all reduce at the epoch's end)
            first, end = 0, 1
        return [slice(start, min(start + batch_size, end)) for start in range(first, end, batch_size)]
    starts = list(range(0, n - 1 if n % batch_size == 1 and n > batch_size else n, batch_size))
    starts += (starts * world_size)[:-len(starts) % world_size]
    return [slice(start, start + batch_size) for start in starts[rank::world_size]]


class EpochBatches(Sampler[list[int]]):
    """A DataLoader's batches of indices: each epoch's :func:`epoch_order` cut by :func:`process_slices`."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator | None, rank: int = 0, world_size: int = 1,
                 shard: bool = False):
        self.n, self.generator = n, generator
        self.slices = process_slices(n, batch_size, rank, world_size, shard)

    def __len__(self) -> int:
        return len(self.slices)

    def __iter__(self):
        order = epoch_order(self.n, self.generator)
        for batch in self.slices:
            yield order[batch].tolist()


class ResidentBatches:
    """The batches of one split whose tensors live on the training device: each epoch's order
    (:func:`epoch_order`, drawn on the CPU, so the batches and their order are those of :func:`batch_loader`)
    is copied to the device once, then sliced there (a process of several takes its :func:`process_slices`)."""

    def __init__(self, dataset: TensorBatchDataset, batch_size: int, generator: torch.Generator | None,
                 rank: int = 0, world_size: int = 1, shard: bool = False):
        self.dataset, self.generator = dataset, generator
        self.slices = process_slices(len(dataset), batch_size, rank, world_size, shard)

    def __len__(self) -> int:
        return len(self.slices)

    def __iter__(self):
        order = epoch_order(len(self.dataset), self.generator).to(self.dataset.images.device)
        for batch in self.slices:
            yield self.dataset[order[batch]]


class BatchGroup(list):
    """Consecutive training batches served as one item of the loader: the module trains on each in turn, an optimizer
    step each (shared.lean_lightning.GroupedTraining)."""


def batch_count(item) -> int:
    """The batches a training loader's item holds: a :class:`BatchGroup`'s, else the one it is."""
    return len(item) if isinstance(item, BatchGroup) else 1


class GroupedBatches:
    """``batches`` served ``size`` at a time as :class:`BatchGroup` s, the epoch's last group holding what is left:
    the same batches in the same order."""

    def __init__(self, batches, size: int):
        self.batches, self.size = batches, size

    def __len__(self) -> int:
        return -(-len(self.batches) // self.size)

    def __iter__(self):
        group = BatchGroup()
        for batch in self.batches:
            group.append(batch)
            if len(group) == self.size:
                yield group
                group = BatchGroup()
        if group:
            yield group


def batch_loader(dataset: TensorBatchDataset, batch_size: int, order: torch.Generator | None, seed: int = 0,
                 num_workers: int = 0, rank: int = 0, world_size: int = 1, shard: bool = False,
                 pin_memory: bool = False) -> DataLoader:
    """A DataLoader whose sampler yields index lists, so each fetch is a single tensor slice; each epoch's order
    is drawn from ``order`` (none: in order), and a process of several takes its :func:`process_slices` (so runs
    pass Lightning's ``use_distributed_sampler=False``)."""
    batches = EpochBatches(len(dataset), batch_size, order, rank, world_size, shard)
    # Each epoch's iterator draws a base seed for its workers, here from the loader's own generator: a draw from
    # the global one would shift every later random number of the run (the VAE's noise too), which the resident
    # batches do not.
    return DataLoader(dataset, sampler=batches, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed))


class TensorSplitsDataModule(pl.LightningDataModule):
    """A DataModule whose splits are in-memory tensors: ``setup`` fills ``self.splits`` with
    "train", "val" and "test"; training batches are shuffled with the module's seed.

    With ``num_workers=0`` the splits are moved to the trainer's device once (the CPU when no trainer is
    attached) and served as :class:`ResidentBatches`; with workers, as a DataLoader over host memory.
    Either way the batches and their order are the same for a given seed, and so are a run's figures (dynamically
    binarized images too: with workers they are drawn in this process, from the same generator). With
    ``batches_per_call`` above 1 the training batches come that many at a time, as :class:`BatchGroup` s.
    """

    def __init__(self, batch_size: int, seed: int, num_workers: int, batches_per_call: int = 1):
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if batches_per_call <= 0:
            raise ValueError(f"batches_per_call must be positive, got {batches_per_call}")
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.batches_per_call = batches_per_call
        self.splits: dict[str, TensorBatchDataset] = {}
        self.train_order: torch.Generator | None = None  # the training batches' shuffling, once they are drawn
        self.resumed_state: dict = {}

    def _loader(self, split: str, shuffle: bool) -> DataLoader | ResidentBatches:
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        if not self.num_workers:
            self.splits[split] = self.splits[split].to(device)  # moved once; the host copy is not kept
        elif isinstance(self.splits[split], DynamicallyBinarizedDataset) and self.splits[split].generator.device != device:
            # The workers serve grey images, binarized in this process after the transfer (by
            # transfer_batch_to_device): each worker's copy of the generator would draw the same noise as the others'.
            split_data = self.splits[split]
            self.splits[split] = DynamicallyBinarizedDataset(split_data.images, split_data.labels, split_data.seed, device)
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        if shuffle:
            self.train_order = generator
            if "train_order" in self.resumed_state:  # a resumed run: the order continues where it stopped
                generator.set_state(self.resumed_state.pop("train_order"))
            if "binarization" in self.resumed_state:
                self._resume_binarization(self.splits[split].generator, self.resumed_state.pop("binarization"))
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if self.num_workers:
            served = self.splits[split]
            served = served.grey() if isinstance(served, DynamicallyBinarizedDataset) else served
            return batch_loader(served, self.batch_size, generator, self.seed, self.num_workers, rank, world_size,
                                shard=not shuffle, pin_memory=device.type == "cuda")  # a GPU copies pages it pins
        return ResidentBatches(self.splits[split], self.batch_size, generator, rank, world_size, shard=not shuffle)

    def state_dict(self) -> dict:
        """What a checkpoint keeps so that a resumed run draws the batches (and dynamically binarized images) the
        uninterrupted run would have drawn: the states of the training batches' order and of their binarization."""
        state = {}
        if self.train_order is not None:
            state["train_order"] = self.train_order.get_state()
            if isinstance(self.splits["train"], DynamicallyBinarizedDataset):
                state["binarization"] = self.splits["train"].generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self.resumed_state = dict(state_dict)

    def _resume_binarization(self, generator: torch.Generator, state: torch.Tensor) -> None:
        """The binarization's stream where the checkpoint left it; a run resumed on another kind of device (a CPU
        generator's state is 5,056 bytes, a GPU's 16) cannot continue it, so it restarts from the seed and the epoch."""
        if len(state) == len(generator.get_state()):
            generator.set_state(state)
            return
        # The epoch about to run, counted from 1 (Lightning's current_epoch is the last finished one's, from 0): a seed
        # of its own, not the run's first stream again.
        epoch = (self.trainer.current_epoch if self.trainer is not None else -1) + 2
        generator.manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
        print(f"Dynamic binarization: the run's stream was drawn on another kind of device than {generator.device.type}; "
              f"it restarts from --seed {self.seed} and epoch {epoch} (the images drawn from here on differ from an "
              f"uninterrupted run's)", flush=True)

    def reseed_binarization(self, seed: int) -> None:
        """Draw the training images' binarization from ``seed`` on (a process of several, each epoch)."""
        if isinstance(self.splits.get("train"), DynamicallyBinarizedDataset):
            self.splits["train"].generator.manual_seed(seed)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        if not isinstance(batch, (tuple, list)):  # no batch: the model summary's example input, which comes here too
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        # Resident batches are on the device already: Lightning's generic walk of the batch for tensors to
        # move costs about 20 us a step for nothing.
        if not self.num_workers:
            return batch
        batch = super().transfer_batch_to_device(batch, device, dataloader_idx)
        train = self.splits.get("train")
        if isinstance(train, DynamicallyBinarizedDataset) and self.trainer is not None and self.trainer.training:
            # grey images from the workers
            if isinstance(batch, BatchGroup):
                return BatchGroup((train.binarize(images), labels) for images, labels in batch)
            images, labels = batch
            batch = train.binarize(images), labels
        return batch

    def training_batches(self) -> DataLoader | ResidentBatches:
        """The training batches one at a time (a flow's data init takes the first)."""
        return self._loader("train", shuffle=True)

    def train_dataloader(self) -> DataLoader | ResidentBatches | GroupedBatches:
        batches = self.training_batches()
        return GroupedBatches(batches, self.batches_per_call) if self.batches_per_call > 1 else batches

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

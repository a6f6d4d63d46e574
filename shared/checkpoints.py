"""The checkpoints of every run: the best (or each epoch's) by a figure, and last.ckpt, which ``--resume``
continues; epochs in their file names counted from 1, like every other epoch a person reads."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from shared.batches import TensorSplitsDataModule


def _file_identity(path: str) -> tuple[int, int] | None:
    """(inode, modification time in ns) of the file at ``path``, or None where there is none."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


class EpochCountCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose ``{epoch}`` in file names counts epochs from 1, like every other epoch a
    person reads (Lightning's own is the 0-based index of the epoch just finished), whose state key is
    built once, and which removes a checkpoint it replaced only once last.ckpt no longer names it.

    The best checkpoint is written when an epoch's validation ends, last.ckpt (which holds this callback's state,
    the best checkpoint's name with it) after the epoch's end hooks: an interrupt between the two left a last.ckpt
    naming a removed file, and the resumed run's test stopped on it (QA). The checkpoints still to remove travel in
    the state, so that one an interrupt left after last.ckpt was written (in a DDP run, while the processes met at the
    save's barrier) goes at the resumed run's next last.ckpt (QA); each with the file's identity, so that a file a
    person put back under that name since is kept (QA). An interrupt before that write leaves the new best one
    behind, untracked, unless the resumed run's repeat of the epoch writes it again (on the CPU it does)."""

    superseded: tuple[tuple[str, int, int], ...] = ()  # (path, inode, modification time in ns)

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        if (identity := _file_identity(filepath)) is not None:  # none: not there (another machine's disk)
            self.superseded = (*self.superseded, (filepath, *identity))

    def remove_superseded(self, trainer) -> None:
        """Remove the checkpoints this callback replaced: called once last.ckpt has been written anew."""
        for filepath, *identity in self.superseded:
            if _file_identity(filepath) == tuple(identity):
                super()._remove_checkpoint(trainer, filepath)
        self.superseded = ()

    @property
    def state_key(self) -> str:
        # Lightning formats the key into its profiler's label at every callback hook (six a training step, the
        # profiler or not), and ModelCheckpoint builds it each time as the repr of its constructor's trigger
        # arguments, which never change after: 20 us a step here.
        if "_state_key" not in self.__dict__:
            self._state_key = super().state_key
        return self._state_key

    def state_dict(self) -> dict:
        return {**super().state_dict(), "superseded": list(self.superseded)}

    def load_state_dict(self, state_dict: dict) -> None:
        # A run directory copied or moved keeps its checkpoints by name, but Lightning drops the best score when the
        # folder's path changed: the resumed copy would then report its next epoch as the best, whatever its figure.
        saved_dir = state_dict.get("dirpath")
        moved = saved_dir is not None and self.dirpath is not None and saved_dir != self.dirpath

        def here(path: str) -> str:
            return str(Path(self.dirpath, Path(path).name)) if path and moved else path
        if moved:
            state_dict = {**state_dict, "dirpath": self.dirpath, "best_model_path": here(state_dict["best_model_path"]),
                          "kth_best_model_path": here(state_dict.get("kth_best_model_path", "")),
                          "last_model_path": here(state_dict.get("last_model_path", "")),
                          "best_k_models": {here(path): v for path, v in state_dict.get("best_k_models", {}).items()}}
        super().load_state_dict(state_dict)
        self.superseded = tuple((here(path), inode, mtime) for path, inode, mtime in state_dict.get("superseded", ()))

    def format_checkpoint_name(self, metrics, filename=None, ver=None, prefix=None) -> str:
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        return super().format_checkpoint_name(metrics, filename, ver, prefix)


class LastEpochCheckpoint(EpochCountCheckpoint):
    """``last.ckpt``, rewritten at the very end of every epoch whatever the monitored figure did: what ``--resume``
    continues. It also holds torch's global random state of that moment, which it restores when the resumed run's
    first epoch starts (after the sanity check, which draws from it), so that the epochs after a resume draw the
    noise they would have drawn without the interrupt (the data module keeps its own generators' states).

    In a run of several processes, Lightning seeds every process alike, so each would draw the same noise for its
    own images (a GAN's processes the same fakes: one process's worth of generator batch): there each process
    draws every epoch from seeds of its own, made of ``seed``, the epoch and its rank, which a resume makes again
    (the checkpoint holds rank zero's states only).

    Since Lightning 2.6 a ModelCheckpoint's ``save_last=True`` writes last.ckpt only at the epochs that saved a top-k
    checkpoint, so beside a best-only one it held the best epoch, and a resume went back there."""

    def __init__(self, dirpath: Path, seed: int):
        # At the train epoch's end, after the epoch-end hooks (sample grids, the module's figures) have drawn theirs.
        super().__init__(dirpath=dirpath, filename=self.CHECKPOINT_NAME_LAST, monitor=None, save_top_k=1,
                         enable_version_counter=False, save_on_train_epoch_end=True)
        self.seed = seed
        self.resumed_random_state: dict | None = None
        self.device = torch.device("cpu")  # the training device, whose generator's state a GPU run saves too

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, EpochCountCheckpoint):
                callback.remove_superseded(trainer)

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.device = trainer.strategy.root_device

    def state_dict(self) -> dict:
        random_state = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            random_state["cuda_device"] = torch.cuda.get_rng_state(self.device)
        return {**super().state_dict(), "random_state": random_state}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.resumed_random_state = state_dict.get("random_state")  # none in a run made before 2026-12-06

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.world_size > 1:
            noise, binarization = np.random.SeedSequence([self.seed, trainer.current_epoch, trainer.global_rank]
                                                         ).generate_state(2)
            torch.manual_seed(int(noise))
            if isinstance(trainer.datamodule, TensorSplitsDataModule):
                trainer.datamodule.reseed_binarization(int(binarization))
        elif self.resumed_random_state is not None:
            torch.set_rng_state(self.resumed_random_state["cpu"])
            # The training GPU's stream, on the GPU this call trains on, whichever its index; none on a CPU. (Until
            # 2026-12-07 every visible GPU's was saved, and all were set: "invalid device ordinal" on fewer GPUs.)
            cuda, device = self.resumed_random_state, trainer.strategy.root_device
            if device.type == "cuda" and "cuda_device" in cuda:
                torch.cuda.set_rng_state(cuda["cuda_device"], device)
            elif device.type == "cuda" and (device.index or 0) < len(cuda.get("cuda", [])):
                torch.cuda.set_rng_state(cuda["cuda"][device.index or 0], device)
        self.resumed_random_state = None

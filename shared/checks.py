"""Checks that the training commands and the scripts share, of settings and of checkpoints: each returns why a value
cannot be used, or None, and the caller words the error its own way (a ``ConfigError``, ``parser.error``, an exit)."""
from __future__ import annotations

import tempfile
from pathlib import Path

# The bundled judge (shared.judge); the commands' --judge flags default to it. Here, not beside the judge, so that the
# scripts' parsers need no torch.
DEFAULT_JUDGE_PATH = Path(__file__).resolve().parent / "datasets" / "judge" / "judge.pt"


def bad_seed(seed: int) -> str | None:
    """Why ``seed`` cannot seed numpy and torch alike (they take 32 bits), or None."""
    return None if 0 <= seed < 2**32 else f"--seed must be in [0, 2**32 - 1], got {seed}"


def bad_data_dir(data_dir: str | None) -> str | None:
    """Why ``data_dir`` holds no MNIST (None: the bundled copy), or None."""
    if data_dir is not None and not Path(data_dir, "MNIST", "raw").is_dir():
        return f"--data_dir {data_dir}: no folder MNIST/raw inside it"
    return None


def bad_judge_path(path: str) -> str | None:
    """Why ``path`` cannot name a judge checkpoint (one that does not exist yet is trained there), or None."""
    if Path(path).is_dir():
        return f"{path} is a folder: pass a judge checkpoint file (one that does not exist yet is trained there first)"
    return None


def unwritable(folder: Path) -> str | None:
    """Why no file can be written in ``folder`` (made with its parents if missing): the nearest existing folder up
    is a file, or takes no new file (probed with one made and gone at once: os.access says yes to root); None where
    one can."""
    existing = next(path for path in (folder, *folder.resolve().parents) if path.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        return f"{existing} takes no new file ({err.strerror or err})"
    return None


def misfit(model_state: dict, saved_state: dict, built_by: str) -> str | None:
    """How a checkpoint's ``saved_state`` does not fit the model (``model_state``, the state dict of what ``built_by``
    builds): its first tensor of another shape, or that only one of them holds; None where it fits."""
    for name, tensor in saved_state.items():
        if name not in model_state:
            return f"holds {name}, which {built_by} does not build"
        if model_state[name].shape != tensor.shape:
            return f"holds {name} of shape {tuple(tensor.shape)}, {built_by} builds {tuple(model_state[name].shape)}"
    missing = next((name for name in model_state if name not in saved_state), None)
    return None if missing is None else f"lacks {missing}, which {built_by} builds"

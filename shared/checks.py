"""Checks of settings that the training commands and the scripts share: each returns why a value cannot be used,
or None, and the caller words the error its own way (a ``ConfigError`` or ``parser.error``)."""
from __future__ import annotations

import tempfile
from pathlib import Path


def bad_seed(seed: int) -> str | None:
    """Why ``seed`` cannot seed numpy and torch alike (they take 32 bits), or None."""
    return None if 0 <= seed < 2**32 else f"--seed must be in [0, 2**32 - 1], got {seed}"


def bad_data_dir(data_dir: str | None) -> str | None:
    """Why ``data_dir`` holds no MNIST (None: the bundled copy), or None."""
    if data_dir is not None and not Path(data_dir, "MNIST", "raw").is_dir():
        return f"--data_dir {data_dir}: no folder MNIST/raw inside it"
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

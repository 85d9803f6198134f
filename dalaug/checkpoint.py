"""Checkpoint files written atomically: a crash while writing leaves the previous file usable.

:func:`save` writes to a temporary file in the same directory, flushes it to disk, and renames it
over the target (``os.replace`` is atomic within a file system), then flushes the directory so the
rename itself survives a power cut. A reader sees either the old checkpoint or the new one, never
half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically.

    Args:
        obj: anything ``torch.save`` takes (a dict of state dicts, typically).
        path: the checkpoint file; its directory must exist.

    Returns:
        ``path`` as a Path.

    Example:
        >>> save({"model": model.state_dict(), "loader": loader.state_dict()}, "ckpt.pt")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: directory {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"path: {str(path)!r} is a directory")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        # Also on KeyboardInterrupt: leave no temporary file behind, keep the old checkpoint.
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Read a checkpoint written by :func:`save` (tensors, numbers, strings, lists and dicts only).

    Example:
        >>> loader.load_state_dict(load("ckpt.pt")["loader"])  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: checkpoint {str(path)!r} does not exist")
    return torch.load(path, map_location=map_location, weights_only=True)


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some file systems do not open directories; the rename is still atomic there
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)

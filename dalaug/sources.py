"""Where samples come from: an ImageFolder directory, a list of (path, label), or WebDataset shards.

A :class:`Source` is resolved and validated in Python before any DALI graph exists, so that a bad
path or an empty data set is reported by name instead of as a DALI internal error.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The extensions torchvision's ImageFolder accepts (its IMG_EXTENSIONS), so both see the same files.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# Member extensions of a WebDataset sample that hold the image and the class index.
WEBDATASET_IMAGE_EXT = "jpg;jpeg;png;webp"
WEBDATASET_LABEL_EXT = "cls"


@dataclass(frozen=True)
class FileSource:
    """Image files with integer labels, read by DALI's file reader."""

    files: tuple[str, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.files)


@dataclass(frozen=True)
class WebDatasetSource:
    """WebDataset tar shards: each sample is ``key.jpg`` (or png/webp) plus ``key.cls`` (ASCII int)."""

    shards: tuple[str, ...]
    num_samples: int
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return self.num_samples


Source = FileSource | WebDatasetSource


def resolve_source(source: str | os.PathLike | Sequence) -> Source:
    """Turn what the user passed as ``source`` into a validated :class:`Source`.

    Args:
        source: an ImageFolder directory (one sub-folder per class); a ``.tar`` WebDataset shard,
            a list of shards, or a directory holding only ``.tar`` shards; or a sequence of
            ``(path, label)`` pairs.

    Returns:
        A :class:`FileSource` or :class:`WebDatasetSource`.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: an empty directory, no class folders, no image files, malformed pairs.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"source: {str(path)!r} does not exist")
        if path.is_file():
            return _webdataset([path])
        tars = sorted(path.glob("*.tar"))
        if tars and not any(p.is_dir() for p in path.iterdir()):
            return _webdataset(tars)
        return image_folder(path)
    if isinstance(source, Sequence) and source and all(str(s).endswith(".tar") for s in source):
        return _webdataset([Path(s) for s in source])
    return _pairs(source)


def image_folder(root: Path) -> FileSource:
    """Scan ``root/<class>/<image>``, classes sorted as torchvision's ``ImageFolder`` sorts them."""
    entries = list(os.scandir(root))
    if not entries:
        raise ValueError(f"source: directory {str(root)!r} is empty")
    classes = sorted(e.name for e in entries if e.is_dir())
    if not classes:
        raise ValueError(
            f"source: {str(root)!r} has no class folders; expected one sub-folder per class "
            "(root/<class>/<image>.jpg)"
        )
    files, labels = [], []
    for label, name in enumerate(classes):
        # os.walk with followlinks matches torchvision, which follows links to class folders.
        for folder, _, names in sorted(os.walk(root / name, followlinks=True)):
            for file in sorted(names):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(os.path.join(folder, file))
                    labels.append(label)
    if not files:
        raise ValueError(
            f"source: no image files under {str(root)!r} (looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    return FileSource(tuple(files), tuple(labels), tuple(classes))


def _pairs(pairs: Sequence) -> FileSource:
    if not isinstance(pairs, Sequence) or isinstance(pairs, (str, bytes)) or not pairs:
        raise ValueError(
            "source: expected a directory, WebDataset .tar shards, or a non-empty list of "
            f"(path, label) pairs; got {type(pairs).__name__}"
        )
    files, labels = [], []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, Sequence) and len(pair) == 2):
            raise ValueError(f"source[{i}]: expected a (path, label) pair, got {pair!r}")
        path, label = pair
        if not isinstance(label, int) or isinstance(label, bool) or label < 0:
            raise ValueError(f"source[{i}]: label must be a non-negative int, got {label!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"source[{i}]: file {str(path)!r} does not exist")
        files.append(str(path))
        labels.append(label)
    classes = tuple(str(c) for c in range(max(labels) + 1))
    return FileSource(tuple(files), tuple(labels), classes)


def _webdataset(shards: list[Path]) -> WebDatasetSource:
    """Count samples and classes by reading the tar headers and the tiny ``.cls`` members."""
    image_exts = WEBDATASET_IMAGE_EXT.split(";")
    num_samples, max_label = 0, -1
    for shard in shards:
        if not shard.is_file():
            raise FileNotFoundError(f"source: shard {str(shard)!r} does not exist")
        try:
            with tarfile.open(shard) as tar:
                for member in tar:
                    stem, _, ext = member.name.rpartition(".")
                    if ext.lower() in image_exts:
                        num_samples += 1
                    elif ext == WEBDATASET_LABEL_EXT:
                        text = tar.extractfile(member).read().decode().strip()
                        if not text.isdigit():
                            raise ValueError(
                                f"source: {str(shard)!r} member {member.name!r} holds {text!r}, "
                                "not a class index"
                            )
                        max_label = max(max_label, int(text))
        except tarfile.TarError as error:
            raise ValueError(f"source: {str(shard)!r} is not a readable tar file ({error})") from None
    if num_samples == 0:
        raise ValueError(f"source: no {WEBDATASET_IMAGE_EXT} samples in shards {[str(s) for s in shards]}")
    return WebDatasetSource(
        tuple(str(s) for s in shards), num_samples, tuple(str(c) for c in range(max_label + 1))
    )

"""CIFAR-10/100 from the pickled batches torchvision downloads, converted once to PNG files.

Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009: the data sets of the
refinement paper's Tables 1-3 (He et al., "Data Augmentation Revisited"). Users have them as
torchvision's ``cifar-10-batches-py/`` (``data_batch_1``..``5``, ``test_batch``, ``batches.meta``)
or ``cifar-100-python/`` (``train``, ``test``, ``meta``): pickled dicts holding ``data``, uint8
(N, 3072) in channel-major order, and ``labels`` (``fine_labels`` for CIFAR-100).

:func:`convert_cifar` writes ``dest/train`` and ``dest/val`` in a format every dalaug source reads:
an ImageFolder (``<class>/<index>.png``) or WebDataset shards (``<key>.png`` + ``<key>.cls``), plus
``dest/classes.txt`` (one name per line, in label order). PNG is lossless, so the pixels are
CIFAR's own. Labels equal CIFAR's indices: the class folders are named after the meta file's
label names, which sort in label order for both CIFARs (sources number folders in sorted order).
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import tarfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

FORMATS = ("folder", "webdataset")
SHARD_SIZE = 10_000  # samples per WebDataset shard: 5 training shards for CIFAR

# name of the folder torchvision downloads -> (meta file, names key, labels key, splits)
LAYOUTS = {
    "cifar-10-batches-py": (
        "batches.meta", "label_names", "labels",
        {"train": [f"data_batch_{i}" for i in range(1, 6)], "val": ["test_batch"]},
    ),
    "cifar-100-python": ("meta", "fine_label_names", "fine_labels", {"train": ["train"], "val": ["test"]}),
}  # fmt: skip

# What a CIFAR pickle may name: numpy arrays and nothing else, so a tampered file cannot run code.
_ALLOWED_GLOBALS = {
    (module, name)
    for prefix in ("numpy.core", "numpy._core")
    for module, name in [
        (f"{prefix}.multiarray", "_reconstruct"),
        (f"{prefix}.multiarray", "scalar"),
        (f"{prefix}.numeric", "_frombuffer"),
    ]
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # encode: bytes in protocol 2


class _Split(NamedTuple):
    """One split read from the batches: images (N, 32, 32, 3) uint8, labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray


def convert_cifar(src: str | os.PathLike, dest: str | os.PathLike, fmt: str = "folder") -> Path:
    """Convert torchvision's downloaded CIFAR-10 or CIFAR-100 to ``dest/train`` and ``dest/val``.

    The result is written to a temporary folder next to ``dest`` and renamed into place when
    complete, so ``dest`` either does not exist or holds the whole data set.

    Args:
        src: the ``cifar-10-batches-py`` or ``cifar-100-python`` folder, or the folder holding
            one of them (torchvision's ``root``).
        dest: the folder to create; it must not exist.
        fmt: ``"folder"`` (ImageFolder of PNGs) or ``"webdataset"`` (``.tar`` shards of
            ``<key>.png`` + ``<key>.cls``).

    Returns:
        ``dest``.

    Raises:
        FileNotFoundError: ``src`` holds no CIFAR folder, or a batch file is missing.
        FileExistsError: ``dest`` exists.
        ValueError: ``fmt`` is unknown, or a batch or meta file is corrupt (the message names it).

    Example:
        >>> convert_cifar("data/cifar-100-python", "data/cifar100")  # doctest: +SKIP
        PosixPath('data/cifar100')
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt: expected one of {FORMATS}, got {fmt!r}")
    folder, layout = _find_layout(Path(src))
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"dest: {str(dest)!r} exists; remove it or choose another folder")
    meta_file, names_key, labels_key, splits = layout
    classes = _class_names(_unpickle(folder / meta_file), names_key, folder / meta_file)
    dest.parent.mkdir(parents=True, exist_ok=True)
    temporary = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)  # left by a run of ours that was killed
    try:
        temporary.mkdir()
        (temporary / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
        for split, files in splits.items():
            data = _read_split([folder / name for name in files], labels_key, len(classes))
            write = _write_folder if fmt == "folder" else _write_shards
            write(data, classes, temporary / split)
        temporary.rename(dest)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return dest


def _read_split(files: list[Path], labels_key: str, num_classes: int) -> _Split:
    """Read and concatenate CIFAR batch files, checking each one's shape and labels.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a file is not a CIFAR batch (named in the message).
    """
    images, labels = [], []
    for path in files:
        batch = _unpickle(path)
        data, targets = batch.get("data"), _int_array(batch.get(labels_key))
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (3072,)):
            raise ValueError(f"{str(path)!r}: 'data' must be uint8 (N, 3072), got {_describe(data)}")
        if targets is None or targets.shape != (len(data),):
            raise ValueError(
                f"{str(path)!r}: {labels_key!r} must be a list of {len(data)} integer class indices"
            )
        if len(targets) and not (0 <= targets.min() and targets.max() < num_classes):
            raise ValueError(f"{str(path)!r}: labels outside [0, {num_classes})")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # channel-major -> HWC
        labels.append(targets)
    return _Split(np.concatenate(images), np.concatenate(labels))


def _find_layout(src: Path) -> tuple[Path, tuple]:
    if src.name in LAYOUTS and src.is_dir():
        return src, LAYOUTS[src.name]
    found = [src / name for name in LAYOUTS if (src / name).is_dir()]
    if len(found) == 1:
        return found[0], LAYOUTS[found[0].name]
    raise FileNotFoundError(
        f"src: {str(src)!r} is not, and holds {'both' if found else 'neither'} of, torchvision's "
        f"CIFAR folders {sorted(LAYOUTS)}"
    )


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not a CIFAR batch")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, object]:
    """A batch or meta file as a dict with str keys (Python 2's pickles give str, Python 3's bytes)."""
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r}: missing CIFAR file (download it again)")
    try:
        with open(path, "rb") as file:
            content = _ArraysOnly(file, encoding="latin1").load()  # latin1: numpy's rule for py2 arrays
    except Exception as error:
        raise ValueError(
            f"{str(path)!r}: not a readable CIFAR pickle: {type(error).__name__}: {error}"
        ) from None
    if not isinstance(content, dict):
        raise ValueError(f"{str(path)!r}: expected a pickled dict, got {type(content).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in content.items()}


def _class_names(meta: dict[str, object], key: str, path: Path) -> list[str]:
    names = meta.get(key)
    if not isinstance(names, list) or not names:
        raise ValueError(f"{str(path)!r}: expected a list of class names in {key!r}, got {_describe(names)}")
    names = [n.decode("ascii") if isinstance(n, bytes) else str(n) for n in names]
    for name in names:
        if not name or name != Path(name).name or name.startswith("."):
            raise ValueError(f"{str(path)!r}: class name {name!r} cannot be a folder name")
    if names != sorted(set(names)):
        # Not the case for CIFAR-10 or CIFAR-100; sources would number the folders differently.
        raise ValueError(f"{str(path)!r}: class names are not unique and in sorted order: {names}")
    return names


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_folder(data: _Split, classes: list[str], root: Path) -> None:
    for name in classes:
        (root / name).mkdir(parents=True)
    for index, (image, label) in enumerate(zip(data.images, data.labels, strict=True)):
        (root / classes[label] / f"{index:05d}.png").write_bytes(_png(image))


def _write_shards(data: _Split, classes: list[str], root: Path) -> None:
    root.mkdir(parents=True)
    for start in range(0, len(data.labels), SHARD_SIZE):
        with tarfile.open(root / f"shard-{start // SHARD_SIZE:05d}.tar", "w") as tar:
            for index in range(start, min(start + SHARD_SIZE, len(data.labels))):
                _add_member(tar, f"{index:05d}.png", _png(data.images[index]))
                _add_member(tar, f"{index:05d}.cls", str(int(data.labels[index])).encode("ascii"))


def _add_member(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    tar.addfile(info, io.BytesIO(content))


def _int_array(values: object) -> np.ndarray | None:
    """``values`` as int64, or None unless they are all integers: a cast would truncate 3.7 to a
    wrong label where the batch is corrupt."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError):
        return None
    if array.size and array.dtype.kind not in "iu":  # an empty list reads as float64
        return None
    return array.astype(np.int64)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__

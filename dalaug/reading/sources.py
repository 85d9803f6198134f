"""Where samples come from: an ImageFolder directory, a list of (path, label), or WebDataset shards
on disk or in a bucket (``s3://``, ``gs://``, ``https://``; see :mod:`dalaug.reading.storage`).

Every source resolves to one :class:`Samples` table (where each sample's bytes are, its label, the
class names), validated in Python before any DALI graph exists, so a bad path or an empty data set
is reported by name instead of as a DALI internal error. WebDataset shards are indexed once (tar
headers and the tiny ``.cls`` members) so their samples are read by offset like plain files, and the
same epoch order, sharding and bad-file handling apply to every kind of source.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain, repeat
from pathlib import Path

import numpy as np

from dalaug.reading.storage import expand_braces, is_url, item_name, list_shards
from dalaug.reading.webdataset import index_shards, rewritten, shard_version
from dalaug.reading.workers import read_file

# The extensions torchvision's ImageFolder accepts (its IMG_EXTENSIONS), so both see the same files.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True, eq=False)
class Samples:
    """The data set as a table: sample ``i`` is ``sizes[i]`` bytes at ``offsets[i]`` of
    ``paths[i]`` (a whole file when the offset is -1), with class ``labels[i]``."""

    paths: tuple[str, ...]
    offsets: np.ndarray  # int64
    sizes: np.ndarray  # int64, -1 for a whole file
    labels: np.ndarray  # int64
    classes: tuple[str, ...]
    # Files the scan found but cannot use (a broken symbolic link), with why: reported, not read.
    unreadable: tuple[tuple[str, str], ...] = ()
    # Each WebDataset shard's version when it was indexed: its samples are read at those offsets.
    versions: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    @cached_property
    def streamed(self) -> bool:
        """Whether the samples are in shards fetched from a bucket or web server (then the epoch
        order keeps to a window of shards at a time: see :class:`~dalaug.feed.EpochFeed`)."""
        return any(is_url(shard) for shard in self.versions)

    @cached_property
    def shard_starts(self) -> np.ndarray:
        """Where each run of samples of one file starts, and ``len(self)`` last: a shard's samples
        are ``shard_starts[k]`` to ``shard_starts[k + 1]``."""
        paths = self.paths
        starts = [0, *(i for i in range(1, len(paths)) if paths[i] != paths[i - 1])]
        return np.asarray([*starts, len(paths)], np.int64)

    def location(self, index: int) -> str:
        """What a read worker opens for sample ``index``: its file, or its shard's URL and version."""
        path = self.paths[index]
        return item_name(path, self.versions[path]) if self.streamed and is_url(path) else path

    def name(self, index: int) -> str:
        """The sample as a user would look for it: the file, or ``shard.tar@offset``, the shard and
        the byte where the member's data starts (``tar -tvR`` lists each member's header block N:
        its data starts at byte 512 * (N + 1))."""
        if self.offsets[index] < 0:
            return self.paths[index]
        return f"{self.paths[index]}@{self.offsets[index]}"

    def changed_shards(self, indices: Iterable[int]) -> list[str]:
        """The shards of samples ``indices`` rewritten since they were indexed (or gone)."""
        shards = {self.paths[i] for i in indices if self.offsets[i] >= 0} & self.versions.keys()
        return sorted(shard for shard in shards if rewritten(shard, self.versions[shard]))

    def read(self, index: int) -> np.ndarray:
        """The encoded bytes of sample ``index`` as a uint8 array (shorter if the file shrank)."""
        return read_file(self.location(index), int(self.offsets[index]), int(self.sizes[index]))

    def without(self, indices) -> Samples:
        """The table less the samples ``indices`` (ids are renumbered)."""
        keep = np.setdiff1d(np.arange(len(self)), np.asarray(list(indices), dtype=np.int64))
        return Samples(
            tuple(self.paths[i] for i in keep), self.offsets[keep], self.sizes[keep],
            self.labels[keep], self.classes, self.unreadable, self.versions,
        )  # fmt: skip


def resolve_source(source: str | os.PathLike | Sequence | Samples) -> Samples:
    """Turn what the user passed as ``source`` into a validated :class:`Samples` table.

    Args:
        source: an ImageFolder directory (one sub-folder per class); a ``.tar`` WebDataset shard,
            a list of shards, or a directory holding only ``.tar`` shards; shards in a bucket or on
            a web server (``s3://bucket/prefix/`` for every ``.tar`` under it, ``gs://...``, a shard's
            ``https://`` URL); any of those shards in WebDataset's brace notation
            (``train-{000000..001023}.tar``), or a list of them; a sequence of ``(path, label)``
            pairs; or a :class:`Samples` table.

    Raises:
        FileNotFoundError: a path, bucket or object that does not exist.
        PermissionError: a bucket that denies access.
        ValueError: an empty directory, no class folders, no image files, malformed pairs.
    """
    if isinstance(source, Samples):
        return source
    if isinstance(source, str) and (is_url(source) or _BRACE in source):
        return _shards([source])
    if _shard_list(source):
        return _shards(list(source))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"source: {str(path)!r} does not exist")
        if path.is_file():
            return webdataset([path])
        tars = sorted(path.glob("*.tar"))
        # Shards, unless class folders sit beside them (a hidden folder such as .ipynb_checkpoints is none).
        if tars and not any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
            return webdataset(tars)
        return image_folder(path)
    return _pairs(source)


_BRACE = "{"


def _shard_list(source) -> bool:
    """Whether ``source`` is a list of shards (paths, URLs, brace patterns), not of pairs."""
    if isinstance(source, (str, bytes, os.PathLike)) or not isinstance(source, Sequence) or not source:
        return False
    return all(isinstance(s, (str, os.PathLike)) and (str(s).endswith(".tar") or is_url(s)
               or _BRACE in str(s)) for s in source)  # fmt: skip


def _shards(sources: Sequence[str | os.PathLike]) -> Samples:
    """The shards named by paths, URLs and brace patterns, in the order given (a bucket's prefix:
    its shards sorted by name), indexed."""
    shards, versions = [], []
    for source in sources:
        if is_url(source):
            for url, version in list_shards(str(source)):
                shards.append(url)
                versions.append(version)
            continue
        for name in expand_braces(str(source)):
            path = Path(name)
            if path.is_dir():
                shards.extend(sorted(path.glob("*.tar")))
            else:
                shards.append(path)
            versions.extend(shard_version(s) for s in shards[len(versions) :])
    return webdataset(shards, versions)


def image_folder(root: str | Path) -> Samples:
    """Scan ``root/<class>/<image>``, classes sorted as torchvision's ``ImageFolder`` sorts them."""
    root = Path(root)
    try:
        entries = list(os.scandir(root))
    except OSError as error:
        why = error.strerror or error
        raise PermissionError(f"source: cannot list folder {str(root)!r}: {why}") from None
    if not entries:
        raise ValueError(f"source: directory {str(root)!r} is empty")
    classes = sorted(e.name for e in entries if e.is_dir())
    if not classes:
        raise ValueError(
            f"source: {str(root)!r} has no class folders; expected one sub-folder per class "
            "(root/<class>/<image>.jpg)"
        )
    files, labels, broken = [], [], []
    for label, name in enumerate(classes):
        # Sorted by folder, then by name, with links to folders followed: torchvision's order.
        for _, entries in sorted(_walk(os.path.join(root, name), broken), key=lambda f: f[0]):
            for entry in sorted(entries, key=lambda e: e.name):
                if not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                # A link to nothing would only fail later, inside DALI; is_symlink() costs no
                # system call, so only links pay for the check.
                if entry.is_symlink() and not entry.is_file():
                    broken.append((entry.path, f"broken symbolic link to {os.readlink(entry.path)!r}"))
                    continue
                files.append(entry.path)
                labels.append(label)
    unlisted = {path: why for path, why in broken if why.startswith(_UNLISTED)}
    listed_not = [os.path.join(root, name) for name in classes if os.path.join(root, name) in unlisted]
    if listed_not:  # a class folder this process may not read: no sample of it can be found
        raise PermissionError(
            f"source: class folder {listed_not[0]!r} {unlisted[listed_not[0]]}"
            + (f" (and {len(listed_not) - 1} more class folders)" if len(listed_not) > 1 else "")
        )
    if not files:
        raise ValueError(
            f"source: no image files under {str(root)!r} (looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    counts = np.bincount(labels, minlength=len(classes))
    empty = [name for name, count in zip(classes, counts, strict=True) if not count]
    if empty:
        # A class with no image would still take a label and shift those of the classes after
        # it, unlike in a folder without it (a validation set): torchvision's ImageFolder refuses too.
        raise ValueError(
            f"source: class folders {empty} of {str(root)!r} hold no image files; remove them (or "
            "move hidden folders such as .ipynb_checkpoints out), as every later class's label would shift"
        )
    return _files(files, labels, classes, tuple(broken))


def _walk(folder: str, unlisted: list[tuple[str, str]]) -> list[tuple[str, list[os.DirEntry]]]:
    """``os.walk(folder, followlinks=True)`` as (folder, non-folder entries): entries keep the
    file type that scandir read, so broken links are found without a stat per file. Folders that
    cannot be listed go to ``unlisted`` (os.walk would skip them silently)."""
    found, pending = [], [(folder, frozenset())]
    while pending:
        current, above = pending.pop()
        entries = []
        try:
            here = _identity(current)
            with os.scandir(current) as listing:
                for entry in listing:
                    if not entry.is_dir():
                        entries.append(entry)
                        continue
                    if entry.is_symlink() and _identity(entry.path) in above | {here}:
                        # os.walk(followlinks=True), as torchvision's ImageFolder walks, would go
                        # round until the path grew too long, reading every file dozens of times.
                        raise ValueError(
                            f"source: symbolic link {entry.path!r} -> {os.readlink(entry.path)!r} loops back "
                            "to a folder above it; remove it (each file would be read again on every turn)"
                        )
                    pending.append((entry.path, above | {here}))
        except OSError as error:
            unlisted.append((current, f"{_UNLISTED}: {error.strerror or error}"))
            continue
        found.append((current, entries))
    return found


_UNLISTED = "cannot be listed"


def _identity(folder: str) -> tuple[int, int]:
    stat = os.stat(folder)
    return stat.st_dev, stat.st_ino


def _files(files: list[str], labels: list[int], classes, unreadable=()) -> Samples:
    minus_one = np.full(len(files), -1, dtype=np.int64)
    return Samples(
        tuple(files), minus_one, minus_one.copy(), np.asarray(labels, np.int64), tuple(classes),
        unreadable,
    )  # fmt: skip


def _pairs(pairs) -> Samples:
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
        if not isinstance(label, (int, np.integer)) or isinstance(label, bool) or label < 0:
            raise ValueError(f"source[{i}]: label must be a non-negative int, got {label!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"source[{i}]: file {str(path)!r} does not exist")
        files.append(str(path))
        labels.append(int(label))
    return _files(files, labels, [str(c) for c in range(max(labels) + 1)])


def webdataset(shards: Sequence[str | Path], versions: Sequence[tuple[int, ...]] | None = None) -> Samples:
    """Index WebDataset shards: each sample is ``key.jpg`` (or jpeg/png/webp) plus ``key.cls``.

    Each shard's index is built once and stored (see :mod:`dalaug.reading.webdataset`); a shard in
    a bucket (a URL, its ``versions`` entry read from the bucket) is fetched into the cache for it."""
    if not shards:
        raise ValueError("source: no WebDataset shards given")
    if versions is None:
        versions = [shard_version(shard) for shard in shards]
    indexes = index_shards(shards, versions)  # indexed as these versions, checked against them later
    labels = np.concatenate([index.labels for index in indexes])
    # One str per shard, referenced by each of its samples: a pointer a sample, no copies.
    paths = chain.from_iterable(
        repeat(str(shard), len(index.labels)) for shard, index in zip(shards, indexes, strict=True)
    )
    return Samples(
        tuple(paths), np.concatenate([index.offsets for index in indexes]),
        np.concatenate([index.sizes for index in indexes]), labels,
        tuple(str(c) for c in range(int(labels.max()) + 1)),
        versions={str(shard): version for shard, version in zip(shards, versions, strict=True)},
    )  # fmt: skip

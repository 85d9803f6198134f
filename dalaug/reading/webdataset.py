"""WebDataset shards indexed once: where each sample's image is in its ``.tar``, and its class.

Python's ``tarfile`` takes 100-200 s per process to walk ImageNet's 1.28M samples, and every rank of
every run paid it again. Here each shard's index (image offsets, sizes, labels) is built once by
reading the 512-byte tar headers straight from a memory map, then kept as a small ``.npy`` file that
later starts load in well under a millisecond:

- next to the shard as ``<shard>.dalaug-idx.npy`` when that folder is writable, so every machine
  that mounts the data set shares it; else under ``$DALAUG_CACHE`` (default ``~/.cache/dalaug``).
  One file per shard rather than one per folder: a changed shard re-indexes only itself, and two
  ranks never need to merge their work into one file.
- keyed by the shard's size, mtime, ctime and inode: a shard rewritten or replaced is indexed again
  (ctime changes on every write, even when a tool restores the mtime).
- written to a temporary file in the same folder and renamed over the old one, so a rank never
  reads a half-written index, and ranks starting together at worst build the same index twice.

Samples follow the WebDataset naming convention (the one ``webdataset`` and DALI's
``readers.webdataset`` use): the key is the member's path up to the first dot of its file name, the
extension is the rest; a sample is ``key.jpg`` (or jpeg/png/webp, any case) plus ``key.cls`` holding
its class index as ASCII text.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from stat import S_ISREG
from typing import NamedTuple

import numpy as np

from dalaug.reading.storage import FETCHES, cache_root, is_url, item_name, open_shard

IMAGE_EXTENSIONS = (b"jpg", b"jpeg", b"png", b"webp")
LABEL_EXTENSION = b"cls"
INDEX_SUFFIX = ".dalaug-idx.npy"
# Bump when the index layout or what it records changes: older files are then rebuilt.
INDEX_VERSION = 1
_MAGIC = 0x6461_6C61_7567_6978  # "dalaugix"
_HEADER = 7  # int64 values before the arrays: magic, version, the 4 key fields, sample count

_BLOCK = 512
_ZEROS = bytes(_BLOCK)
_FILE_TYPES = (b"0", b"\0", b"7")  # regular file (POSIX, old V7, contiguous)
_GNU_LONG_NAME, _PAX_HEADER, _GNU_SPARSE = b"L", b"x", b"S"
_METADATA = (b"K", b"g")  # a GNU long link name, pax global fields: neither names a member


class ShardIndex(NamedTuple):
    """Sample ``i`` of a shard: ``sizes[i]`` image bytes at ``offsets[i]``, class ``labels[i]``."""

    offsets: np.ndarray  # int64
    sizes: np.ndarray  # int64
    labels: np.ndarray  # int64


def index_shards(
    shards: Sequence[str | os.PathLike], versions: Sequence[tuple[int, ...]] | None = None
) -> list[ShardIndex]:
    """The index of each shard, loaded where one is up to date, else built and stored.

    Args:
        shards: ``.tar`` files in the WebDataset layout.
        versions: each shard's :func:`shard_version` as the caller saw it (default: looked up
            here); the index is of that version, or the call raises.

    Returns:
        One :class:`ShardIndex` per shard, in the order given.

    Raises:
        FileNotFoundError: a shard that does not exist.
        ValueError: a shard that is not a tar, is truncated, holds no images, or whose sample has a
            missing or non-integer ``.cls`` label; the message names the shard and the member.

    >>> [index] = index_shards(["data/shard-000.tar"])  # doctest: +SKIP
    >>> int(index.labels[0])  # doctest: +SKIP
    3
    """
    shards = [s if is_url(s) else Path(s) for s in shards]
    keys = list(versions) if versions is not None else [shard_version(shard) for shard in shards]
    indexes = [_load(shard, key) for shard, key in zip(shards, keys, strict=True)]
    missing = [i for i, index in enumerate(indexes) if index is None]
    remote = [i for i in missing if is_url(shards[i])]
    if remote:  # fetched into the cache (it is the first epoch's fetch too), several at once
        with ThreadPoolExecutor(2 * FETCHES, thread_name_prefix="dalaug-index") as threads:
            built = threads.map(lambda i: _build_remote(shards[i], keys[i]), remote)
            for i, index in zip(remote, built, strict=True):
                indexes[i] = index
        missing = [i for i in missing if indexes[i] is None]
    # Ranks that start together begin at different shards, so each mostly finds the others' work
    # done when it gets there instead of every rank building every shard.
    start = os.getpid() % len(missing) if missing else 0
    for i in missing[start:] + missing[:start]:
        indexes[i] = _load(shards[i], keys[i]) or _build_and_store(shards[i], keys[i])
    return indexes


def index_file(shard: str | os.PathLike) -> Path:
    """Where the index of ``shard`` lives when its folder is writable."""
    shard = Path(shard)
    return shard.with_name(shard.name + INDEX_SUFFIX)


def cached_index_file(shard: str | os.PathLike) -> Path:
    """Where the index of ``shard`` lives when its folder is not writable (or it is in a bucket): the
    cache folder, under a name unique to the shard's real path or URL."""
    root = cache_root()
    real = shard if is_url(shard) else os.path.realpath(shard)
    digest = hashlib.sha256(os.fsencode(real)).hexdigest()[:20]
    return root / "webdataset" / f"{digest}-{Path(real).name}{INDEX_SUFFIX}"


def build_index(shard: str | os.PathLike | int, name: str | None = None) -> ShardIndex:
    """Read ``shard``'s tar headers (ustar, GNU long names, pax) and its ``.cls`` members; errors
    call it ``name`` (default: its path; the URL of a cached shard). ``shard`` may be an open
    descriptor (closed here)."""
    path, shard = shard, name or str(shard)
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            raise ValueError(f"source: shard {str(shard)!r} is empty, not a tar file")
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            images, labels, skipped = _scan(data, shard)
    if skipped:
        # Left out by WebDataset's own rule, but a user looking for these images must hear of it.
        note = (
            f"shard {str(shard)!r}: {len(skipped)} member(s) named like images are no samples, e.g. "
            f"{_text(skipped[0])!r}: a sample's key ends at the first dot of its file name "
            "(a.b.jpg is key 'a', extension 'b.jpg'), and hard or symbolic links are not followed"
        )
        if not images:
            raise ValueError(f"source: {note}")
        warnings.warn(note, stacklevel=2)
    if not images:
        raise ValueError(
            f"source: shard {str(shard)!r} holds no image members (looked for "
            f"{', '.join('.' + e.decode() for e in IMAGE_EXTENSIONS)})"
        )
    offsets, sizes, classes = [], [], []
    for key, name, offset, size in images:
        label = labels.get(key)
        if label is None:
            raise ValueError(
                f"source: shard {str(shard)!r} member {_text(name)!r} has no "
                f"{_text(key + b'.' + LABEL_EXTENSION)!r} label"
            )
        offsets.append(offset)
        sizes.append(size)
        classes.append(label)
    return ShardIndex(*(np.asarray(v, np.int64) for v in (offsets, sizes, classes)))


Member = tuple[bytes, bytes, int, int]  # key, name, data offset, size


def _scan(data: mmap.mmap, shard: str) -> tuple[list[Member], dict[bytes, int], list[bytes]]:
    """Walk the tar headers: the image members as (key, name, data offset, size), in tar order, the
    label of each key that has a ``.cls`` member, and the members named like images that belong to
    no sample (a key with a dot in it, a link; not a sample's extra such as ``x.seg.png``)."""
    images, labels, seen, named_like_images = [], {}, set(), []
    end, position = len(data), 0
    long_name = pax_name = pax_size = None
    while position < end:  # tarfile too accepts a file that ends without the two zero blocks
        header = data[position : position + _BLOCK]
        if header == _ZEROS:
            break
        if len(header) < _BLOCK:
            raise ValueError(f"source: shard {str(shard)!r} is truncated (ends inside a tar header)")
        if header[257:262] != b"ustar":
            where = "" if position else ", not a tar file"
            raise ValueError(
                f"source: shard {str(shard)!r} has no ustar/GNU/pax tar header at byte {position}{where}"
            )
        kind = header[156:157]
        size = pax_size if pax_size is not None else _number(header[124:136], shard, position)
        start = position + _BLOCK
        following = start + (size + _BLOCK - 1) // _BLOCK * _BLOCK  # data padded to whole blocks
        if following > end:
            raise ValueError(
                f"source: shard {str(shard)!r} is truncated: member "
                f"{_text(_name(header))!r} needs {following} bytes, the file has {end}"
            )
        if kind == _GNU_LONG_NAME:
            long_name = data[start : start + size].split(b"\0", 1)[0]
        elif kind == _PAX_HEADER:
            pax_name, pax_size = _pax(data[start : start + size], shard, position)
        elif kind == _GNU_SPARSE:
            raise ValueError(f"source: shard {str(shard)!r} holds a GNU sparse member at byte {position}")
        elif kind not in _METADATA:  # a member: the long name or pax fields above were its own
            name = pax_name or long_name or _name(header)
            folder, _, file_name = name.rpartition(b"/")
            stem, dot, extension = file_name.partition(b".")
            key = folder + b"/" + stem if folder else stem
            extension = extension.lower()
            if kind in _FILE_TYPES and extension in IMAGE_EXTENSIONS:
                if key in seen:
                    raise ValueError(
                        f"source: shard {str(shard)!r} has a second image for sample "
                        f"{_text(key)!r}: {_text(name)!r}"
                    )
                seen.add(key)
                images.append((key, name, start, size))
            elif kind in _FILE_TYPES and dot and extension == LABEL_EXTENSION:
                labels[key] = _label(data[start : start + size], shard, name)
            elif extension.rpartition(b".")[2] in IMAGE_EXTENSIONS:  # a key with a dot, or a link
                named_like_images.append((key, name))
            long_name = pax_name = pax_size = None
        position = following
    return images, labels, [name for key, name in named_like_images if key not in seen]


def _name(header: bytes) -> bytes:
    name = header[0:100].split(b"\0", 1)[0]
    # POSIX ustar splits long paths into prefix/name; GNU headers use those bytes for other fields.
    if header[257:265] == b"ustar\x0000" and header[345] != 0:
        name = header[345:500].split(b"\0", 1)[0] + b"/" + name
    return name


def _number(field: bytes, shard: Path, position: int) -> int:
    if field[0] == 0x80:  # GNU base-256, for sizes of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    try:
        return int(field.strip(b" \0") or b"0", 8)
    except ValueError:
        raise ValueError(
            f"source: shard {str(shard)!r} has a corrupt tar header at byte {position} (size {field!r})"
        ) from None


def _pax(records: bytes, shard: Path, position: int) -> tuple[bytes | None, int | None]:
    """The ``path`` and ``size`` a pax extended header sets for the next member."""
    name = size = None
    while records:
        length, _, rest = records.partition(b" ")
        if not length.isdigit() or int(length) <= len(length) + 1:
            raise ValueError(f"source: shard {str(shard)!r} has a corrupt pax header at byte {position}")
        record, records = rest[: int(length) - len(length) - 2], records[int(length) :]
        field, _, value = record.partition(b"=")
        if field == b"path":
            name = value
        elif field == b"size":
            size = int(value)
        elif field.startswith(b"GNU.sparse"):
            raise ValueError(f"source: shard {str(shard)!r} holds a GNU sparse member at byte {position}")
    return name, size


def _label(text: bytes, shard: Path, name: bytes) -> int:
    value = text.strip()
    if not value.isdigit():  # bytes.isdigit is ASCII 0-9 only
        raise ValueError(
            f"source: shard {str(shard)!r} member {_text(name)!r} holds {text[:40]!r}, "
            "not a class index (ASCII digits)"
        )
    return int(value)


def _text(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def shard_version(shard: str | os.PathLike) -> tuple[int, ...]:
    """What identifies this version of the shard's bytes without reading them."""
    try:
        stat = os.stat(shard)
    except FileNotFoundError:
        raise FileNotFoundError(f"source: shard {str(shard)!r} does not exist") from None
    if not S_ISREG(stat.st_mode):
        raise ValueError(f"source: shard {str(shard)!r} is not a file")
    # Not st_dev: machines that mount the same network file system number it differently.
    return stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino


def rewritten(shard: str | os.PathLike, version: tuple[int, ...]) -> bool:
    """Whether ``shard`` is no longer the ``version`` that was indexed: its size, modification time
    or inode changed, or it is gone (a change of permissions or owner moves only ctime: no rewrite).
    A shard in a bucket is read at its indexed version or not at all (see
    :mod:`dalaug.reading.storage`): never rewritten under its reader."""
    if is_url(shard):
        return False
    try:
        size, modified, _, inode = shard_version(shard)
    except (OSError, ValueError):
        return True
    return (size, modified, inode) != (version[0], version[1], version[3])


def _header(key: tuple[int, ...], count: int) -> np.ndarray:
    # Inode numbers are unsigned 64-bit: keep their bits in int64.
    values = [_MAGIC, INDEX_VERSION, *key, count]
    return np.array([v & (2**64 - 1) for v in values], np.uint64).view(np.int64)


def _places(shard: Path | str) -> Iterator[Path]:
    """Where the index may be, in the order tried (the cache path only computed when needed)."""
    if not is_url(shard):  # a bucket may be read-only: the index of a shard in one is cached only
        yield index_file(shard)
    yield cached_index_file(shard)


def _load(shard: Path | str, key: tuple[int, ...]) -> ShardIndex | None:
    """The stored index of this version of ``shard``, or None when there is none up to date."""
    for path in _places(shard):
        try:
            stored = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):  # none, unreadable, or not an index
            continue
        if stored.dtype != np.int64 or stored.ndim != 1 or len(stored) < _HEADER:
            continue
        count = int(stored[_HEADER - 1])
        if len(stored) == _HEADER + 3 * count and np.array_equal(stored[:_HEADER], _header(key, count)):
            return ShardIndex(*stored[_HEADER:].reshape(3, count))
    return None


def _build_remote(url: str, key: tuple[int, ...]) -> ShardIndex:
    """The index of a shard in a bucket, built from its copy in the cache (fetched first)."""
    index = _load(url, key)  # another rank may have built it meanwhile
    if index is not None:
        return index
    # Opened as the read workers open a shard: the fetch threads indexing the others may evict
    # this copy before it is read, under a small cache limit (it is then fetched again).
    descriptor = open_shard(item_name(url, key))
    return _store_index(url, key, build_index(descriptor, name=url))


def _build_and_store(shard: Path, key: tuple[int, ...]) -> ShardIndex:
    index = build_index(shard)
    if shard_version(shard) != key:
        raise ValueError(
            f"source: shard {str(shard)!r} changed while it was indexed; is it still being written?"
        )
    return _store_index(shard, key, index)


def _store_index(shard: Path | str, key: tuple[int, ...], index: ShardIndex) -> ShardIndex:
    stored = np.concatenate([_header(key, len(index.labels)), *index])
    for path in _places(shard):
        if _store(stored, path):
            return index
    warnings.warn(
        f"could not store the index of {str(shard)!r} next to it or in {str(cached_index_file(shard))!r}; "
        "it will be built again next time (set DALAUG_CACHE to a writable folder)",
        stacklevel=3,
    )
    return index


def _store(array: np.ndarray, path: Path) -> bool:
    """Write ``array`` to ``path`` atomically; False where the folder does not let us."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError:
        return False
    try:
        with os.fdopen(descriptor, "wb") as file:
            np.save(file, array, allow_pickle=False)
            file.flush()
            os.fsync(file.fileno())  # the rename must not reach the disk before the bytes
        os.chmod(temporary, 0o644)  # mkstemp makes it private; other users read the data set too
        os.replace(temporary, path)
    except OSError:
        Path(temporary).unlink(missing_ok=True)
        return False
    return True

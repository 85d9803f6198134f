"""WebDataset shard indexes: what tarfile finds, built once and reused, rebuilt when a shard changes,
safe when ranks build together, and bad shards named."""

from __future__ import annotations

import io
import multiprocessing
import os
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from dalaug.reading import webdataset
from dalaug.reading.sources import resolve_source
from dalaug.reading.webdataset import build_index, cached_index_file, index_file, index_shards

LONG_FOLDER = "class-" + "n" * 90  # with the key, past ustar's 100-byte name field


def write_shard(path: Path, members: list[tuple[str, bytes]], tar_format=tarfile.PAX_FORMAT) -> Path:
    with tarfile.open(path, "w", format=tar_format) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def samples(count: int, first: int = 0, folder: str = "") -> list[tuple[str, bytes]]:
    """``count`` samples: a fake JPEG of a size that varies, and a label ``key % 7``."""
    members = []
    for key in range(first, first + count):
        name = f"{folder}/{key:06d}" if folder else f"{key:06d}"
        members.append((f"{name}.jpg", b"\xff\xd8" + bytes([key % 251]) * (100 + 37 * key) + b"\xff\xd9"))
        members.append((f"{name}.cls", f"{key % 7}\n".encode()))
    return members


def tarfile_truth(path: Path) -> tuple[list[int], list[int], list[int]]:
    """Offsets, sizes and labels of the image members as Python's tarfile reads them."""
    offsets, sizes, labels = [], [], []
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        classes = {
            m.name.rsplit(".", 1)[0]: int(tar.extractfile(m).read())
            for m in members
            if m.name.endswith(".cls")
        }
        for member in members:
            if member.name.endswith(".jpg"):
                offsets.append(member.offset_data)
                sizes.append(member.size)
                labels.append(classes[member.name.rsplit(".", 1)[0]])
    return offsets, sizes, labels


def age(path: Path, seconds: float = 60) -> None:
    """Date ``path`` back, as a shard written before the run."""
    when = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(when, when))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A cache folder of the test's own, never the user's."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("DALAUG_CACHE", str(folder))
    return folder


@pytest.mark.parametrize(
    "tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["ustar", "gnu", "pax"]
)
def test_index_equals_what_tarfile_finds(tmp_path, tar_format):
    members = samples(5) + samples(4, first=5, folder=LONG_FOLDER)
    if tar_format == tarfile.PAX_FORMAT:
        members += [
            (f"{LONG_FOLDER}/é-{'k' * 120}.jpg", b"\xff\xd8pax\xff\xd9"),
            (f"{LONG_FOLDER}/é-{'k' * 120}.cls", b"3"),
        ]
    if tar_format == tarfile.USTAR_FORMAT:  # ustar splits a long path into prefix and name
        members += [
            (f"{LONG_FOLDER}/{'p' * 20}.jpg", b"\xff\xd8ustar\xff\xd9"),
            (f"{LONG_FOLDER}/{'p' * 20}.cls", b"3"),
        ]
    shard = write_shard(tmp_path / "shard.tar", members, tar_format)
    index = build_index(shard)
    assert [list(column) for column in index] == list(tarfile_truth(shard))
    assert len(index.labels) == len(members) // 2
    table = resolve_source(shard)
    # the bytes the table points at are the member's bytes
    with tarfile.open(shard) as tar:
        image_members = [m for m in tar.getmembers() if m.name.endswith(".jpg")]
        for i, member in enumerate(image_members):
            assert table.read(i).tobytes() == tar.extractfile(member).read()


def test_a_pax_path_overrides_the_ustar_name(tmp_path):
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("short.jpg")
        info.size = 10
        info.pax_headers = {"path": f"{LONG_FOLDER}/x.jpg"}
        tar.addfile(info, io.BytesIO(b"\xff\xd8" + b"1" * 8))
        label = tarfile.TarInfo(f"{LONG_FOLDER}/x.cls")
        label.size = 1
        tar.addfile(label, io.BytesIO(b"4"))
    assert (
        [list(column) for column in build_index(shard)] == list(tarfile_truth(shard)) == [[1536], [10], [4]]
    )


def test_samples_follow_the_webdataset_key_convention(tmp_path):
    shard = write_shard(
        tmp_path / "shard.tar",
        [
            ("a/x.JPEG", b"1"),
            ("a/x.cls", b" 2\n"),
            ("a/x.seg.png", b"mask"),
            ("b/x.png", b"2"),
            ("b/x.cls", b"5"),
        ],
    )
    index = build_index(shard)
    # a/x.seg.png has the extension "seg.png": it belongs to sample a/x and is not its image
    assert list(index.labels) == [2, 5] and list(index.sizes) == [1, 1]


def test_second_open_loads_the_stored_index(tmp_path, monkeypatch):
    shards = [write_shard(tmp_path / f"s{i}.tar", samples(6, first=6 * i)) for i in range(3)]
    first = resolve_source(tmp_path)
    assert all(index_file(s).is_file() for s in shards)

    def no_build(shard):
        raise AssertionError(f"{shard} was indexed again")

    monkeypatch.setattr(webdataset, "build_index", no_build)
    second = resolve_source(tmp_path)
    assert second.paths == first.paths and len(second) == 18
    for column in ("offsets", "sizes", "labels"):
        assert np.array_equal(getattr(second, column), getattr(first, column))
    assert second.classes == first.classes == tuple(str(c) for c in range(7))


def test_a_rewritten_shard_is_indexed_again(tmp_path):
    shard = write_shard(tmp_path / "s.tar", samples(4))
    before = index_shards([shard])[0]
    stored = index_file(shard).stat().st_mtime_ns

    # rewritten in place with different samples of the same total size, the mtime put back as a
    # copying tool would: only the ctime (which every write moves) tells the versions apart
    old = shard.stat()
    pairs = samples(4)
    relabelled = [(name, b"6\n" if name.endswith(".cls") else data) for name, data in pairs]
    reordered = [member for i in reversed(range(0, 8, 2)) for member in relabelled[i : i + 2]]
    other = write_shard(tmp_path / "other.tar", reordered)
    assert other.stat().st_size == old.st_size
    _wait_for_the_file_clock(shard, old.st_ctime_ns)
    with open(shard, "r+b") as file:
        file.write(other.read_bytes())
    os.utime(shard, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert shard.stat().st_mtime_ns == old.st_mtime_ns and shard.stat().st_ino == old.st_ino

    after = index_shards([shard])[0]
    assert [list(c) for c in after] == list(tarfile_truth(shard))
    assert index_file(shard).stat().st_mtime_ns != stored
    assert list(after.labels) == [6] * 4 and list(after.sizes) == list(before.sizes)[::-1]

    # replaced by a new file of another size
    write_shard(tmp_path / "s.tar", samples(2, first=10))
    assert [list(c) for c in index_shards([shard])[0]] == list(tarfile_truth(shard))


def _wait_for_the_file_clock(path: Path, ctime_ns: int) -> None:
    """Until a write now would give ``path`` another ctime (file timestamps can be coarse)."""
    probe = path.with_name("clock-probe")
    for _ in range(1000):
        probe.write_bytes(b"")
        if probe.stat().st_ctime_ns != ctime_ns:
            probe.unlink()
            return
        time.sleep(0.001)
    raise RuntimeError("the file system clock did not move in a second")


def test_a_read_only_shard_folder_uses_the_cache(tmp_path, cache):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "shards"
    folder.mkdir()
    shard = write_shard(folder / "s.tar", samples(3))
    folder.chmod(0o555)
    try:
        first = index_shards([shard])[0]
        assert not index_file(shard).exists()
        assert cached_index_file(shard).is_file() and cached_index_file(shard).is_relative_to(cache)
        assert [list(c) for c in first] == list(tarfile_truth(shard))
    finally:
        folder.chmod(0o755)


def test_an_unwritable_index_spot_falls_back_to_the_cache(tmp_path, cache, monkeypatch):
    # The fallback of the test above where tests run as root, who may write into any folder: a
    # folder occupies the index's name next to the shard, so it cannot be written there.
    shard = write_shard(tmp_path / "s.tar", samples(3))
    index_file(shard).mkdir()
    index_shards([shard])
    assert cached_index_file(shard).is_file() and cached_index_file(shard).is_relative_to(cache)
    monkeypatch.setattr(webdataset, "build_index", lambda s: pytest.fail("indexed again"))
    assert [list(c) for c in index_shards([shard])[0]] == list(tarfile_truth(shard))


def _index_in_a_rank(shards, barrier, results):
    barrier.wait()
    results.put([[list(c) for c in index] for index in index_shards(shards)])


def test_ranks_indexing_together_never_see_a_corrupt_index(tmp_path):
    shards = [write_shard(tmp_path / f"s{i}.tar", samples(300, first=300 * i)) for i in range(4)]
    truth = [list(tarfile_truth(s)) for s in shards]
    context = multiprocessing.get_context("fork")
    for _ in range(3):
        for shard in shards:
            index_file(shard).unlink(missing_ok=True)
        ranks = 4
        barrier, results = context.Barrier(ranks), context.Queue()
        processes = [
            context.Process(target=_index_in_a_rank, args=(shards, barrier, results)) for _ in range(ranks)
        ]
        for process in processes:
            process.start()
        answers = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=60)
            assert process.exitcode == 0
        assert all(answer == truth for answer in answers)
        # what they left behind loads and is right, with no temporary files about
        assert [[list(c) for c in index] for index in index_shards(shards)] == truth
        assert sorted(p.name for p in tmp_path.iterdir() if p.is_file() and p.suffix != ".tar") == sorted(
            index_file(s).name for s in shards
        )


def test_a_corrupt_index_file_is_rebuilt(tmp_path):
    shard = write_shard(tmp_path / "s.tar", samples(3))
    index_shards([shard])
    index_file(shard).write_bytes(index_file(shard).read_bytes()[:-8])  # as if cut short
    assert [list(c) for c in index_shards([shard])[0]] == list(tarfile_truth(shard))
    np.save(index_file(shard), np.arange(5))
    assert [list(c) for c in index_shards([shard])[0]] == list(tarfile_truth(shard))


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ([("a.txt", b"x"), ("a.cls", b"1")], r"/s\.tar' holds no image members"),
        ([("a.jpg", b"x")], r"/s\.tar' member 'a\.jpg' has no 'a\.cls' label"),
        ([("a.jpg", b"x"), ("a.cls", b"cat")], r"/s\.tar' member 'a\.cls' holds b'cat', not a class index"),
        ([("a.jpg", b"x"), ("a.cls", "٣".encode())], r"member 'a\.cls' holds .*not a class index"),
        ([("a.jpg", b"x"), ("a.cls", b"-1")], r"member 'a\.cls' holds b'-1', not a class index"),
        ([("a.jpg", b"x"), ("a.cls", b"1"), ("a.png", b"y")], r"second image for sample 'a': 'a\.png'"),
    ],
)
def test_bad_samples_are_named(tmp_path, members, match):
    shard = write_shard(tmp_path / "s.tar", members)
    with pytest.raises(ValueError, match=match):
        resolve_source(shard)
    assert not index_file(shard).exists()


def test_bad_shards_are_named(tmp_path):
    not_tar = tmp_path / "notes.tar"
    not_tar.write_bytes(b"these are notes, not a tar file\n" * 40)
    with pytest.raises(
        ValueError, match=r"'.*notes\.tar' has no ustar/GNU/pax tar header at byte 0, not a tar"
    ):
        resolve_source(not_tar)
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"'.*empty\.tar' is empty"):
        resolve_source(empty)
    whole = write_shard(tmp_path / "whole.tar", samples(3)).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[: 512 + 50])  # inside the first image
    with pytest.raises(ValueError, match=r"'.*cut\.tar' is truncated: member '000000\.jpg' needs"):
        resolve_source(cut)
    cut.write_bytes(whole[: 4 * 512 + 100])  # inside the second image's header
    with pytest.raises(ValueError, match=r"'.*cut\.tar' is truncated \(ends inside a tar header\)"):
        resolve_source(cut)
    with pytest.raises(FileNotFoundError, match=r"shard '.*missing\.tar' does not exist"):
        index_shards([tmp_path / "missing.tar"])


def test_shards_beside_a_hidden_folder_are_still_shards(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    write_shard(folder / "a.tar", samples(3))
    (folder / ".ipynb_checkpoints").mkdir()
    assert len(resolve_source(folder)) == 3


def test_members_named_like_images_that_make_no_sample_are_told(tmp_path):
    good = samples(2)
    dotted = [("a.000007.jpg", b"\xff\xd8" + b"x" * 50 + b"\xff\xd9"), ("a.000007.cls", b"1")]
    told = r"1 member\(s\) named like images are no samples, e.g. 'a.000007.jpg'"
    with pytest.warns(UserWarning, match=told):
        index = build_index(write_shard(tmp_path / "mixed.tar", good + dotted))
    assert len(index.offsets) == 2
    with pytest.raises(ValueError, match=r"source: shard .* 'a.000007.jpg': a sample's key ends at the"):
        build_index(write_shard(tmp_path / "dotted.tar", dotted))


def test_a_new_owner_or_mode_is_no_rewrite_but_new_bytes_are(tmp_path):
    shard = write_shard(tmp_path / "a.tar", samples(2))
    version = webdataset.shard_version(shard)
    os.chmod(shard, 0o600)  # moves ctime only
    assert not webdataset.rewritten(shard, version)
    write_shard(tmp_path / "b.tar", samples(3))
    os.replace(tmp_path / "b.tar", shard)
    assert webdataset.rewritten(shard, version)
    shard.unlink()
    assert webdataset.rewritten(shard, version)

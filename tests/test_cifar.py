"""convert_cifar on small files in torchvision's download format, written by the tests."""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dalaug.__main__ import main
from dalaug.cifar import convert_cifar
from dalaug.reading.sources import resolve_source

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_NAMES = ["apple", "aquarium_fish", "baby", "bear", "beaver", "bed"]  # the first fine labels


def batch(rng: np.random.Generator, n: int, num_classes: int, labels_key: bytes) -> dict:
    """A batch as torchvision downloads it: uint8 rows of 3072 (R plane, G plane, B plane)."""
    return {
        b"batch_label": b"a test batch",
        labels_key: rng.integers(0, num_classes, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def dump(path: Path, content: dict, protocol: int) -> None:
    path.write_bytes(pickle.dumps(content, protocol=protocol))


def write_cifar10(root: Path, protocol: int = 2, per_batch: int = 3, test: int = 10) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(10)
    for i in range(1, 6):
        content = batch(rng, per_batch, 10, b"labels")
        # Every class in each split, as in CIFAR-10 (a class folder without images is refused).
        content[b"labels"] = [(per_batch * (i - 1) + k) % 10 for k in range(per_batch)]
        dump(folder / f"data_batch_{i}", content, protocol)
    test_batch = batch(rng, test, 10, b"labels") | {b"labels": (rng.permutation(test) % 10).tolist()}
    dump(folder / "test_batch", test_batch, protocol)
    meta = {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": per_batch}
    dump(folder / "batches.meta", meta, protocol)
    return folder


def write_cifar100(root: Path, protocol: int = 2, train: int = 12, test: int = 5) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(100)
    for name, n in (("train", train), ("test", test)):
        content = batch(rng, n, len(CIFAR100_NAMES), b"fine_labels")
        content[b"coarse_labels"] = [0] * n
        dump(folder / name, content, protocol)
    meta = {b"fine_label_names": [n.encode() for n in CIFAR100_NAMES], b"coarse_label_names": [b"fruit"]}
    dump(folder / "meta", meta, protocol)
    return folder


def expected(folder: Path, files: list[str], labels_key: bytes) -> list[tuple[int, bytes]]:
    """(label, HWC pixels) of every image in the batch files, sorted: order-free comparison."""
    pairs = []
    for name in files:
        content = pickle.loads((folder / name).read_bytes())
        images = content[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        pairs += [(label, image.tobytes()) for label, image in zip(content[labels_key], images, strict=True)]
    return sorted(pairs)


def converted(split: Path) -> tuple[list[tuple[int, bytes]], tuple[str, ...]]:
    """What dalaug's source sees in a converted split: (label, decoded pixels), sorted, and classes."""
    samples = resolve_source(split)
    pairs = []
    for i in range(len(samples)):
        image = Image.open(io.BytesIO(samples.read(i).tobytes()))
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (32, 32)
        pairs.append((int(samples.labels[i]), np.asarray(image).tobytes()))
    return sorted(pairs), samples.classes


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_becomes_image_folders_with_cifars_pixels_labels_and_class_names(tmp_path, protocol):
    folder = write_cifar10(tmp_path / "download", protocol)
    dest = convert_cifar(folder, tmp_path / "cifar10")
    train, classes = converted(dest / "train")
    assert train == expected(folder, [f"data_batch_{i}" for i in range(1, 6)], b"labels")
    assert classes == tuple(CIFAR10_NAMES)  # so label i is CIFAR's class i
    val, _ = converted(dest / "val")
    assert val == expected(folder, ["test_batch"], b"labels")
    assert (dest / "classes.txt").read_text().split() == CIFAR10_NAMES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar10", "download"]  # no temporary left


def test_cifar100_becomes_webdataset_shards_with_cifars_pixels_and_fine_labels(tmp_path):
    folder = write_cifar100(tmp_path / "download", protocol=5)
    dest = convert_cifar(folder, tmp_path / "cifar100", fmt="webdataset")
    assert all(p.suffix == ".tar" for p in (dest / "train").iterdir())
    train, _ = converted(dest / "train")
    assert train == expected(folder, ["train"], b"fine_labels")
    val, _ = converted(dest / "val")
    assert val == expected(folder, ["test"], b"fine_labels")
    assert (dest / "classes.txt").read_text().split() == CIFAR100_NAMES


def test_torchvisions_root_folder_is_accepted_as_the_source(tmp_path):
    write_cifar100(tmp_path / "data")
    dest = convert_cifar(tmp_path / "data", tmp_path / "out")
    assert sorted(p.name for p in (dest / "train").iterdir()) == CIFAR100_NAMES


def test_an_existing_destination_is_never_overwritten(tmp_path):
    folder = write_cifar10(tmp_path / "download")
    dest = tmp_path / "cifar10"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="cifar10"):
        convert_cifar(folder, dest)
    assert [p.name for p in dest.iterdir()] == ["mine.txt"]


def test_a_missing_batch_file_is_named_and_leaves_nothing_behind(tmp_path):
    folder = write_cifar10(tmp_path / "download")
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        convert_cifar(folder, tmp_path / "cifar10")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["download"]


def _with_labels(labels) -> Callable[[Path], None]:
    """Damage: rewrite a batch file with ``labels`` for as many black images."""
    return lambda path: dump(path, {b"data": np.zeros((len(labels), 3072), np.uint8), b"labels": labels}, 2)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda path: path.write_bytes(path.read_bytes()[:100]), "not a readable CIFAR pickle"),
        (lambda path: path.write_bytes(b"not a pickle at all"), "not a readable CIFAR pickle"),
        (lambda path: dump(path, {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, 2), "3072"),
        (lambda path: dump(path, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, 2), "labels"),
        (lambda path: dump(path, {b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}, 2), "outside"),
        (_with_labels([1.7, 2.0]), "integer class indices"),  # not truncated into labels 1 and 2
        (_with_labels(np.ones(1)), "integer class indices"),
        (_with_labels([True]), "integer class indices"),
        (lambda path: path.write_bytes(pickle.dumps(os.system)), "refusing to load"),  # a code-running pickle
    ],
    ids=[
        "truncated", "garbage", "wrong-shape", "label-count", "label-range",
        "float-labels", "float-array-labels", "bool-labels", "foreign-global",
    ],  # fmt: skip
)
def test_a_corrupt_batch_file_is_named_and_leaves_nothing_behind(tmp_path, damage, match):
    folder = write_cifar10(tmp_path / "download")
    damage(folder / "data_batch_4")
    with pytest.raises(ValueError, match=match) as error:
        convert_cifar(folder, tmp_path / "cifar10", fmt="webdataset")
    assert "data_batch_4" in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["download"]


def test_a_folder_without_cifar_and_an_unknown_format_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        convert_cifar(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="fmt"):
        convert_cifar(write_cifar10(tmp_path), tmp_path / "out", fmt="lmdb")


def test_the_command_converts_and_reports_errors_with_exit_codes(tmp_path, capsys):
    folder = write_cifar10(tmp_path / "download")
    assert main(["convert-cifar", str(folder), str(tmp_path / "c10"), "--format", "webdataset"]) == 0
    assert len(resolve_source(tmp_path / "c10" / "train")) == 15
    assert main(["convert-cifar", str(folder), str(tmp_path / "c10")]) == 2  # exists
    assert "c10" in capsys.readouterr().err
    (folder / "test_batch").write_bytes(b"\x80\x04junk")
    assert main(["convert-cifar", str(folder), str(tmp_path / "other")]) == 1  # a corrupt file
    assert "test_batch" in capsys.readouterr().err

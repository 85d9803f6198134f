"""Bad files during training, bad settings, and interrupted runs (state_dict, SIGKILL, atomic saves)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from data_faults import UNDECODABLE, write_fault

import dalaug
from dalaug import checkpoint
from dalaug.feed import EpochFeed, Sharding
from dalaug.loader import DecodeError
from dalaug.reading.sources import resolve_source

CROP = 32
HERE = Path(__file__).parent


def run_epoch(loader) -> list[torch.Tensor]:
    return [loader.sample_ids.clone() for _ in loader]


@pytest.fixture
def data(tmp_path, photo_folder) -> Path:
    """A private copy of the 60-photo folder (3 classes of 20), to put bad files in."""
    root = tmp_path / "data"
    shutil.copytree(photo_folder, root)
    return root


# Where a bad file lands in the identity order of an eval loader with batch 4: "first" sorts right
# after the first file of class_000 (id 1, batch 0); "middle" right after the first of class_001
# (id 21, batch 5 of 16).
PLACES = {"first": "class_000/000000_bad.jpg", "middle": "class_001/000001_bad.jpg"}


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("kind", [*UNDECODABLE, "vanished"])
def test_a_bad_file_is_left_out_and_every_other_sample_delivered_once(data, kind, place, caplog, tmp_path):
    bad = data / PLACES[place]
    write_fault("png_named_jpg" if kind == "vanished" else kind, bad)
    loader = dalaug.Loader(data, 4, train=False, crop=CROP, device="cpu", max_bad_fraction=0.05)
    if kind == "vanished":
        bad.unlink()  # gone between the scan and the read, as a file without permission would be
    bad_id = 1 if place == "first" else 21
    good = [i for i in range(61) if i != bad_id]
    if kind == "broken_symlink":
        good = list(range(60))  # found by the scan: never a sample id
    with caplog.at_level(logging.WARNING, logger="dalaug"):
        for _epoch in range(2):
            ids = torch.cat(run_epoch(loader)).tolist()
            assert sorted(ids) == good  # every other sample exactly once, each epoch
    assert list(loader.bad_samples) == [str(bad)]
    # Named once, when first met (the reader checks bytes before DALI sees them); never again.
    assert sum(str(bad) in record.getMessage() for record in caplog.records) == 1
    assert not loader.recoveries  # caught before DALI: no pipeline had to be rebuilt
    report = json.loads(loader.write_report(tmp_path / "bad.json").read_text())
    assert [entry["sample"] for entry in report["bad_samples"]] == [str(bad)]


def _seed_putting(sample_id: int, samples, batch: range) -> int:
    """A seed whose epoch-0 order puts ``sample_id`` in a batch of ``batch`` (batch size 8)."""
    for seed in range(1000):
        feed = EpochFeed(samples, 8, shuffle=True, drop_last=True, seed=seed)
        if int(np.flatnonzero(feed.shard(0) == sample_id)[0]) // 8 in batch:
            return seed
    raise AssertionError("no such seed")


def test_training_goes_on_at_the_failed_batch_with_the_same_batch_count(data):
    write_fault("truncated_jpeg", data / "class_001" / "000001_bad.jpg")
    samples = resolve_source(data)
    bad_id = samples.paths.index(str(data / "class_001" / "000001_bad.jpg"))
    seed = _seed_putting(bad_id, samples, range(3, 5))
    loader = dalaug.Loader(samples, 8, train=True, crop=CROP, device="cpu", seed=seed, max_bad_fraction=0.05)
    original = loader.feed.shard(0).copy()
    batches = run_epoch(loader)
    assert len(batches) == len(loader) == 61 // 8 and all(len(b) == 8 for b in batches)
    ids = torch.cat(batches).numpy()
    position = int(np.flatnonzero(original == bad_id)[0])
    # Batches before the bad one are those of the original order; after it, the order shifts by
    # one sample, so the delivered ids are the original order without the bad file.
    assert np.array_equal(ids[: position // 8 * 8], original[: position // 8 * 8])
    assert np.array_equal(ids, original[original != bad_id][: len(ids)])
    assert len(set(ids.tolist())) == len(ids)
    assert len(run_epoch(loader)) == len(loader)  # the next epoch: no failure, same length


def test_bad_files_in_several_batches_and_a_policy(data):
    for name in ("class_000/000000_bad.jpg", "class_001/000001_bad.jpg", "class_002/000002_bad.jpg"):
        write_fault("random_bytes", data / name)
    loader = dalaug.Loader(
        data, 8, train=True, crop=CROP, device="cpu", policy="autoaugment", max_bad_fraction=0.05
    )
    ids = torch.cat(run_epoch(loader)).tolist()
    bad = {loader.samples.paths.index(str(data / n)) for n in ("class_000/000000_bad.jpg",)}
    assert len(loader.bad_samples) == 3 and not bad & set(ids)
    assert len(ids) == len(loader) * 8 and len(set(ids)) == len(ids)


def test_too_many_bad_files_is_an_error_naming_them(data):
    write_fault("empty_file", data / "class_000" / "000000_bad.jpg")
    write_fault("gif_named_jpg", data / "class_001" / "000001_bad.jpg")
    # 62 samples * 0.02 = 1 bad file allowed: the second is one too many.
    loader = dalaug.Loader(data, 4, train=False, crop=CROP, device="cpu", max_bad_fraction=0.02)
    with pytest.raises(DecodeError, match=r"max_bad_fraction=0\.02.*\(1\)") as error:
        run_epoch(loader)
    assert len(error.value.failures) == 2 and "000001_bad.jpg" in str(error.value)


def test_max_bad_fraction_zero_is_strict(data):
    write_fault("truncated_jpeg", data / "class_001" / "000001_bad.jpg")
    loader = dalaug.Loader(data, 4, train=False, crop=CROP, device="cpu", max_bad_fraction=0)
    with pytest.raises(DecodeError, match="000001_bad.jpg: truncated JPEG"):
        run_epoch(loader)


def test_a_broken_link_over_the_limit_fails_when_the_loader_is_built(data):
    write_fault("broken_symlink", data / "class_000" / "link.jpg")
    with pytest.raises(DecodeError, match="link.jpg: broken symbolic link"):
        dalaug.Loader(data, 4, train=True, crop=CROP, device="cpu", max_bad_fraction=0)


def test_a_passing_read_error_is_read_again_and_a_lasting_one_is_named(data):
    # io_workers=0: the reads run in this process, where the test can make them fail.
    loader = dalaug.Loader(data, 4, train=False, crop=CROP, device="cpu", io_workers=0)
    read, calls = loader.feed.samples.read, []

    def flaky(index):  # sample 9 arrives as garbage once, as from a hiccup of a network file system
        calls.append(index)
        return np.zeros(10, np.uint8) if index == 9 and calls.count(9) == 1 else read(index)

    loader.reader.read_bytes = flaky
    assert sorted(torch.cat(run_epoch(loader)).tolist()) == list(range(60))
    assert calls.count(9) >= 2 and not loader.bad_samples

    lasting = dalaug.Loader(data, 4, train=False, crop=CROP, device="cpu", io_workers=0)
    lasting.reader.read_bytes = lambda index: np.zeros(10, np.uint8) if index == 9 else read(index)
    with pytest.raises(DecodeError, match=f"{lasting.samples.name(9)}: not an image"):
        run_epoch(lasting)


def test_a_dali_failure_on_bytes_that_then_decode_is_retried_once_and_a_lasting_one_raises(data, caplog):
    loader = dalaug.Loader(data, 4, train=False, crop=CROP, device="cpu", io_workers=0)
    read, calls = loader.feed.samples.read, []
    # A sound JPEG relabelled as lossless (SOF3): past the reader's checks, DALI cannot decode it.
    hollow = np.frombuffer(read(9).tobytes().replace(b"\xff\xc0", b"\xff\xc3", 1), np.uint8)

    def flaky(index):
        calls.append(index)
        return hollow if index == 9 and calls.count(9) == 1 else read(index)

    loader.reader.read_bytes = flaky
    with caplog.at_level(logging.WARNING, logger="dalaug"):
        assert sorted(torch.cat(run_epoch(loader)).tolist()) == list(range(60))
    assert "retrying once" in caplog.text and not loader.bad_samples

    lasting = dalaug.Loader(data, 4, train=False, crop=CROP, device="cpu", io_workers=0)
    lasting.reader.read_bytes = lambda index: hollow if index == 9 else read(index)
    with pytest.raises(RuntimeError, match="Critical error") as error:
        run_epoch(lasting)
    assert not isinstance(error.value, DecodeError)  # the file on disk decodes: not a bad file


@pytest.mark.parametrize("world_size", [2, 3])
def test_excluding_keeps_every_training_rank_at_the_same_batch_count(world_size):
    samples = resolve_source([(__file__, i % 5) for i in range(50)])
    for train in (True, False):
        feeds = [
            EpochFeed(samples, 4, shuffle=train, drop_last=train, seed=1, sharding=Sharding(r, world_size))
            for r in range(world_size)
        ]
        before = [feed.num_batches() for feed in feeds]
        for feed in feeds:
            feed.exclude([7, 30])  # each rank learns of bad files on its own; here all of them
        if train:
            assert [feed.num_batches() for feed in feeds] == before
        for epoch in range(3):
            shards = [feed.shard(epoch) for feed in feeds]
            assert [len(shard) for shard in shards] == [feed.num_samples() for feed in feeds]
            everything = np.concatenate(shards)
            assert set(everything.tolist()) == set(range(50)) - {7, 30}
            if train:
                # duplicates: the padding to a multiple of world_size, plus one per excluded sample
                assert len(everything) - 48 == (-50) % world_size + 2
            else:
                assert len(everything) == 48  # evaluation: every good sample exactly once


# -- bad settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train": "yes"}, "train"),
        ({"flip": 1}, "flip"),
        ({"roi_decode": None}, "roi_decode"),
        ({"max_bad_fraction": -0.1}, "max_bad_fraction"),
        ({"max_bad_fraction": 1.0}, "max_bad_fraction"),
        ({"max_bad_fraction": "1%"}, "max_bad_fraction"),
        ({"max_bad_fraction": True}, "max_bad_fraction"),
        ({"resize": 16}, "resize"),
        ({"ratio": (2.0, 1.0)}, "ratio"),
        ({"scale": (0.5, 1.5)}, "scale"),
        ({"seed": -1}, "seed"),
        ({"prefetch": 0}, "prefetch"),
        ({"num_threads": 0}, "num_threads"),
        ({"batch_size": True}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
    ],
)
def test_bad_loader_arguments_are_named(photo_folder, kwargs, match):
    arguments = {"batch_size": 4, "train": True, "crop": CROP, "device": "cpu", **kwargs}
    with pytest.raises(ValueError, match=match):
        dalaug.Loader(photo_folder, **arguments)


def test_an_evaluation_epoch_whose_last_batch_goes_bad_ends_one_batch_early(data):
    # 60 photos, batch 8: the last batch holds 4 samples; spoil them all after the scan.
    loader = dalaug.Loader(data, 8, train=False, crop=CROP, device="cpu", max_bad_fraction=0.1)
    for i in range(56, 60):
        Path(loader.samples.paths[i]).write_bytes(b"junk")
    for _ in range(2):  # the next epoch goes on, one batch shorter
        ids = torch.cat(run_epoch(loader)).tolist()
        assert ids == list(range(56)) and len(loader) == 7
    assert len(loader.bad_samples) == 4


def test_a_run_resumed_at_an_evaluation_epochs_last_batch_that_went_bad_goes_on(data):
    loader = dalaug.Loader(data, 8, train=False, crop=CROP, device="cpu", max_bad_fraction=0.1)
    batches = iter(loader)
    for _ in range(7):
        next(batches)
    state = loader.state_dict()  # at the last batch, which then goes bad
    for i in range(56, 60):
        Path(loader.samples.paths[i]).write_bytes(b"junk")
    resumed = dalaug.Loader(data, 8, train=False, crop=CROP, device="cpu", max_bad_fraction=0.1)
    resumed.load_state_dict(state)
    assert run_epoch(resumed) == []  # the epoch had nothing left: it ends (it used to spin forever)
    assert torch.cat(run_epoch(resumed)).tolist() == list(range(56)) and len(resumed.bad_samples) == 4


def test_an_evaluation_rank_whose_every_sample_goes_bad_is_told_so(data):
    loader = dalaug.Loader(data, 8, train=False, crop=CROP, device="cpu", max_bad_fraction=0.99)
    for path in loader.samples.paths:
        Path(path).write_bytes(b"junk")
    with pytest.raises(ValueError, match="every sample of this rank's share .* turned out bad, e.g."):
        run_epoch(loader)


def test_bad_feed_sharding_and_state_arguments_are_named(photo_folder, tmp_path):
    samples = resolve_source(photo_folder)
    with pytest.raises(ValueError, match="rank"):
        Sharding(rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        Sharding(rank=0, world_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        EpochFeed(samples, 0, shuffle=True, drop_last=True, seed=0)
    with pytest.raises(ValueError, match="ids"):
        EpochFeed(samples, 4, shuffle=True, drop_last=True, seed=0).exclude([60])
    loader = dalaug.Loader(photo_folder, 4, train=True, crop=CROP, device="cpu")
    with pytest.raises(ValueError, match="epoch"):
        loader.set_epoch(-1)
    with pytest.raises(ValueError, match="state"):
        loader.load_state_dict({"epoch": 3})
    other = dalaug.Loader(photo_folder, 6, train=True, crop=CROP, device="cpu")
    with pytest.raises(ValueError, match="another configuration"):
        other.load_state_dict(loader.state_dict())
    smaller = dalaug.Loader(resolve_source(photo_folder).without([0]), 4, train=True, crop=CROP, device="cpu")
    with pytest.raises(ValueError, match="num_samples"):
        smaller.load_state_dict(loader.state_dict())
    with pytest.raises(FileNotFoundError, match="path"):
        checkpoint.save({}, tmp_path / "missing" / "ckpt.pt")
    with pytest.raises(FileNotFoundError, match="path"):
        checkpoint.load(tmp_path / "missing.pt")


# -- interrupted runs --------------------------------------------------------------------------


def _batches(loader, until_epoch: int) -> list[tuple[int, list[int], torch.Tensor]]:
    out = []
    while loader.epoch < until_epoch:
        epoch = loader.epoch
        out += [(epoch, loader.sample_ids.tolist(), images.clone()) for images, _ in loader]
    return out


@pytest.mark.parametrize("save_at", [(0, 0), (1, 3), (1, "end"), (1, "break")])
def test_a_restored_loader_reproduces_the_rest_bit_for_bit(data, tmp_path, save_at):
    # A bad file on the way: the excluded sample and the feed's offsets are part of the state.
    write_fault("truncated_jpeg", data / "class_001" / "000001_bad.jpg")

    def make():
        return dalaug.Loader(
            data, 8, train=True, crop=CROP, device="cpu", seed=4, policy="autoaugment", max_bad_fraction=0.05
        )

    loader, reference, state = make(), [], None
    while loader.epoch < 3:
        epoch = loader.epoch
        for i, (images, _) in enumerate(loader):
            reference.append((epoch, loader.sample_ids.tolist(), images.clone()))
            if (epoch, i) == save_at:
                state = checkpoint.load(checkpoint.save(loader.state_dict(), tmp_path / "ckpt.pt"))
                done = len(reference)
            if (epoch, "break") == save_at and i == 2:
                break  # a cap on steps per epoch: the rest of the epoch is skipped, batches in flight
        if save_at in ((epoch, "end"), (epoch, "break")):
            state, done = loader.state_dict(), len(reference)
    restored = make()
    restored.load_state_dict(state)
    restored.set_epoch(state["epoch"])  # what a training loop does first: keeps the position
    rest = _batches(restored, 3)
    assert len(rest) == len(reference) - done
    for (e1, ids1, x1), (e2, ids2, x2) in zip(reference[done:], rest, strict=True):
        assert e1 == e2 and ids1 == ids2 and torch.equal(x1, x2)
    assert restored.bad_samples == loader.bad_samples


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    checkpoint.save({"step": 1}, path)

    def crash(obj, file):  # dies half-way through writing, as a killed process would
        file.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"step": 2}, path)
    assert checkpoint.load(path) == {"step": 1}
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind


def test_a_loader_killed_mid_epoch_resumes_with_the_same_batches(data, tmp_path):
    ckpt, log = tmp_path / "loader.pt", tmp_path / "batches.jsonl"
    worker = [sys.executable, str(HERE / "kill_worker.py"), str(data), str(ckpt)]
    process = subprocess.Popen([*worker, str(log)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # 7 batches an epoch: kill in the middle of epoch 1
    while not log.exists() or len(log.read_text().splitlines()) < 10:
        assert process.poll() is None and time.monotonic() < deadline, "worker ended early"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = [json.loads(line) for line in log.read_text().splitlines()]
    done = checkpoint.load(ckpt)["batches"]
    # saved after each logged batch (the kill may fall between the two); killed mid-epoch 1
    assert 10 <= len(killed) < 14 and len(killed) - 1 <= done <= len(killed)

    sys.path.insert(0, str(HERE))
    from kill_worker import EPOCHS, main, make_loader, record

    # Resume here, in a fresh loader, from the file the killed process left (saves a subprocess).
    resumed_log = tmp_path / "resumed.jsonl"
    main(str(data), str(ckpt), str(resumed_log), resume=True)
    resumed = [json.loads(line) for line in resumed_log.read_text().splitlines()]

    loader, reference = make_loader(data), []
    for epoch in range(EPOCHS):
        loader.set_epoch(epoch)
        reference += [record(loader, images) for images, _ in loader]
    assert killed[:done] == reference[:done]
    assert resumed == reference[done:]


def test_close_frees_the_pipeline_and_iterating_again_builds_one(photo_folder):
    with dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu") as loader:
        first = run_epoch(loader)
    assert loader._pipeline is None
    assert len(run_epoch(loader)) == len(first)


def test_a_dali_error_that_is_not_about_a_file_is_raised_at_once(data):
    # Out of device memory is not a bad file: no sample-by-sample decoding, no rebuild, no retry.
    loader = dalaug.Loader(data, 4, train=False, crop=CROP, device="cpu")
    next(iter(loader))
    error = RuntimeError("Critical error in pipeline:\nCUDA allocation failed: out of memory")
    with pytest.raises(RuntimeError) as raised:
        loader._recover(error)
    assert raised.value is error and not loader.recoveries and not loader.bad_samples

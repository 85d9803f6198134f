"""The processes that read and check files for the loaders (dalaug.workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import dalaug
from dalaug import workers
from dalaug.sources import resolve_source

CROP = 32


def epoch_batches(loader: dalaug.Loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images.clone(), labels.clone()) for images, labels in loader]


def test_worker_processes_give_the_batches_this_process_reads(photo_folder):
    here = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", seed=3, io_workers=0)
    apart = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", seed=3, io_workers=2)
    for (a, y), (b, z) in zip(epoch_batches(here), epoch_batches(apart), strict=True):
        assert torch.equal(a, b) and torch.equal(y, z)
    pids = workers.pool(1).pids()
    assert pids and os.getpid() not in pids


def test_a_chunk_is_read_into_shared_memory_and_bad_samples_are_named(photo_folder, tmp_path):
    samples = resolve_source(photo_folder)
    truncated, text = tmp_path / "cut.jpg", tmp_path / "notes.jpg"
    truncated.write_bytes(samples.read(1)[:500].tobytes())
    text.write_bytes(b"not a picture at all")
    items = [(samples.paths[0], -1, -1), (str(truncated), -1, -1), (str(tmp_path / "gone.jpg"), -1, -1),
             (str(text), -1, -1), (samples.paths[2], -1, -1)]  # fmt: skip
    results = workers.pool(1).submit(items).result(timeout=60)
    assert np.array_equal(results[0][0], samples.read(0)) and results[0][1] is None
    assert np.array_equal(results[4][0], samples.read(2)) and results[4][1] is None
    assert results[1][1].startswith("truncated JPEG") and results[1][0] is None
    assert results[2] == (None, "cannot read: No such file or directory")
    assert results[3] == (None, "not an image (starts with 'not a pi')")


def test_memory_is_reused_once_the_batches_are_gone(photo_folder):
    samples = resolve_source(photo_folder)
    items = [(samples.paths[i], -1, -1) for i in range(32)]
    pool = workers.ReadPool()
    try:
        pool.ensure(1)
        for _ in range(20):  # each result dropped before the next: one buffer serves them all
            results = pool.submit(items).result(timeout=60)
            assert all(reason is None for _, reason in results)
            del results
        assert pool.buffers() == [1]
        held = [pool.submit(items).result(timeout=60) for _ in range(3)]  # kept: three buffers
        assert pool.buffers() == [3] and len(held) == 3
    finally:
        pool.close()


def test_a_worker_that_dies_is_replaced_and_the_epochs_go_on(photo_folder):
    options = dict(train=True, crop=CROP, device="cpu")
    here = dalaug.Loader(photo_folder, 8, io_workers=0, **options)
    reference = [batch for _ in range(3) for batch in epoch_batches(here)]
    loader, pool = dalaug.Loader(photo_folder, 8, io_workers=1, **options), workers.pool(1)
    batches, killed = [], []
    for epoch in range(3):
        for step, (images, labels) in enumerate(loader):
            if epoch == 0 and step == 2:  # the reads ahead run into the next epochs: those need a worker
                killed = pool.pids()
                for pid in killed:
                    os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
            batches.append((images.clone(), labels.clone()))
    assert killed and pool.pids() and not set(killed) & set(pool.pids())
    for (a, y), (b, z) in zip(reference, batches, strict=True):
        assert torch.equal(a, b) and torch.equal(y, z)


def test_a_worker_imports_neither_torch_nor_dali():
    # It starts in a fraction of a second and holds a few MB, however many loaders a rank builds.
    code = "import sys, dalaug.workers; print(sorted({'torch', 'nvidia.dali'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_io_workers_must_be_a_count(photo_folder):
    for wrong in (-1, 1.5, True):
        with pytest.raises(ValueError, match="io_workers: expected an int >= 0"):
            dalaug.Loader(photo_folder, 8, train=True, io_workers=wrong)

"""Soak: 16 short epochs (50 with DALAUG_SOAK=1), swapping a policy loader and a clean one every
epoch (each built anew, the old one closed), with host memory, file descriptors and threads
measured after every epoch.

Rebuilding DALI pipelines leaks unless every reference is dropped (DALI issues #4653, #5256, #5609,
#5816); this is the test that would see it.
"""

from __future__ import annotations

import gc
import os
import time

import numpy as np
import pytest

import dalaug
from benchmarks.report import rss_mib
from dalaug.datasets import write_photo_folder

WARMUP = 6
# A leak of one decoded 32x32 batch per epoch is ~25 KiB; allocator noise is ~100 KiB per epoch.
MAX_SLOPE_MIB_PER_EPOCH = 0.25


def count(folder: str) -> int:
    return len(os.listdir(folder))


@pytest.mark.parametrize(
    "epochs",
    [
        16,
        # ~40 s on 2 idle cores (100 s on busy ones): opt-in, so `make test` stays short.
        pytest.param(50, marks=[
            pytest.mark.slow,
            pytest.mark.skipif(not os.environ.get("DALAUG_SOAK"), reason="set DALAUG_SOAK=1 to run"),
        ]),
    ],
)  # fmt: skip
def test_epochs_of_swaps_keep_memory_fds_and_threads_flat(tmp_path, epochs):
    data = write_photo_folder(tmp_path / "data", 16, num_classes=2, short_side=(40, 64))
    heavy = dalaug.Loader(data, 8, train=True, crop=32, device="cpu", policy="autoaugment", num_threads=2)
    loader, rss, fds, threads = heavy, [], [], []
    start = time.perf_counter()
    for epoch in range(epochs):
        if epoch:  # the swap: a new loader for the other phase, the old one closed
            swapped = loader.with_options(policy=None if epoch % 2 else "autoaugment")
            loader.close()
            loader = swapped
        loader.set_epoch(epoch)
        assert sum(len(images) for images, _ in loader) == 16
        gc.collect()
        rss.append(rss_mib())
        fds.append(count("/proc/self/fd"))
        threads.append(count("/proc/self/task"))
    loader.close()
    seconds = time.perf_counter() - start
    slope = np.polyfit(np.arange(WARMUP, epochs), rss[WARMUP:], 1)[0]
    print(
        f"\nsoak: {epochs} epochs in {seconds:.0f} s; RSS {rss[WARMUP]:.0f} -> {rss[-1]:.0f} MiB, "
        f"slope {slope * 1024:.1f} KiB/epoch; fds {fds[WARMUP]} -> {fds[-1]} (max {max(fds)}); "
        f"threads {threads[WARMUP]} -> {threads[-1]} (max {max(threads)})"
    )
    assert slope < MAX_SLOPE_MIB_PER_EPOCH, f"host memory grows {slope:.2f} MiB per epoch"
    # The reader's threads may hold a file open each while they read the next epoch ahead: a
    # leak grows without bound, this does not.
    reading = loader.config.io_workers
    assert max(fds[WARMUP:]) <= fds[WARMUP] + 2 + reading and fds[-1] <= fds[WARMUP] + 2 + reading, fds
    assert max(threads[WARMUP:]) <= threads[WARMUP] + 2, threads

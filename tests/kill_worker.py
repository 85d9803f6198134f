"""Iterate a loader, saving its state after every batch; run by test_reliability's SIGKILL test.

    python kill_worker.py DATA CHECKPOINT LOG [--resume]

Each delivered batch is appended to LOG as a JSON line (epoch, sample ids, SHA-1 of the pixels),
then the loader state goes to CHECKPOINT with :func:`dalaug.checkpoint.save`. With ``--resume``
the run starts from CHECKPOINT, as a training job restarted after a crash would.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import torch

import dalaug
from dalaug import checkpoint

EPOCHS = 2


def make_loader(data: str) -> dalaug.Loader:
    # One DALI thread and a policy: the pixels are bit-for-bit reproducible and worth checking.
    return dalaug.Loader(
        data, 8, train=True, crop=32, device="cpu", seed=7, policy="autoaugment", num_threads=1
    )


def record(loader: dalaug.Loader, images: torch.Tensor) -> dict:
    pixels = hashlib.sha1(images.numpy().tobytes()).hexdigest()
    return {"epoch": loader.epoch, "ids": loader.sample_ids.tolist(), "pixels": pixels}


def main(data: str, path: str, log: str, resume: bool) -> None:
    loader, done = make_loader(data), 0
    if resume:
        state = checkpoint.load(path)
        loader.load_state_dict(state["loader"])
        done = state["batches"]
    with open(log, "a") as out:
        for epoch in range(loader.epoch, EPOCHS):
            loader.set_epoch(epoch)
            for images, _ in loader:
                out.write(json.dumps(record(loader, images)) + "\n")
                out.flush()
                os.fsync(out.fileno())
                done += 1
                checkpoint.save({"loader": loader.state_dict(), "batches": done}, path)
                if not resume:
                    time.sleep(0.05)  # a training step: gives the test time to kill mid-epoch


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], "--resume" in sys.argv[4:])

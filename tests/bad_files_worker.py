"""Files going bad under a running loader, in a process of its own (tests/test_bad_files.py, and
benchmarks/bad_files.py which counts 20 runs of each case).

    python bad_files_worker.py DATA MODES MOMENTS DEVICE RUNS

DATA is a folder of JPEGs in class folders (or of WebDataset shards, for the shard modes). Each run
copies it, starts a training loader (batch 32: DALI 2.4's decoder crashes only from 32 samples a
batch), and makes three files go bad (MODE) in the middle of the first epoch or between the first
and the second (MOMENT); it then trains on for several epochs and checks that the bad files are named
and every other sample keeps coming. MODES and MOMENTS are comma-separated: every pair is a case,
RUNS runs each, all in this one process (starting one costs ten times a run), and each case prints
``case MODE MOMENT: started`` and then ``case MODE MOMENT: exit N`` with N 0: every run passed;
3: the loader stopped with a Python exception naming the files (acceptable where nothing can be
recovered: a shard rewritten under it); 1: a check failed or a run raised. The process exits with
the worst N. A run that crashes the process ends it by a signal, which the caller sees, in the case
whose ``started`` line has no ``exit`` line.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tarfile
import tempfile
import traceback
from pathlib import Path

import numpy as np

import dalaug
from dalaug.loader import DecodeError

FILE_MODES = ("deleted", "truncated", "overwritten", "unreadable")
SHARD_MODES = ("shard_truncated", "shard_rewritten")
EPOCHS = 6


def write_shards(folder: Path, root: Path, count: int = 4) -> Path:
    """The JPEGs under ``folder`` as ``count`` WebDataset shards in ``root`` (labels: index % 4)."""
    files = sorted(Path(folder).rglob("*.jpg"))
    for shard in range(count):
        with tarfile.open(root / f"shard-{shard}.tar", "w") as tar:
            for index, path in enumerate(files[shard::count]):
                for name, data in (
                    (f"{index:05d}.jpg", path.read_bytes()),
                    (f"{index:05d}.cls", b"%d" % (index % 4)),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


def spoil(path: Path, mode: str, rng: np.random.Generator) -> None:
    """Make ``path`` go bad the way a cleaning job, a sync tool or a failing disk would."""
    if mode == "deleted":
        path.unlink()
    elif mode == "truncated":
        with open(path, "r+b") as file:
            file.truncate(100)
    elif mode == "overwritten":
        path.write_bytes(rng.integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())
    elif mode == "unreadable":
        # A folder where the file was: open() fails as it does without permission (root ignores
        # file modes, so chmod 000 would prove nothing here).
        path.unlink()
        path.mkdir()
    elif mode == "shard_truncated":
        with open(path, "r+b") as file:
            file.truncate(path.stat().st_size // 2)
    elif mode == "shard_rewritten":
        data = bytearray(path.read_bytes())
        data[512:] = rng.integers(0, 256, len(data) - 512, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(data))
    else:
        raise ValueError(f"mode: {mode!r}")


def run_once(data: Path, mode: str, moment: str, device: str, seed: int) -> int:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        shutil.copytree(data, root)
        shards = mode in SHARD_MODES
        loader = dalaug.Loader(
            root, 32, train=True, crop=32, device=device, seed=seed, num_threads=2, io_workers=2,
            max_bad_fraction=0.05,
        )  # fmt: skip
        files = sorted(set(loader.samples.paths))
        victims = [Path(p) for p in rng.choice(files, 1 if shards else 3, replace=False)]
        good_ids = set(range(len(loader.samples)))
        seen_after: set[int] = set()
        try:
            for epoch in range(EPOCHS):
                for step, _ in enumerate(loader):
                    ids = loader.sample_ids.tolist()
                    if epoch >= 3:  # past the batches read before the damage
                        seen_after.update(ids)
                    last = step == len(loader) - 1
                    if epoch == 0 and (step == 0 if moment == "mid" else last):
                        for victim in victims:
                            spoil(victim, mode, rng)
        except DecodeError as error:
            if shards:
                print(f"stopped with a named error: {str(error)[:200]}")
                return 3
            raise
        bad = {loader.samples.paths.index(p) for p in loader.bad_samples if p in loader.samples.paths}
        if not shards:
            named = {str(v) for v in victims}
            if set(loader.bad_samples) != named:
                print(f"named {sorted(loader.bad_samples)}, expected {sorted(named)}")
                return 1
            if seen_after != good_ids - bad:
                missed, served = sorted(good_ids - bad - seen_after), sorted(seen_after & bad)
                print(f"epochs 3-5 missed {missed}, served {served}")
                return 1
        loader.close()
    return 0


def main(data: str, modes: str, moments: str, device: str, runs: str) -> int:
    worst = 0
    for mode in modes.split(","):
        for moment in moments.split(","):
            print(f"case {mode} {moment}: started", flush=True)
            try:
                code = max(run_once(Path(data), mode, moment, device, seed) for seed in range(int(runs)))
            except Exception:  # a Python error is this case's failure; the next cases still run
                traceback.print_exc(file=sys.stdout)
                code = 1
            print(f"case {mode} {moment}: exit {code}", flush=True)
            worst = max(worst, code)
    return worst


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main(*sys.argv[1:6]))

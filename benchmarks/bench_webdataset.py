"""WebDataset start-up: how long a process takes to know its samples, with the stored shard index.

Before, every process of every run walked each shard with Python's ``tarfile`` (9.5 s for 128k
samples; 100-200 s per rank at ImageNet's 1.28M). Now each shard's index is built once by reading
its tar headers directly and stored next to it (:mod:`dalaug.reading.webdataset`).

Shards: 128k samples in 200 shards written with ``tarfile``, each sample a small fake JPEG (1-2 KB
of random bytes between JPEG markers) and its ``.cls``. The index never looks inside the images, so
only the number of members matters here, not their size; the shards sit in the page cache (the
"cold" start is a cold index, not a cold disk). They are generated once into ``--folder`` and reused.

Each start is a fresh ``python`` process, timed from just before it is spawned to the moment
``dalaug.reading.sources.resolve_source`` has returned the ``Samples`` table (what the loader needs before it
asks for the first batch); the import of dalaug (torch, DALI) is shown apart. Three kinds of start:
today's ``tarfile`` walk (the code this replaced, kept here as the baseline), the first dalaug start
(no index yet: build and store), and the second (index reused; the median of ``--repeats``).

Also measured in this process: the cost of the ``Samples.paths`` tuple (one reference per sample to
its shard's path) at ImageNet's 1.28M samples in 1,024 shards.

Run: ``python -m benchmarks.bench_webdataset [--samples 128000] [--shards 200] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from itertools import chain, repeat
from pathlib import Path

import numpy as np

from benchmarks.report import machine, markdown_table, write_section

CHILD = """
import json, sys, time
started = time.time()
from benchmarks.report import rss_mib
from benchmarks.bench_webdataset import tarfile_samples
from dalaug.reading.sources import resolve_source
imported = time.time()
samples = (tarfile_samples if sys.argv[2] == "tarfile" else resolve_source)(sys.argv[1])
done = time.time()
print(json.dumps({"started": started, "imported": imported, "done": done, "samples": len(samples),
                  "rss_mib": rss_mib(), "first": [int(samples.offsets[0]), int(samples.labels[-1])]}))
"""


def write_shards(folder: Path, samples: int, shards: int, seed: int = 0) -> list[Path]:
    """``shards`` tar files of fake-JPEG samples with ``.cls`` labels; kept when already there."""
    done = folder / f"done-{samples}-{shards}"
    paths = [folder / f"shard-{i:05d}.tar" for i in range(shards)]
    if done.exists():
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for shard, keys in zip(paths, np.array_split(np.arange(samples), shards), strict=True):
        with tarfile.open(shard, "w") as tar:
            for key in keys:
                image = b"\xff\xd8" + rng.bytes(int(rng.integers(1024, 2048))) + b"\xff\xd9"
                label = str(int(rng.integers(1000))).encode()
                for name, data in ((f"{key:08d}.jpg", image), (f"{key:08d}.cls", label)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    done.touch()
    return paths


def tarfile_samples(folder: str):
    """Today's baseline: the ``tarfile`` walk that ``sources.webdataset`` did before the index."""
    from dalaug.reading.sources import Samples

    paths, offsets, sizes, labels = [], [], [], []
    for shard in sorted(Path(folder).glob("*.tar")):
        images, classes = {}, {}
        with tarfile.open(shard) as tar:
            for member in tar:
                key, _, ext = member.name.rpartition(".")
                if ext.lower() in ("jpg", "jpeg", "png", "webp"):
                    images[key] = (member.offset_data, member.size)
                elif ext == "cls":
                    classes[key] = int(tar.extractfile(member).read().decode().strip())
        for key, (offset, size) in images.items():
            paths.append(str(shard))
            offsets.append(offset)
            sizes.append(size)
            labels.append(classes[key])
    return Samples(
        tuple(paths), np.asarray(offsets, np.int64), np.asarray(sizes, np.int64),
        np.asarray(labels, np.int64), tuple(str(c) for c in range(max(labels) + 1)),
    )  # fmt: skip


def start(folder: Path, kind: str) -> dict:
    """One fresh process resolving the shards; its times in seconds from just before the spawn."""
    spawned = time.time()
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), kind],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    child = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "import_s": child["imported"] - spawned,
        "resolve_s": child["done"] - child["imported"],
        "total_s": child["done"] - spawned,
        "rss_mib": child["rss_mib"],
        "samples": child["samples"],
        "first": child["first"],
    }


def paths_cost(samples: int = 1_281_167, shards: int = 1024) -> dict:
    """Seconds to build the ``Samples.paths`` tuple as ``sources.webdataset`` does, and its size."""
    counts = [len(c) for c in np.array_split(np.arange(samples), shards)]
    names = [f"/data/imagenet/train/shard-{i:05d}.tar" for i in range(shards)]
    began = time.perf_counter()
    paths = tuple(chain.from_iterable(repeat(n, c) for n, c in zip(names, counts, strict=True)))
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "mib": sys.getsizeof(paths) / 2**20, "samples": len(paths)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=128_000)
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/dalaug-bench-webdataset"))
    args = parser.parse_args()

    load = os.getloadavg()[0]  # these cores may be shared: the figures scale with it
    folder = args.folder / f"{args.samples}-{args.shards}"
    began = time.perf_counter()
    shards = write_shards(folder, args.samples, args.shards)
    print(f"shards ready in {folder} ({time.perf_counter() - began:.1f} s)", flush=True)
    for index in folder.glob("*.dalaug-idx.npy"):
        index.unlink()

    runs = {"tarfile (before)": start(folder, "tarfile")}
    print("tarfile", runs["tarfile (before)"], flush=True)
    runs["dalaug, first start (builds the index)"] = start(folder, "index")
    print("first", runs["dalaug, first start (builds the index)"], flush=True)
    seconds = [start(folder, "index") for _ in range(args.repeats)]
    print("second", seconds, flush=True)
    runs["dalaug, second start (index reused)"] = {
        key: statistics.median(run[key] for run in seconds) for key in seconds[0] if key != "first"
    } | {"first": seconds[0]["first"]}
    answers = {(run["samples"], tuple(run["first"])) for run in runs.values()}
    if len(answers) != 1:
        raise RuntimeError(f"the starts disagree on the samples: {answers}")
    index_bytes = sum(p.stat().st_size for p in folder.glob("*.dalaug-idx.npy"))
    paths = paths_cost()

    rows = [
        [name, f"{r['total_s']:.2f}", f"{r['import_s']:.2f}", f"{r['resolve_s']:.3f}", f"{r['rss_mib']:.0f}"]
        for name, r in runs.items()
    ]
    second = runs["dalaug, second start (index reused)"]
    markdown = f"""## WebDataset start-up (`benchmarks/bench_webdataset.py`)

{machine()}, load average {load:.1f} at the start. {args.samples:,} samples in {len(shards)} shards
(fake 1-2 KB JPEG payloads: the index reads only tar headers and `.cls` members; shards in the page
cache). Each start is a fresh process, timed from its spawn to `resolve_source` returning the
`Samples` table; seconds, the second start the median of {args.repeats}.

{markdown_table(["start", "total s", "of which import s", "resolve s", "RSS MiB"], rows)}

- Target: second start <= 1 s to the first batch being requested: resolve {second["resolve_s"]:.3f} s
  ({second["total_s"]:.2f} s with the import of dalaug, torch and DALI, which every start pays).
- Index files: {index_bytes / 2**20:.1f} MiB for {args.samples:,} samples ({index_bytes / args.samples:.0f}
  bytes a sample), one `<shard>.dalaug-idx.npy` per shard.
- `Samples.paths` at {paths["samples"]:,} samples in 1,024 shards: {paths["seconds"] * 1000:.0f} ms,
  {paths["mib"]:.1f} MiB (one reference per sample to its shard's single path string).
"""
    write_section("webdataset", markdown)
    print(markdown)


if __name__ == "__main__":
    main()

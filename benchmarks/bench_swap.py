"""The phase swap of a Schedule: how long the first refinement batch takes, and memory across swaps.

He et al.'s refinement (Algorithm 1) swaps the AutoAugment + Mixup pipeline for the clean one at a
boundary. The Schedule builds the clean loader in a background thread during the last heavy epoch,
so the swap should cost no more than an ordinary batch; and it closes the old pipeline, so memory
should not grow however often phases change.

1. Latency: Algorithm 1 with N = 2 heavy epochs (AutoAugment + Mixup) and M = 2 clean epochs over an
   ImageNet-like JPEG folder (real photos, short side 256-512), batch 64, crop 224, the loop taking
   batches as fast as the loader makes them (no training step to hide behind). Per round: the
   time from asking ``loader_at`` for the first refinement epoch to its first batch, against the
   median clean batch time; the same with ``prebuild=False``, and with a pause between epochs (an
   evaluation) during which the old pipeline finishes the batches DALI started of its next epoch.
2. Memory: 20 swaps between one-epoch phases, AutoAugment + Mixup and clean alternately; host RSS
   (VmRSS) after each epoch, and the device's used memory when CUDA exists.

Run: ``python -m benchmarks.bench_swap [--images 320] [--rounds 3] [--swaps 20]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from benchmarks.report import machine, markdown_table, rss_mib, write_section

BATCH = 64
CROP = 224
CLASSES = 10
PAUSE = 2.0  # seconds between epochs in the third latency configuration (an evaluation, say)


def device_used_mib() -> float | None:
    """Memory in use on the whole device (DALI's pools included, which torch does not count)."""
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


def run_schedule(schedule, pause: float = 0.0, on_epoch=None) -> list[list[float]]:
    """Run the schedule's loop; per epoch, the time each batch took to arrive after the one before it
    (the first: after ``loader_at`` was called). ``pause`` seconds pass before each epoch, as an
    evaluation between epochs would take."""
    times = []
    for epoch in schedule:
        time.sleep(pause)
        previous = time.perf_counter()
        loader = schedule.loader_at(epoch)
        operators = schedule.operators_at(epoch)
        intervals = []
        for images, targets in loader:
            now = time.perf_counter()
            intervals.append(now - previous)
            previous = now
            for operator in operators:
                images, targets = operator(images, targets)
            if images.is_cuda:
                torch.cuda.synchronize()
        times.append(intervals)
        if on_epoch is not None:
            on_epoch(epoch)
    return times


def latency_round(root: Path, device: str, prebuild: bool, pause: float) -> dict[str, float]:
    from dalaug import Loader
    from dalaug.ops import Mixup
    from dalaug.schedule import Phase, Schedule, refine

    template = Loader(root, BATCH, train=True, crop=CROP, policy="autoaugment", device=device, seed=0)
    heavy = Phase(2, policy="autoaugment", operators=[Mixup(alpha=1.0, num_classes=CLASSES, seed=0)])
    with Schedule(refine(heavy, 2), template, prebuild=prebuild) as schedule:
        times = run_schedule(schedule, pause)
    return {
        "swap_first": times[2][0],
        "clean_median": statistics.median(times[2][1:] + times[3][1:]),
        "ordinary_first": times[3][0],  # an epoch start without a swap
        "heavy_median": statistics.median(times[0][1:] + times[1][1:]),
    }


def memory_run(root: Path, device: str, swaps: int) -> dict[str, list]:
    from dalaug import Loader
    from dalaug.ops import Mixup
    from dalaug.schedule import Phase, Schedule

    before = rss_mib()
    template = Loader(root, BATCH, train=True, crop=CROP, policy="autoaugment", device=device, seed=0)
    mixup = Mixup(alpha=1.0, num_classes=CLASSES, seed=0)
    phases = [
        Phase(1, policy="autoaugment", operators=[mixup]) if i % 2 == 0 else Phase(1)
        for i in range(swaps + 1)
    ]
    host, gpu = [], []

    def measure(_epoch: int) -> None:
        host.append(rss_mib())
        gpu.append(device_used_mib())

    with Schedule(phases, template) as schedule:
        times = run_schedule(schedule, on_epoch=measure)
    return {"before": before, "host": host, "gpu": gpu, "times": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--data", default="data/bench-swap")
    args = parser.parse_args()

    from dalaug.datasets import write_photo_folder

    root = Path(args.data)
    if not root.exists():
        write_photo_folder(root, args.images, num_classes=CLASSES)
    num_images = sum(1 for _ in root.rglob("*.jpg"))
    device = "cuda" if torch.cuda.is_available() else "cpu"

    configs = {  # label: (prebuild, pause before each epoch)
        "yes": (True, 0.0),
        "no (`prebuild=False`)": (False, 0.0),
        f"yes, {PAUSE:.0f} s between epochs": (True, PAUSE),
    }
    rounds = {label: [] for label in configs}
    for _ in range(args.rounds):
        for label, (prebuild, pause) in configs.items():  # alternate, so drift hits all
            rounds[label].append(latency_round(root, device, prebuild, pause))
            print(label, {k: round(v * 1000) for k, v in rounds[label][-1].items()}, flush=True)

    def row(label: str) -> list[str]:
        ms = {
            key: f"{1000 * statistics.median(r[key] for r in rounds[label]):.0f}" for key in rounds[label][0]
        }
        ratio = statistics.median(r["swap_first"] / r["clean_median"] for r in rounds[label])
        return [label, ms["swap_first"], ms["clean_median"], f"**{ratio:.2f}x**", ms["ordinary_first"],
                ms["heavy_median"]]  # fmt: skip

    latency = markdown_table(
        ["build ahead", "first refinement batch (ms)", "median clean batch (ms)", "ratio",
         "first batch of the next clean epoch (ms)", "median heavy batch (ms)"],
        [row(label) for label in configs],
    )  # fmt: skip

    memory = memory_run(root, device, args.swaps)
    host = memory["host"]  # host[i]: after epoch i, i.e. after i swaps
    growth = 100 * (max(host[2:]) - host[2]) / host[2]
    checkpoints = [i for i in (1, 2, 5, 10, 15, args.swaps) if i < len(host)]
    rows = [[f"after swap {i}", f"{host[i]:.0f}"] for i in checkpoints]
    rows.insert(0, ["before the first loader", f"{memory['before']:.0f}"])
    if memory["gpu"][0] is not None:
        for cells, i in zip(rows[1:], checkpoints, strict=True):
            cells.append(f"{memory['gpu'][i]:.0f}")
    header = ["", "host RSS (MiB)"] + (["device used (MiB)"] if memory["gpu"][0] is not None else [])
    to_clean = [w[0] for w in memory["times"][1::2]]
    to_heavy = [w[0] for w in memory["times"][2::2]]
    rest = [x for w in memory["times"] for x in w[1:]]
    per_epoch = len(memory["times"][0])
    print(f"host RSS after each swap: {[round(h) for h in host]}", flush=True)

    gpu_line = ""
    if memory["gpu"][0] is not None:
        gpu = memory["gpu"]
        gpu_line = f" Device memory from swap 2 to {args.swaps}: {gpu[2]:.0f} -> {gpu[-1]:.0f} MiB."
    write_section(
        "swap",
        f"## Schedule: the swap to the refinement phase\n\n"
        f"`python -m benchmarks.bench_swap --images {args.images} --rounds {args.rounds} "
        f"--swaps {args.swaps}` on {machine()}, device {device}; {num_images} JPEGs (real photos, "
        f"short side 256-512), batch {BATCH}, crop {CROP}; date {time.strftime('%Y-%m-%d')}.\n\n"
        f"**Latency** (Algorithm 1: 2 epochs AutoAugment + Mixup, then 2 clean epochs; the loop takes "
        f"batches as fast as they come; medians of {args.rounds} rounds). A batch's time runs from the "
        f"arrival of the one before it (for an epoch's first batch: from the call to `loader_at`), so "
        f"heavy batches include Mixup.\n\n{latency}\n\n"
        f"**Memory** across {args.swaps} swaps between one-epoch phases (AutoAugment + Mixup, clean, "
        f"alternately; the old pipeline closed at each swap):\n\n{markdown_table(header, rows)}\n\n"
        f"Host RSS growth from swap 2 to the largest value after it: **{growth:+.1f}%** "
        f"(max {max(host[2:]):.0f} MiB).{gpu_line} In this run the phases "
        f"last one epoch ({per_epoch} batches), shorter than building an AutoAugment pipeline, "
        f"so a swap to the heavy phase waits "
        f"for the rest of its build: median first batch {1000 * statistics.median(to_heavy):.0f} ms "
        f"(to clean: {1000 * statistics.median(to_clean):.0f} ms; any other batch: "
        f"{1000 * statistics.median(rest):.0f} ms).\n",
    )


if __name__ == "__main__":
    main()

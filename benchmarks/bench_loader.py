"""dalaug's Loader against torchvision ImageFolder + DataLoader doing the same work.

Same JPEG folder (ImageNet-like: real photos, short side 256-512), random-resized-crop 224, flip,
normalize, batch 64, all cores; then the same plus AutoAugment (the paper's ImageNet policy in both).
Each configuration runs in its own process, the configurations alternate (A B A B ...) so machine
drift hits both, and the table reports medians of per-epoch images/s, CPU-ms per image of the whole
process tree, and peak resident memory. Run: ``python -m benchmarks.bench_loader [--images N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.report import machine, markdown_table, rss_mib, write_section

BATCH = 64
CROP = 224


def run_dalaug(root: str, policy: str | None, epochs: int) -> list[float]:
    import dalaug

    loader = dalaug.Loader(root, BATCH, train=True, crop=CROP, policy=policy, device="cpu", seed=0)
    return _time_epochs(loader, epochs)


def run_torchvision(root: str, policy: str | None, epochs: int) -> list[float]:
    import torch
    from torchvision import datasets, transforms

    steps = [transforms.RandomResizedCrop(CROP), transforms.RandomHorizontalFlip()]
    if policy == "autoaugment":
        steps.append(transforms.AutoAugment(transforms.AutoAugmentPolicy.IMAGENET))
    steps += [transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    dataset = datasets.ImageFolder(root, transforms.Compose(steps))
    loader = torch.utils.data.DataLoader(
        dataset, BATCH, shuffle=True, drop_last=True,
        num_workers=len(os.sched_getaffinity(0)), persistent_workers=True,
    )  # fmt: skip
    return _time_epochs(loader, epochs)


def _time_epochs(loader, epochs: int) -> dict:
    """Images/s and this process's resident memory (MB) after each epoch."""
    rates, rss = [], []
    for _ in range(epochs + 1):  # the first epoch warms up (worker start, page cache)
        start, count = time.perf_counter(), 0
        for images, _ in loader:
            count += images.shape[0]
        rates.append(count / (time.perf_counter() - start))
        rss.append(rss_mib())
    return {"rates": rates[1:], "rss_mb": rss}



RUNNERS = {"dalaug": run_dalaug, "torchvision": run_torchvision}


def measure(name: str, root: str, policy: str | None, epochs: int) -> dict:
    """Run one configuration in a fresh process; its CPU time and peak RSS come from the OS."""
    code = (
        "import json, sys; from benchmarks.bench_loader import RUNNERS; "
        f"print(json.dumps(RUNNERS[{name!r}]({root!r}, {policy!r}, {epochs})))"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    out = process.stdout.read()
    # wait4 gives this child's usage, its reaped worker processes included
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"{name} {policy} failed with status {status}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(cpu_s=usage.ru_utime + usage.ru_stime, peak_mb=usage.ru_maxrss / 1024)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per pair")
    parser.add_argument("--data", default="data/bench-photos")
    parser.add_argument("--memory-epochs", type=int, default=20, help="epochs of the memory run")
    args = parser.parse_args()

    from dalaug.datasets import write_photo_folder

    root = Path(args.data)
    if not root.exists():
        write_photo_folder(root, args.images, num_classes=10)
    num_images = sum(1 for _ in root.rglob("*.jpg"))
    rows = []
    for policy in (None, "autoaugment"):
        results = {"dalaug": [], "torchvision": []}
        cpu = {"dalaug": [], "torchvision": []}
        peak = {"dalaug": 0.0, "torchvision": 0.0}
        for _ in range(args.rounds):
            for name in ("dalaug", "torchvision"):
                r = measure(name, str(root), policy, args.epochs)
                results[name] += r["rates"]
                # process CPU includes start-up and the warm-up epoch: per image over all epochs
                cpu[name].append(1000 * r["cpu_s"] / (num_images * (args.epochs + 1)))
                peak[name] = max(peak[name], r["peak_mb"])
        ours, theirs = (statistics.median(results[n]) for n in ("dalaug", "torchvision"))
        rows.append([
            policy or "none", f"{ours:.0f}", f"{theirs:.0f}", f"**{ours / theirs:.2f}x**",
            f"{statistics.median(cpu['dalaug']):.2f}", f"{statistics.median(cpu['torchvision']):.2f}",
            f"{peak['dalaug']:.0f}", f"{peak['torchvision']:.0f}",
        ])  # fmt: skip
        print(rows[-1], flush=True)
    memory = measure("dalaug", str(root), "autoaugment", args.memory_epochs)
    table = markdown_table(
        ["policy", "dalaug img/s", "torchvision img/s", "ratio", "dalaug CPU-ms/img",
         "torchvision CPU-ms/img", "dalaug peak MB", "torchvision peak MB (largest process)"],
        rows,
    )  # fmt: skip
    write_section(
        "loader",
        f"## Loader: dalaug vs torchvision ImageFolder + DataLoader\n\n"
        f"`python -m benchmarks.bench_loader --images {args.images}` on {machine()}; "
        f"{num_images} JPEGs, batch {BATCH}, crop {CROP}, median of {args.epochs} epochs x "
        f"{args.rounds} alternating rounds; date {time.strftime('%Y-%m-%d')}.\n\n{table}\n\n"
        + f"dalaug with AutoAugment over {args.memory_epochs} epochs: peak RSS {memory['peak_mb']:.0f} MB; "
        + "resident memory after each epoch (MB): "
        + ", ".join(f"{m:.0f}" for m in memory["rss_mb"])
        + "\n",
    )


if __name__ == "__main__":
    main()

"""Time dalaug's batch operators against timm, torchvision v2 and kornia; write section "ops".

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_ops [--rounds 30]

Every contestant works on the same float32 batch (64x3x224x224 on the CPU, 256x3x224x224 on CUDA)
with 1000-class integer targets. The machine is shared and noisy, so the contestants are timed in
interleaved rounds (A B C ... A B C ...) rather than each in a block, and the median is reported.
In-place contestants get a fresh copy of the batch before every timed call, outside the timing.
On CUDA the times come from CUDA events, and Mixup's bandwidth is compared with a large copy's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import kornia.augmentation as K
import torch
import torchvision.transforms.v2 as tv
from timm.data import Mixup as TimmMixup
from timm.data.random_erasing import RandomErasing as TimmRandomErasing

from benchmarks.report import machine, markdown_table, write_section
from dalaug.ops import CutMix, Cutout, Mixup, SaliencyMix

NUM_CLASSES = 1000


@dataclass
class Contestant:
    name: str
    run: Callable[[torch.Tensor, torch.Tensor], object]
    inplace: bool


def contestants(device: torch.device) -> list[Contestant]:
    """Everything timed, ours first. timm works in place; torchvision and kornia return copies."""
    common = dict(num_classes=NUM_CLASSES, seed=0)
    erase = dict(scale=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3))  # timm's RandomErasing defaults
    ours = {
        "Mixup": (Mixup(alpha=1.0, **common), False),
        "Mixup (inplace)": (Mixup(alpha=1.0, inplace=True, **common), True),
        "CutMix": (CutMix(alpha=1.0, **common), False),
        "CutMix (inplace)": (CutMix(alpha=1.0, inplace=True, **common), True),
        "Cutout": (Cutout(**erase, **common), False),
        "Cutout (inplace)": (Cutout(**erase, inplace=True, **common), True),
        "SaliencyMix": (SaliencyMix(alpha=1.0, **common), False),
        "SaliencyMix (inplace)": (SaliencyMix(alpha=1.0, inplace=True, **common), True),
        "SaliencyMix official (inplace)": (
            SaliencyMix(alpha=1.0, per_sample=False, inplace=True, **common),
            True,
        ),
    }
    runners = [Contestant(name, op, inplace) for name, (op, inplace) in ours.items()]

    timm_mixup = TimmMixup(mixup_alpha=1.0, cutmix_alpha=0.0, num_classes=NUM_CLASSES)
    timm_cutmix = TimmMixup(mixup_alpha=0.0, cutmix_alpha=1.0, num_classes=NUM_CLASSES)
    timm_erasing = TimmRandomErasing(probability=1.0, mode="const", device=str(device))
    tv_mixup = tv.MixUp(alpha=1.0, num_classes=NUM_CLASSES)
    tv_cutmix = tv.CutMix(alpha=1.0, num_classes=NUM_CLASSES)
    kornia_mixup = K.RandomMixUpV2(p=1.0)
    kornia_cutmix = K.RandomCutMixV2(p=1.0)
    kornia_erasing = K.RandomErasing(p=1.0)
    runners += [
        Contestant("timm Mixup (mixup)", timm_mixup, True),
        Contestant("timm Mixup (cutmix)", timm_cutmix, True),
        Contestant("timm RandomErasing", lambda x, y: timm_erasing(x), True),
        Contestant("torchvision MixUp", tv_mixup, False),
        Contestant("torchvision CutMix", tv_cutmix, False),
        Contestant("kornia RandomMixUpV2", kornia_mixup, False),
        Contestant("kornia RandomCutMixV2", kornia_cutmix, False),
        Contestant("kornia RandomErasing", lambda x, y: kornia_erasing(x), False),
    ]
    return runners


# (ours, reference, target for ours / reference or None for information only)
COMPARISONS: list[tuple[str, str, float | None]] = [
    ("Mixup (inplace)", "timm Mixup (mixup)", 1.0),
    ("Mixup", "timm Mixup (mixup)", 1.0),
    ("Mixup", "torchvision MixUp", None),
    ("Mixup", "kornia RandomMixUpV2", 1 / 3),
    ("CutMix (inplace)", "timm Mixup (cutmix)", 0.3),
    ("CutMix", "timm Mixup (cutmix)", None),
    ("CutMix", "torchvision CutMix", None),
    ("CutMix", "kornia RandomCutMixV2", 1 / 3),
    ("Cutout (inplace)", "timm RandomErasing", 1.0),
    ("Cutout", "timm RandomErasing", None),
    ("Cutout", "kornia RandomErasing", 1 / 3),
    ("SaliencyMix", "Mixup", 3.0),
    ("SaliencyMix (inplace)", "Mixup (inplace)", 3.0),
    ("SaliencyMix official (inplace)", "Mixup (inplace)", 3.0),
    ("SaliencyMix", "kornia RandomCutMixV2", 1 / 3),
]


def time_interleaved(
    runners: list[Contestant], images: torch.Tensor, targets: torch.Tensor, rounds: int, warmup: int
) -> dict[str, float]:
    """Median seconds per call of each contestant, timed round-robin."""
    cuda = images.is_cuda
    samples: dict[str, list[float]] = {runner.name: [] for runner in runners}
    work = images.clone()
    for round_index in range(warmup + rounds):
        for runner in runners:
            if runner.inplace:
                work.copy_(images)
            batch = work if runner.inplace else images
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                runner.run(batch, targets)
                end.record()
                torch.cuda.synchronize()
                elapsed = start.elapsed_time(end) / 1e3
            else:
                begin = time.perf_counter()
                runner.run(batch, targets)
                elapsed = time.perf_counter() - begin
            if round_index >= warmup:
                samples[runner.name].append(elapsed)
    return {name: statistics.median(values) for name, values in samples.items()}


def peak_copy_bandwidth(device: torch.device, gib: float = 2.0, repeats: int = 20) -> float:
    """Bytes per second of a large device-to-device copy: the practical peak bandwidth."""
    n = int(gib * 2**30) // 4
    src, dst = torch.empty(n, device=device), torch.empty(n, device=device)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n * 4 / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 30/100)")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    batch = 256 if cuda else 64
    rounds = args.rounds or (100 if cuda else 30)
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.randn(batch, 3, 224, 224, device=device, generator=g)
    targets = torch.randint(0, NUM_CLASSES, (batch,), device=device, generator=g)

    runners = contestants(device)
    load_before = os.getloadavg()[0]
    times = time_interleaved(runners, images, targets, rounds, args.warmup)
    load_after = os.getloadavg()[0]
    scale, unit = (1e6, "µs") if cuda else (1e3, "ms")

    rows = []
    for ours, reference, target in COMPARISONS:
        ratio = times[ours] / times[reference]
        verdict = "" if target is None else ("met" if ratio <= target else "not met")
        rows.append(
            [
                ours,
                f"{times[ours] * scale:.2f}",
                reference,
                f"{times[reference] * scale:.2f}",
                f"{ratio:.2f}",
                "-" if target is None else f"<= {target:.2f}",
                verdict,
            ]
        )
    header = ["ours", f"ours ({unit})", "reference", f"reference ({unit})", "ratio", "target", ""]
    lines = [
        "## Batch operators (`benchmarks/bench_ops.py`)",
        "",
        f"{machine()}; batch {batch}x3x224x224 float32, {NUM_CLASSES} classes; median of {rounds} "
        f"interleaved rounds ({unit}). Ratio = ours / reference; in-place contestants restart from "
        "a fresh copy of the batch each call (untimed). timm's Mixup works in place; torchvision "
        "and kornia return new tensors. Load average (1 min) before/after the run: "
        f"{load_before:.1f}/{load_after:.1f} on {os.cpu_count()} logical CPUs; figures taken while "
        "other jobs compete for the cores are not representative.",
        "",
        markdown_table(header, rows),
        "",
        "All contestants ("
        + unit
        + "): "
        + ", ".join(f"{name} {value * scale:.2f}" for name, value in times.items()),
    ]
    if cuda:
        peak = peak_copy_bandwidth(device)
        batch_bytes = images.numel() * images.element_size()
        seconds = times["Mixup (inplace)"]
        # In-place Mixup runs two kernels: index_select (read + write the batch) and lerp_ (read two
        # batches, write one): five batch-sized transfers. The useful minimum is two.
        moved, useful = 5 * batch_bytes / seconds, 2 * batch_bytes / seconds
        lines += [
            "",
            f"Mixup (inplace) bandwidth: {moved / 1e9:.0f} GB/s moved = {moved / peak:.0%} of a "
            f"large copy's {peak / 1e9:.0f} GB/s; counting only one read and one write of the "
            f"batch, {useful / peak:.0%}.",
        ]
    markdown = "\n".join(lines)
    write_section("ops", markdown)
    print(markdown)


if __name__ == "__main__":
    main()

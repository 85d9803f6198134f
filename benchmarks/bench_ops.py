"""Time dalaug's batch operators against timm, torchvision v2 and kornia; write section "ops".

Run from the repository root (timm comes with the ``bench`` extra)::

    .venv/bin/python -m benchmarks.bench_ops [--quick] [--rounds N] [--batch N]
    .venv/bin/python -m benchmarks.bench_ops --kornia [--rounds N] [--batch N]

``--kornia`` times only kornia's augmentations by hand against the same modules through dalaug's
operator path (``Loader(operators=[module])``'s ``apply_operators``, the adapter ``KorniaOp``) and
writes section "ops-kornia"; the full run has the blur pair among its contestants too.

Every contestant works on the same batch (256x3x224x224 on CUDA, 64x3x224x224 on the CPU) with
1000-class integer targets, at float32 and bfloat16. Contestants are timed in interleaved rounds
(A B C ... A B C ...) after a warm-up, and the median is reported: CUDA events on a GPU, wall time
on the CPU. In-place contestants get a fresh copy of the batch before every timed call, untimed.
Besides time, each contestant is profiled once on a small CPU batch (aten ops per call, a proxy for
kernel launches on the torch path) and, on CUDA, for the kernels the GPU runs per call (Triton's
included) and the host syncs ``torch.cuda.set_sync_debug_mode("warn")`` reports. On CUDA, Mixup in place
is also compared with a plain ``y.copy_(x)`` of the same batch, the practical bandwidth ceiling, and
its pixel step alone is timed both ways: dalaug's one-pass kernel and torch's flip + ``lerp_``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import kornia.augmentation as K
import torch
import torchvision.transforms.v2 as tv
from timm.data import Mixup as TimmMixup
from timm.data.random_erasing import RandomErasing as TimmRandomErasing
from torch.profiler import ProfilerActivity, profile

from benchmarks.report import host_syncs, machine, markdown_table, write_section
from dalaug.compose import apply_operators
from dalaug.ops import CutMix, Cutout, Mixup, RandomErasing, SaliencyMix, as_operator
from dalaug.ops.fused import blend_mirrored

NUM_CLASSES = 1000
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# kornia augmentations timed by hand and through dalaug's operator path (--kornia: all; full run: the first).
KORNIA_OPS: dict[str, Callable[[], torch.nn.Module]] = {
    "RandomGaussianBlur": lambda: K.RandomGaussianBlur((5, 5), (0.1, 2.0), p=1.0),
    "RandomAffine": lambda: K.RandomAffine(15, translate=(0.1, 0.1), p=1.0),
}


@dataclass
class Contestant:
    name: str
    run: Callable[[torch.Tensor, torch.Tensor], object]
    inplace: bool


def contestants(device: torch.device) -> list[Contestant]:
    """Everything timed, ours first. timm works in place; torchvision and kornia return copies."""
    common = dict(num_classes=NUM_CLASSES, seed=0)
    ours = {
        "Mixup (inplace)": Mixup(alpha=1.0, inplace=True, **common),
        "Mixup": Mixup(alpha=1.0, **common),
        "Mixup per-sample (inplace)": Mixup(alpha=1.0, per_sample=True, inplace=True, **common),
        "CutMix (inplace)": CutMix(alpha=1.0, inplace=True, **common),
        "CutMix": CutMix(alpha=1.0, **common),
        "CutMix per-sample (inplace)": CutMix(alpha=1.0, per_sample=True, inplace=True, **common),
        "Cutout (inplace)": Cutout(scale=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3), inplace=True, **common),
        "RandomErasing pixel (inplace)": RandomErasing(p=1.0, value="random", inplace=True, **common),
        "SaliencyMix (inplace)": SaliencyMix(alpha=1.0, inplace=True, **common),
    }
    runners = [Contestant(name, op, op.inplace) for name, op in ours.items()]
    timm_mixup = TimmMixup(mixup_alpha=1.0, cutmix_alpha=0.0, label_smoothing=0.0, num_classes=NUM_CLASSES)
    timm_cutmix = TimmMixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=NUM_CLASSES)
    timm_erasing = TimmRandomErasing(probability=1.0, mode="pixel", device=str(device))
    tv_mixup = tv.MixUp(alpha=1.0, num_classes=NUM_CLASSES)
    tv_cutmix = tv.CutMix(alpha=1.0, num_classes=NUM_CLASSES)
    kornia_mixup = K.RandomMixUpV2(p=1.0)
    kornia_cutmix = K.RandomCutMixV2(p=1.0)
    kornia_erasing = K.RandomErasing(p=1.0)
    runners += [
        Contestant("timm Mixup (mixup)", timm_mixup, True),
        Contestant("timm Mixup (cutmix)", timm_cutmix, True),
        Contestant("timm RandomErasing pixel", lambda x, y: timm_erasing(x), True),
        Contestant("torchvision MixUp", tv_mixup, False),
        Contestant("torchvision CutMix", tv_cutmix, False),
        Contestant("kornia RandomMixUpV2", kornia_mixup, False),
        Contestant("kornia RandomCutMixV2", kornia_cutmix, False),
        Contestant("kornia RandomErasing", lambda x, y: kornia_erasing(x), False),
        *kornia_contestants("RandomGaussianBlur"),
    ]
    return runners


def kornia_contestants(name: str) -> list[Contestant]:
    """kornia's ``name`` called by hand (drawing from torch's global RNG), and the same module as
    ``Loader(operators=[module])`` runs it: soft targets, then ``KorniaOp`` drawing from the
    operator generator, computing half precision in float32, restoring the memory format."""
    module = KORNIA_OPS[name]()
    operators = [as_operator(module)]
    generator = torch.Generator().manual_seed(0)

    def in_dalaug(images: torch.Tensor, targets: torch.Tensor) -> object:
        return apply_operators(operators, images, targets, num_classes=NUM_CLASSES, generator=generator)

    return [
        Contestant(f"kornia {name} by hand", lambda x, y: module(x), False),
        Contestant(f"kornia {name} in dalaug's operators", in_dalaug, False),
    ]


# (ours, reference, target for ours / reference or None for information only)
COMPARISONS: list[tuple[str, str, float | None]] = [
    ("Mixup (inplace)", "timm Mixup (mixup)", 1.0),
    ("Mixup", "torchvision MixUp", None),
    ("Mixup", "kornia RandomMixUpV2", None),
    ("CutMix (inplace)", "timm Mixup (cutmix)", 1.0),
    ("CutMix", "torchvision CutMix", None),
    ("CutMix", "kornia RandomCutMixV2", None),
    ("RandomErasing pixel (inplace)", "timm RandomErasing pixel", None),
    ("Cutout (inplace)", "kornia RandomErasing", None),
    ("kornia RandomGaussianBlur in dalaug's operators", "kornia RandomGaussianBlur by hand", None),
]


def _call(runner: Contestant, images: torch.Tensor, work: torch.Tensor, targets: torch.Tensor) -> None:
    if runner.inplace:
        work.copy_(images)
    runner.run(work if runner.inplace else images, targets)


def time_interleaved(
    runners: list[Contestant], images: torch.Tensor, targets: torch.Tensor, rounds: int, warmup: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per call of each contestant that runs, timed round-robin; and on CUDA the
    median host seconds the call itself takes (launching, not waiting): a call whose host time
    reaches its elapsed time is bound by its launches, not by the GPU."""
    cuda = images.is_cuda
    work = images.clone()
    alive = []
    for runner in runners:  # warm-up, and drop contestants that do not take this dtype
        try:
            for _ in range(warmup):
                _call(runner, images, work, targets)
            alive.append(runner)
        except (RuntimeError, TypeError, ValueError) as error:
            print(f"skipped {runner.name} at {images.dtype}: {str(error).splitlines()[0][:100]}")
    samples: dict[str, list[float]] = {runner.name: [] for runner in alive}
    host: dict[str, list[float]] = {runner.name: [] for runner in alive}
    for _ in range(rounds):
        for runner in alive:
            if runner.inplace:
                work.copy_(images)
            batch = work if runner.inplace else images
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                begin = time.perf_counter()
                runner.run(batch, targets)
                host[runner.name].append(time.perf_counter() - begin)
                end.record()
                torch.cuda.synchronize()
                elapsed = start.elapsed_time(end) / 1e3
            else:
                begin = time.perf_counter()
                runner.run(batch, targets)
                elapsed = time.perf_counter() - begin
            samples[runner.name].append(elapsed)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return medians, {name: statistics.median(values) for name, values in host.items() if values}


def _event_seconds(run: Callable[[], object], rounds: int, repeat: int = 10) -> float:
    """Median seconds of one ``run()`` on the GPU (CUDA events around ``repeat`` calls back to
    back, so the host's launch of the first is not counted as GPU time), after three untimed."""
    times = []
    for _ in range(rounds + 3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeat):
            run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / repeat)
    return statistics.median(times[3:])


def copy_seconds(images: torch.Tensor, rounds: int) -> float:
    """Median seconds of ``y.copy_(x)`` for a batch like ``images``."""
    out = torch.empty_like(images)
    return _event_seconds(lambda: out.copy_(images), rounds)


def blend_seconds(images: torch.Tensor, rounds: int) -> dict[str, float]:
    """Median seconds of Mixup's pixel step alone, in place at λ = 0.7: dalaug's one-pass kernel
    over the mirrored pairs, and the two torch ops it replaces (a flipped copy, then ``lerp_``)."""
    work = images.clone()
    fused = "one pass over the pairs (dalaug.ops.fused)"
    steps = {
        fused: lambda: blend_mirrored(work, 0.7, inplace=True),
        "torch ops: flip, then lerp_": lambda: work.lerp_(work.flip(0), 0.3),
    }
    if blend_mirrored(work, 0.7, inplace=True) is None:  # no Triton here: nothing to compare
        del steps[fused]
    return {name: _event_seconds(step, rounds) for name, step in steps.items()}


def aten_ops_per_call(runner: Contestant, images: torch.Tensor, targets: torch.Tensor) -> int | None:
    """aten ops one call dispatches, counted by torch.profiler (after one warm-up call)."""
    work = images.clone()
    try:
        _call(runner, images, work, targets)
    except (RuntimeError, TypeError, ValueError):
        return None
    work.copy_(images)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        runner.run(work if runner.inplace else images, targets)
    return sum(event.name.startswith("aten::") for event in prof.events())


def kernel_time_per_call(
    runner: Contestant, images: torch.Tensor, targets: torch.Tensor, calls: int = 5
) -> tuple[float | None, float | None]:
    """Seconds the GPU spends executing one call's kernels and copies, and how many it launches
    (torch.profiler's CUDA activity: Triton's kernels too, which no aten-op count sees); elapsed
    time beyond the former is time the GPU waits for the host during the call."""
    work = images.clone()
    batch = work if runner.inplace else images
    try:
        _call(runner, images, work, targets)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                runner.run(batch, targets)
            torch.cuda.synchronize()
        busy = sum(event.self_device_time_total for event in prof.key_averages())
        if busy <= 0:  # nothing traced: CUPTI may be off limits here
            return None, None
        on_device = [event for event in prof.events() if event.device_type == torch.autograd.DeviceType.CUDA]
        return busy / calls / 1e6, len(on_device) / calls
    except Exception as error:  # a profiler that cannot trace here must not end the benchmark
        print(f"kernel time of {runner.name}: not measured ({str(error).splitlines()[0][:100]})")
        return None, None


def syncs_per_call(runner: Contestant, images: torch.Tensor, targets: torch.Tensor, calls: int = 5) -> float:
    """Host syncs per call on CUDA, as ``set_sync_debug_mode("warn")`` reports them."""
    work = images.clone()
    _call(runner, images, work, targets)
    batch = work if runner.inplace else images
    return len(host_syncs(lambda: [runner.run(batch, targets) for _ in range(calls)])) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a small CPU batch and few rounds; prints, writes nothing")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 20)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 256 CUDA, 64 CPU)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--kornia", action="store_true",
                        help="only kornia's ops, by hand and in dalaug's operators")  # fmt: skip
    args = parser.parse_args()
    if args.kornia:
        kornia_main(args)
        return

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    batch = args.batch or (256 if cuda else (16 if args.quick else 64))
    rounds = args.rounds or (5 if args.quick else 20)
    warmup = 1 if args.quick else args.warmup
    g = torch.Generator().manual_seed(0)
    base = torch.randn(batch, 3, 224, 224, generator=g)
    targets = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)
    small = torch.randn(8, 3, 64, 64, generator=g)
    small_targets = torch.randint(0, NUM_CLASSES, (8,), generator=g)

    runners = contestants(device)
    cpu_runners = runners if not cuda else contestants(torch.device("cpu"))
    load_before = os.getloadavg()[0]
    times: dict[str, dict[str, float]] = {}
    host: dict[str, dict[str, float]] = {}
    kernels: dict[str, dict[str, float | None]] = {label: {} for label in DTYPES}
    launches: dict[str, dict[str, float | None]] = {label: {} for label in DTYPES}
    ops: dict[str, dict[str, int | None]] = {}
    syncs: dict[str, dict[str, float]] = {}
    copy: dict[str, float] = {}
    for label, dtype in DTYPES.items():
        images = base.to(device, dtype)
        times[label], host[label] = time_interleaved(runners, images, targets, rounds, warmup)
        ops[label] = {r.name: aten_ops_per_call(r, small.to(dtype), small_targets) for r in cpu_runners}
        if cuda:
            syncs[label] = {
                r.name: syncs_per_call(r, images, targets) for r in runners if r.name in times[label]
            }
            for r in runners:
                if r.name in times[label]:
                    kernels[label][r.name], launches[label][r.name] = kernel_time_per_call(r, images, targets)
            copy[label] = copy_seconds(images, rounds)
    load_after = os.getloadavg()[0]
    scale, unit = (1e6, "µs") if cuda else (1e3, "ms")

    def shown(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    header = ["contestant"]
    for label in DTYPES:
        header += [f"{label} ({unit})"]
        if cuda:
            header += [f"{label} host {unit}", f"{label} kernels {unit}", f"{label} launches/call"]
        header += [f"{label} aten ops/call"] + ([f"{label} syncs/call"] if cuda else [])
    rows = []
    for runner in runners:
        row: list[object] = [runner.name]
        for label in DTYPES:
            seconds = times[label].get(runner.name)
            row.append(shown(None if seconds is None else seconds * scale))
            if cuda:
                for measured in (host[label].get(runner.name), kernels[label].get(runner.name)):
                    row.append(shown(None if measured is None else measured * scale))
                row.append(shown(launches[label].get(runner.name), 1))
            row.append(ops[label].get(runner.name) or "-")
            if cuda:
                row.append(shown(syncs[label].get(runner.name), 1))
        rows.append(row)

    comparison_rows = []
    for ours, reference, target in COMPARISONS:
        for label in DTYPES:
            if ours not in times[label] or reference not in times[label]:
                continue
            ratio = times[label][ours] / times[label][reference]
            verdict = "" if target is None else ("met" if ratio <= target else "not met")
            target_text = "-" if target is None else f"<= {target:.2f}"
            comparison_rows.append([ours, reference, label, f"{ratio:.2f}", target_text, verdict])

    settings = "quick settings, " if args.quick else ""
    lines = [
        "## Batch operators (`benchmarks/bench_ops.py`)",
        "",
        f"{machine()}; {settings}batch {batch}x3x224x224, {NUM_CLASSES} classes; median of {rounds} "
        f"interleaved rounds after warm-up ({unit}; {'CUDA events' if cuda else 'wall time'}). "
        "In-place contestants restart from a fresh copy of the batch each call (untimed); "
        "torchvision and kornia return new tensors. aten ops/call: torch.profiler on an 8x3x64x64 "
        "CPU batch (the dispatches a call makes, a proxy for kernel launches). "
        + (
            "host: the median host time of the call itself (launching; a call whose host time "
            "reaches its elapsed time is launch-bound, or waits: see syncs/call); kernels: GPU time "
            "in its kernels and copies, and launches/call how many it runs "
            "(torch.profiler's CUDA activity, mean of 5 calls; elapsed beyond the kernel time is the "
            "GPU waiting for the host). "
            "syncs/call: `torch.cuda.set_sync_debug_mode('warn')` warnings per call. "
            if cuda
            else ""
        )
        + f"Load average (1 min) before/after: {load_before:.1f}/{load_after:.1f} on "
        f"{os.cpu_count()} logical CPUs; figures taken while other jobs compete are not representative.",
        "",
        markdown_table(header, rows),
        "",
        markdown_table(["ours", "reference", "dtype", "ours / reference", "target", ""], comparison_rows),
    ]
    if cuda:
        lines += ["", "Bandwidth: a copy, and Mixup in place counted as one read and one write of the batch "
                  "(the least it can move; target 70% of the copy's rate). The pixel step alone, in place, "
                  "shows what the one-pass kernel saves.", ""]  # fmt: skip
        bandwidth_rows = []
        for label, dtype in DTYPES.items():
            images = base.to(device, dtype)
            batch_bytes = images.numel() * images.element_size()
            steps = {"`y.copy_(x)`": copy[label]}
            if "Mixup (inplace)" in times[label]:  # a contestant that failed to run is left out
                steps["Mixup (inplace), whole call"] = times[label]["Mixup (inplace)"]
            for name, seconds in blend_seconds(images, rounds).items():
                steps[f"pixel step: {name}"] = seconds
            for name, seconds in steps.items():
                rate = 2 * batch_bytes / seconds
                bandwidth_rows.append([label, name, f"{seconds * 1e6:.0f}", f"{rate / 1e9:.0f}",
                                       f"{copy[label] / seconds:.0%}"])  # fmt: skip
        lines.append(markdown_table(["dtype", "what", "µs", "GB/s (read + write once)", "of the copy's rate"],
                                    bandwidth_rows))  # fmt: skip
    markdown = "\n".join(lines)
    if not args.quick:  # a smoke run must not replace the figures of a real one
        write_section("ops", markdown)
    print(markdown)


def kornia_main(args: argparse.Namespace) -> None:
    """Each of ``KORNIA_OPS`` by hand and through dalaug's operator path, interleaved; the ratios
    side by side per dtype. Writes section "ops-kornia" (CPU or GPU, whichever runs it)."""
    import kornia

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    batch = args.batch or (256 if cuda else 64)
    rounds = args.rounds or 20
    g = torch.Generator().manual_seed(0)
    base = torch.rand(batch, 3, 224, 224, generator=g)  # kornia's [0, 1] range
    targets = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)
    load_before = os.getloadavg()[0]
    scale, unit = (1e6, "µs") if cuda else (1e3, "ms")
    header = ["kornia op"]
    for label in DTYPES:
        header += [f"{label} by hand ({unit})", f"{label} in dalaug ({unit})", f"{label} dalaug / hand"]
        if cuda:
            header += [f"{label} syncs/call by hand", f"{label} syncs/call in dalaug"]
    rows = []
    for name in KORNIA_OPS:
        by_hand, in_dalaug = runners = kornia_contestants(name)
        row: list[object] = [name]
        for dtype in DTYPES.values():
            images = base.to(device, dtype)
            times, _ = time_interleaved(runners, images, targets, rounds, args.warmup)
            hand, ours = times[by_hand.name], times[in_dalaug.name]
            row += [f"{hand * scale:.2f}", f"{ours * scale:.2f}", f"**{ours / hand:.2f}**"]
            if cuda:
                row += [f"{syncs_per_call(r, images, targets):.1f}" for r in runners]
        rows.append(row)
    load_after = os.getloadavg()[0]
    command = " ".join(["python -m benchmarks.bench_ops", *sys.argv[1:]])
    lines = [
        "## kornia's augmentations through dalaug's operators (`benchmarks/bench_ops.py --kornia`)",
        "",
        f"`{command}` on {machine()}, kornia {kornia.__version__}; batch {batch}x3x224x224 in [0, 1], "
        f"{NUM_CLASSES} classes; median of {rounds} interleaved rounds after {args.warmup} warm-up calls "
        f"({unit}; {'CUDA events' if cuda else 'wall time'}). By hand: `module(images)`, kornia drawing "
        "from torch's global RNG in the batch's dtype. In dalaug: the same module in "
        "`Loader(operators=[module])`'s path, `apply_operators` (soft targets, then `KorniaOp`: a seed from "
        "the operator generator, kornia's draw inside `fork_rng`, float32 compute for bf16, the memory "
        "format restored). "
        + ("syncs/call: `torch.cuda.set_sync_debug_mode('warn')` warnings per call. " if cuda else "")
        + f"Load average (1 min) before/after: {load_before:.1f}/{load_after:.1f} on {os.cpu_count()} "
        "logical CPUs.",
        "",
        markdown_table(header, rows),
    ]
    markdown = "\n".join(lines)
    write_section("ops-kornia", markdown)
    print(markdown)


if __name__ == "__main__":
    main()

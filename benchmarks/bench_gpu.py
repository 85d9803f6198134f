"""dalaug on a GPU: the loader against the pipelines people write by hand, and ResNet-50 fed by each.

Three measurements, side by side in one process on one data set (ImageNet-like JPEGs: random crops of
real photos, short side 256-512), batch 256, crop 224:

1. **Loaders** (images/s and CPU-ms per image of the whole process tree, DataLoader workers
   included): dalaug at its defaults and with 16 threads; a hand-written DALI pipeline as DALI's
   ResNet-50 example writes it (``readers.file`` -> ``decoders.image_random_crop`` on the GPU with
   the example's nvJPEG padding hints -> ``resize`` -> ``crop_mirror_normalize``) at the example's
   default of 4 threads and at dalaug's default thread count; torchvision's ImageFolder + DataLoader
   (16 workers, pinned memory). Each without a policy and with AutoAugment (dalaug's and
   torchvision's are the paper's ImageNet policy; DALI's ``auto_augment_image_net`` is the
   EfficientNet "v0" policy, a similar load). Every loader is one stream: one epoch to warm up, two
   timed. The DataLoader iterates one sampler spanning the whole stream, so its workers start once
   as DALI's threads do (per-epoch iterators would add a ramp-up of one batch per worker at every
   epoch start), and its windows are whole waves of its workers (16 batches to warm up, 32 timed).
2. **ResNet-50 training** (torchvision, bf16 autocast, channels_last, SGD, batch 256) on synthetic
   data already on the GPU (the ceiling), fed by dalaug (AutoAugment, bf16 channels_last output,
   with and without ``dalaug.Mixup(alpha=0.2)``), fed by the hand-written DALI pipeline (DALI's
   ``auto_augment_image_net``, dalaug's default thread count, float32 NCHW made channels_last) and
   fed by torchvision's DataLoader (AutoAugment) with timm's Mixup. Each as a fraction of the
   synthetic rate; 16 steps to warm up, 32 timed.
3. **Host syncs per loader batch**, as ``torch.cuda.set_sync_debug_mode("warn")`` sees them (syncs
   made inside DALI's own library are not visible to it), over 20 batches after the first epoch.

On a CUDA machine it writes the ``gpu`` section of BENCHMARKS.md (GPU, driver, torch, DALI); without
CUDA it runs on the CPU and only prints (``--quick``: a few small images, to show that it runs).

Run: ``python -m benchmarks.bench_gpu [--images 2560] [--batch 256] [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.auto_aug import auto_augment
from nvidia.dali.plugin.base_iterator import LastBatchPolicy
from nvidia.dali.plugin.pytorch import DALIGenericIterator

import dalaug
from benchmarks.report import host_syncs, markdown_table, write_section
from dalaug.datasets import write_photo_folder

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]
MEAN = [255 * m for m in dalaug.IMAGENET_MEAN]
STD = [255 * s for s in dalaug.IMAGENET_STD]
EXAMPLE_THREADS = 4  # DALI's ResNet-50 example: --workers defaults to 4
# nvJPEG padding hints of DALI's ResNet-50 example (docs/examples/use_cases/pytorch/resnet50).
EXAMPLE_DECODER_HINTS = dict(device_memory_padding=211025920, host_memory_padding=140544512)


# --- the data set and the CPU clock ---------------------------------------------------------------


def photo_folder(root: Path, images: int, short_side: tuple[int, int] = (256, 512)) -> Path:
    """An ImageNet-like JPEG folder, written once (into a temporary name, so a broken-off write is
    never mistaken for a finished one) and reused by later runs."""
    if not root.exists():
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        write_photo_folder(partial, images, num_classes=10, short_side=short_side)
        os.replace(partial, root)
    return root


def tree_cpu_seconds() -> float:
    """CPU seconds of this process (all threads), its reaped children and its live descendants
    (a DataLoader's workers live until their iterator is done: os.times alone would miss them)."""
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    tick = os.sysconf("SC_CLK_TCK")
    for pid in _descendants(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile: counted in children_* once reaped
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _descendants(pid: int) -> list[int]:
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            for child in map(int, children.read_text().split()):
                found += [child, *_descendants(child)]
        except OSError:
            continue
    return found


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the loaders, each a stream of (images, targets) on the device --------------------------------


def dalaug_batches(root: Path, args: argparse.Namespace, epochs: int, **options) -> Batches:
    loader = dalaug.Loader(root, args.batch, train=True, crop=args.crop, device=args.device, seed=0,
                           **options)  # fmt: skip
    return epochs_of(loader, epochs)


def epochs_of(loader: dalaug.Loader, epochs: int) -> Batches:
    """``epochs`` epochs of ``loader`` as one stream; its pipeline is freed when the stream ends."""
    try:
        for _ in range(epochs):
            yield from loader
    finally:
        loader.close()


@pipeline_def(enable_conditionals=True)
def reference_pipeline(root: str, crop: int, autoaugment: bool, on_gpu: bool):
    """The loader DALI's ResNet-50 example writes, optionally with DALI's own AutoAugment."""
    encoded, labels = fn.readers.file(file_root=root, random_shuffle=True, name="Reader")
    decoder = dict(device="mixed", **EXAMPLE_DECODER_HINTS) if on_gpu else dict(device="cpu")
    images = fn.decoders.image_random_crop(
        encoded, output_type=types.RGB, random_area=(0.08, 1.0), random_aspect_ratio=(3 / 4, 4 / 3),
        num_attempts=10, **decoder,
    )  # fmt: skip
    images = fn.resize(images, resize_x=crop, resize_y=crop)
    if autoaugment:
        images = auto_augment.auto_augment_image_net(images, shape=(crop, crop))
    images = fn.crop_mirror_normalize(
        images, dtype=types.FLOAT, output_layout="CHW", crop=(crop, crop), mean=MEAN, std=STD,
        mirror=fn.random.coin_flip(probability=0.5),
    )  # fmt: skip
    return images, labels.gpu() if on_gpu else labels


def dali_batches(root: Path, args: argparse.Namespace, epochs: int, threads: int, policy: str | None
                 ) -> Batches:  # fmt: skip
    on_gpu = args.device.type == "cuda"
    pipe = reference_pipeline(
        str(root), args.crop, policy is not None, on_gpu, batch_size=args.batch, num_threads=threads,
        device_id=args.device.index if on_gpu else None, seed=0,
    )  # fmt: skip
    pipe.build()
    iterator = DALIGenericIterator(
        pipe, ["images", "labels"], reader_name="Reader", last_batch_policy=LastBatchPolicy.DROP,
        auto_reset=True,
    )  # fmt: skip
    for _ in range(epochs):
        for out in iterator:
            yield out[0]["images"], out[0]["labels"].squeeze(-1).long()


def torchvision_batches(root: Path, args: argparse.Namespace, epochs: int, policy: str | None) -> Batches:
    from torchvision import datasets, transforms

    steps = [transforms.RandomResizedCrop(args.crop), transforms.RandomHorizontalFlip()]
    if policy is not None:
        steps.append(transforms.AutoAugment(transforms.AutoAugmentPolicy.IMAGENET))
    steps += [transforms.ToTensor(), transforms.Normalize(dalaug.IMAGENET_MEAN, dalaug.IMAGENET_STD)]
    dataset = datasets.ImageFolder(root, transforms.Compose(steps))
    # One sampler over all the epochs: the workers start once (see the module docstring).
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=epochs * len(dataset))
    loader = torch.utils.data.DataLoader(
        dataset, args.batch, sampler=sampler, drop_last=True, num_workers=args.workers,
        pin_memory=args.device.type == "cuda",
    )  # fmt: skip
    for images, targets in loader:
        yield images.to(args.device, non_blocking=True), targets.to(args.device, non_blocking=True)


# --- 1. loaders -----------------------------------------------------------------------------------


def time_loader(batches: Batches, warmup: int, timed: int, device: torch.device) -> dict[str, float]:
    """Images/s and CPU-ms per image over ``timed`` batches after the first ``warmup``."""
    for _ in range(warmup):
        next(batches)
    _sync(device)
    wall, cpu, count = time.perf_counter(), tree_cpu_seconds(), 0
    for _ in range(timed):
        count += next(batches)[0].shape[0]
    _sync(device)
    wall, cpu = time.perf_counter() - wall, tree_cpu_seconds() - cpu
    batches.close()
    return {"img_s": count / wall, "cpu_ms": 1000 * cpu / count}


def windows(per_epoch: int, wave: int) -> tuple[int, int]:
    """Batches to warm up and to time: at least one epoch and two, in whole waves of ``wave``
    batches. A DataLoader's workers start in step and deliver in waves, one batch each: a window
    that began or ended inside a wave would count batches made before it began, or miss some."""
    warmup = wave * math.ceil(per_epoch / wave)
    return warmup, 2 * warmup


def loader_default_threads(root: Path, device: torch.device) -> int:
    """The DALI thread count dalaug's loader takes by default here (the cores this process may use)."""
    return dalaug.Loader(root, 8, train=True, device=device).num_workers


def compare_loaders(root: Path, args: argparse.Namespace, per_epoch: int) -> list[list[object]]:
    default_threads = loader_default_threads(root, args.device)
    rows = []
    for policy in (None, "autoaugment"):
        configs = [
            ("dalaug, defaults", default_threads, dalaug_batches, dict(policy=policy)),
            ("dalaug, num_threads=16", 16, dalaug_batches, dict(policy=policy, num_threads=16)),
        ]
        for threads in sorted({EXAMPLE_THREADS, default_threads, 16}):
            note = " (DALI example's default)" if threads == EXAMPLE_THREADS else ""
            configs.append((f"hand-written DALI{note}", threads, dali_batches,
                            dict(threads=threads, policy=policy)))  # fmt: skip
        configs.append(("torchvision DataLoader", args.workers, torchvision_batches, dict(policy=policy)))
        results = {}
        for name, threads, batches_of, options in configs:
            warmup, timed = windows(per_epoch, args.workers if batches_of is torchvision_batches else 1)
            batches = batches_of(root, args, math.ceil((warmup + timed) / per_epoch), **options)
            results[name, threads] = result = time_loader(batches, warmup, timed, args.device)
            del batches
            gc.collect()
            print(f"  {policy or 'none':11s} {name:40s} {threads:3d} threads: {result['img_s']:8.0f} img/s "
                  f"{result['cpu_ms']:6.3f} CPU-ms/img", flush=True)  # fmt: skip
        dali = {threads: r for (name, threads), r in results.items() if name.startswith("hand-written")}
        for (name, threads), r in results.items():
            base = None if name.startswith("hand-written") else dali.get(threads)
            speed = f"**{r['img_s'] / base['img_s']:.2f}x**" if base else "—"
            cpu = f"{r['cpu_ms'] / base['cpu_ms']:.2f}x" if base else "—"
            rate, cpu_ms = f"{r['img_s']:,.0f}", f"{r['cpu_ms']:.3f}"
            rows.append([name, policy or "none", threads, rate, cpu_ms, speed, cpu])
    return rows


# --- 2. ResNet-50 fed by each loader --------------------------------------------------------------


def train_rate(model: torch.nn.Module, feed: Batches, args: argparse.Namespace) -> float:
    """Images/s of ResNet-50 training steps (bf16 autocast, SGD) taking their batches from ``feed``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    for step in range(args.warmup_steps + args.steps):
        if step == args.warmup_steps:
            _sync(args.device)
            start = time.perf_counter()
        images, targets = next(feed)
        with torch.autocast(args.device.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(args.device)
    return args.steps * args.batch / (time.perf_counter() - start)


def synthetic_batches(args: argparse.Namespace, num_classes: int) -> Batches:
    images = torch.randn(args.batch, 3, args.crop, args.crop, device=args.device)
    images = images.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    targets = torch.randint(num_classes, (args.batch,), device=args.device)
    return itertools.repeat((images, targets))


def channels_last(batches: Batches) -> Batches:
    """The batches of a loader that delivers NCHW, in the model's memory format."""
    for images, targets in batches:
        yield images.contiguous(memory_format=torch.channels_last), targets


def timm_mixup_batches(root: Path, args: argparse.Namespace, epochs: int, num_classes: int) -> Batches:
    from timm.data import Mixup

    mixup = Mixup(mixup_alpha=0.2, cutmix_alpha=0.0, label_smoothing=0.0, num_classes=num_classes)
    for images, targets in channels_last(torchvision_batches(root, args, epochs, "autoaugment")):
        yield mixup(images, targets)


def compare_training(root: Path, args: argparse.Namespace, per_epoch: int, num_classes: int
                     ) -> list[list[str]]:  # fmt: skip
    import torchvision

    torch.backends.cudnn.benchmark = True
    model = torchvision.models.resnet50(num_classes=num_classes)
    model = model.to(args.device, memory_format=torch.channels_last)
    epochs = math.ceil((args.warmup_steps + args.steps) / per_epoch)
    train_config = dict(policy="autoaugment", dtype=torch.bfloat16, memory_format=torch.channels_last)
    threads = loader_default_threads(root, args.device)
    feeds: list[tuple[str, Callable[[], Batches]]] = [
        ("synthetic data on the device (ceiling)", lambda: synthetic_batches(args, num_classes)),
        ("dalaug, AutoAugment", lambda: dalaug_batches(root, args, epochs, **train_config)),
        ("dalaug, AutoAugment + dalaug.Mixup(alpha=0.2)",
         lambda: dalaug_batches(root, args, epochs, **train_config,
                                operators=[dalaug.Mixup(alpha=0.2, num_classes=num_classes)])),
        (f"hand-written DALI ({threads} threads), DALI's auto_augment_image_net",
         lambda: channels_last(dali_batches(root, args, epochs, threads=threads, policy="autoaugment"))),
        (f"torchvision DataLoader ({args.workers} workers), AutoAugment + timm Mixup(0.2)",
         lambda: timm_mixup_batches(root, args, epochs, num_classes)),
    ]  # fmt: skip
    rows, ceiling = [], None
    for name, make in feeds:
        feed = make()
        rate = train_rate(model, feed, args)
        if hasattr(feed, "close"):
            feed.close()
        del feed
        gc.collect()
        ceiling = ceiling or rate
        print(f"  {name:70s} {rate:8.0f} img/s  {rate / ceiling:6.1%} of synthetic", flush=True)
        rows.append([name, f"{rate:,.0f}", f"**{rate / ceiling:.1%}**"])
    return rows


# --- 3. host syncs --------------------------------------------------------------------------------


def count_syncs(root: Path, args: argparse.Namespace, per_epoch: int, batches: int, **options
                ) -> tuple[float, str]:  # fmt: skip
    """Host syncs per batch that torch reports while the loader delivers ``batches`` batches (after
    one epoch, so the pipeline's build is not counted), and where the first one came from."""
    stream = dalaug_batches(root, args, 2 + math.ceil(batches / per_epoch), **options)
    for _ in range(per_epoch):
        next(stream)
    syncs = host_syncs(lambda: [next(stream) for _ in range(batches)])
    stream.close()
    where = f"{Path(syncs[0].filename).name}:{syncs[0].lineno}" if syncs else "—"
    return len(syncs) / batches, where


def compare_syncs(root: Path, args: argparse.Namespace, per_epoch: int, num_classes: int) -> list[list[str]]:
    configs = [
        ("dalaug, defaults (no policy, int64 targets)", {}),
        ("dalaug, AutoAugment + Mixup, bf16 channels_last (soft targets)",
         dict(policy="autoaugment", dtype=torch.bfloat16, memory_format=torch.channels_last,
              operators=[dalaug.Mixup(alpha=0.2, num_classes=num_classes)])),
    ]  # fmt: skip
    rows = []
    for name, options in configs:
        per_batch, where = count_syncs(root, args, per_epoch, 20, **options)
        print(f"  {name:65s} {per_batch:.2f} host syncs per batch (first at {where})", flush=True)
        rows.append([name, f"**{per_batch:.2f}**", where])
    return rows


# --- the report -----------------------------------------------------------------------------------


def machine_line(args: argparse.Namespace) -> str:
    import nvidia.dali

    cores = len(os.sched_getaffinity(0))
    versions = f"torch {torch.__version__}, DALI {nvidia.dali.__version__}, {cores} cores"
    if args.device.type != "cuda":
        return f"CPU only ({versions})"
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.split()[0]  # fmt: skip
    except (OSError, subprocess.SubprocessError, IndexError):
        driver = "unknown"
    return f"{torch.cuda.get_device_name(args.device)}, driver {driver}, {versions}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2560)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--data", default=None, help="JPEG folder (default: data/bench-gpu-<images>)")
    parser.add_argument("--quick", action="store_true", help="a few small images, to show that it runs")
    args = parser.parse_args()
    command = " ".join(["python -m benchmarks.bench_gpu", *sys.argv[1:]])
    cuda = torch.cuda.is_available()
    args.device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    args.crop, args.workers = 224, 16
    if args.quick:
        args.images, args.batch, args.crop, args.workers = min(args.images, 64), min(args.batch, 8), 32, 2
    # Training steps in whole waves of the DataLoader's workers too (see `windows`).
    args.warmup_steps, args.steps = args.workers, 2 * args.workers
    root = Path(args.data or f"data/bench-gpu-{args.images}")
    started = time.perf_counter()
    photo_folder(root, args.images)
    num_classes = len([d for d in root.iterdir() if d.is_dir()])
    per_epoch = args.images // args.batch
    setting = f"{args.images} JPEGs in {root}, batch {args.batch}, crop {args.crop}"
    print(f"{machine_line(args)}; {setting}", flush=True)

    print("1. loaders (one warm-up epoch, two timed)", flush=True)
    loader_rows = compare_loaders(root, args, per_epoch)
    print("2. ResNet-50 training", flush=True)
    train_rows = compare_training(root, args, per_epoch, num_classes)
    print("3. host syncs per loader batch", flush=True)
    if args.device.type == "cuda":
        sync_rows = compare_syncs(root, args, per_epoch, num_classes)
    else:
        sync_rows = [["(no CUDA: not measured)", "—", "—"]]

    loader_table = markdown_table(
        ["loader", "policy", "threads / workers", "img/s", "CPU-ms per image",
         "img/s vs hand-written DALI, same threads", "CPU per image vs DALI"],
        loader_rows,
    )  # fmt: skip
    train_table = markdown_table(["ResNet-50 fed by", "img/s", "of synthetic"], train_rows)
    sync_table = markdown_table(["loader batch", "host syncs per batch", "first sync at"], sync_rows)
    markdown = (
        f"## On the GPU: dalaug vs hand-written DALI vs torchvision, and ResNet-50 fed by each\n\n"
        f"`{command}` on {machine_line(args)}; date {time.strftime('%Y-%m-%d')}; "
        f"{args.images} ImageNet-like JPEGs (real photos, short side 256-512), batch {args.batch}, "
        f"crop {args.crop}; {time.perf_counter() - started:.0f} s in all. What each row does is in "
        f"the script's docstring.\n\n"
        f"Loaders: one warm-up epoch, two timed (the DataLoader: whole waves of its workers, at "
        f"least as many batches); CPU of the whole process tree (threads, DataLoader "
        f"workers) per image delivered on the device.\n\n{loader_table}\n\n"
        f"ResNet-50 (torchvision, bf16 autocast, channels_last, SGD), {args.warmup_steps} warm-up "
        f"steps, {args.steps} timed.\n\n{train_table}\n\n"
        f'Host syncs per batch seen by `torch.cuda.set_sync_debug_mode("warn")` over 20 batches '
        f"after the first epoch (target 0).\n\n{sync_table}\n"
    )
    print("\n" + markdown, flush=True)
    if args.device.type == "cuda":
        write_section("gpu", markdown)


if __name__ == "__main__":
    main()

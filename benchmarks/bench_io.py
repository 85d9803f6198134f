"""Reading files off the training thread: dalaug's loader against DALI's own file reader (issue 12).

dalaug reads each batch's files in its worker processes (:mod:`dalaug.reading.workers`) and hands the
bytes to DALI; a plain DALI pipeline reads them in its ``fn.readers.file`` thread. Both run the
same graph on the CPU (``decoders.image_random_crop``, ``resize``, ``crop_mirror_normalize``) with
the same number of DALI threads (dalaug's default: the cores this process may use).

1. **The training process's Python CPU per image**, at batch 128 and 256 (``--small-images``
   small JPEGs, short side 128-160; crop 112): of the thread calling ``next()``
   (``time.thread_time()``), and of every Python thread of the process (each one's CPU clock;
   DALI's C++ threads are not Python threads). On a GPU node the training thread is
   Python-bound: every µs of Python the loader runs in its process is taken from it under the
   GIL. Targets: ``next()`` <= 1.5x plain DALI (issue 12), every Python thread <= 1.2x (issue 28).
2. **Images/s to a GPU-bound consumer**, simulated by sleeping ``batch / 3000`` s after each batch
   (a ResNet-50 step on one H100 takes ~3,000 img/s), batch 256, on local files and with 1 ms added
   to every file read (network storage: dalaug's read workers wait 1 ms before each file,
   ``DALAUG_SIMULATED_READ_LATENCY``). DALI's ``readers.file`` reads in C++ and offers no hook to
   slow its reads the same way, so it is shown on local files only. Also each loader's rate with
   no consumer at all (its decode ceiling), so that a shortfall can be told apart: I/O (1 ms below
   local) or decoding (local below 3,000), and dalaug's reader alone (read and check, no decoding)
   on local files and with 1 and 5 ms per read: the I/O ceiling. To keep decoding cheap enough for
   3,000 img/s on few cores, this part uses the small JPEGs and a 112 px crop.
   Target: dalaug >= 2,700 img/s with 1 ms per read.
   Parts 1 and 2 use 8,000 small JPEGs by default: dalaug's reader cuts its tasks (up to 1,024
   samples) so that those ahead span at most an epoch, and fewer images would keep a batch of 256
   a task alone, unlike the epochs of any real data set.
3. **The feed ceiling**: images/s DALI receives from the reading path when it decodes nothing
   (``peek_image_shape`` only), batch 256, ``--images`` ImageNet-like JPEGs: dalaug's reader with
   its worker processes (the default), with ``io_workers=0`` (one reading thread in this process)
   and DALI's ``readers.file``. On a GPU the decoders reach ~27k img/s (an H200, 16 threads): a reading path
   that feeds less, or that holds the GIL the training loop needs, is what stalls the model.

Each stream runs one epoch to warm up, then the timed batches; the configurations alternate over
``--rounds`` and the table shows the median. Run: ``python -m benchmarks.bench_io [--images 2000]
[--small-images 8000] [--quick]`` (``--quick``: a few images, prints only).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from nvidia.dali import fn, pipeline_def

import dalaug
from benchmarks.bench_gpu import Batches, dali_batches, epochs_of, loader_default_threads, photo_folder
from benchmarks.report import machine, markdown_table, write_section
from dalaug.graphs import encoded_samples
from dalaug.reading import workers
from dalaug.reading.reader import TASK_SAMPLES

CONSUMER_RATE = 3000  # images/s the simulated training step takes
READ_DELAY = 0.001  # seconds added to each file read in the "1 ms per read" rows
SLOW_READ_DELAY = 0.005  # and in the "5 ms per read" row: slow network storage
# The rows of dalaug's reader alone (the I/O ceiling) and the latency each adds to a file.
READER_ALONE = {
    "dalaug's reader alone, local files": 0.0,
    "dalaug's reader alone, 1 ms per read": READ_DELAY,
    "dalaug's reader alone, 5 ms per read": SLOW_READ_DELAY,
}
SMALL_CROP = 112
# Images timed in part 1 after an epoch to warm up: 3,500 (14 batches of 256) moved the ratio by
# ±15% from run to run on a shared 2-core machine; 12,000 is ~4 s a stream.
CPU_TIMED_IMAGES = 12_000


def dalaug_batches(root: Path, batch: int, crop: int, epochs: int) -> Batches:
    """dalaug's loader at its defaults on the CPU."""
    return epochs_of(dalaug.Loader(root, batch, train=True, crop=crop, device="cpu", seed=0), epochs)


@contextlib.contextmanager
def read_latency(seconds: float):
    """dalaug's read workers wait ``seconds`` before each file they open, as on network storage
    (new workers start with the setting and stop after)."""
    workers.shutdown()
    os.environ[workers.LATENCY_VARIABLE] = str(seconds)
    try:
        yield
    finally:
        del os.environ[workers.LATENCY_VARIABLE]
        workers.shutdown()


def reader_rate(root: Path, batch: int, epochs: int) -> float:
    """Images/s of dalaug's BatchReader alone (files read and checked by its workers, no
    decoding), called batch after batch as DALI calls it: the I/O ceiling."""
    loader = dalaug.Loader(root, batch, train=True, device="cpu", seed=0)
    reader, per_epoch = loader.reader, len(loader)
    reader.restart((0, 0))
    count = 0
    for step in range((epochs + 1) * per_epoch):
        if step == per_epoch:  # one epoch to warm up
            count, start = 0, time.perf_counter()
        labels = reader(None)[-1]
        reader.take()
        count += len(labels)
    rate = count / (time.perf_counter() - start)
    reader.close()
    return rate


def plain_dali_batches(root: Path, batch: int, crop: int, epochs: int) -> Batches:
    """DALI's ``readers.file`` pipeline doing the same work, with dalaug's default thread count."""
    threads = dalaug.Loader(root, batch, train=True, device="cpu").num_workers
    args = argparse.Namespace(batch=batch, crop=crop, device=torch.device("cpu"))
    return dali_batches(root, args, epochs, threads, policy=None)


# --- 1. the training process's Python CPU ----------------------------------------------------------


def python_threads_cpu() -> dict[int, float]:
    """CPU seconds so far of each Python thread of this process (DALI's C++ threads are not
    Python threads: not counted)."""
    spent = {}
    for thread in threading.enumerate():
        with contextlib.suppress(OSError, RuntimeError):  # a thread that ended meanwhile
            spent[thread.ident] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return spent


def python_cpu(batches: Batches, warmup: int, timed: int) -> tuple[float, float]:
    """CPU-µs per image over ``timed`` batches after ``warmup``: of the thread calling ``next()``
    (``time.thread_time``), and of every Python thread of this process (that one included)."""
    for _ in range(warmup):
        next(batches)
    images, caller, before = 0, 0.0, python_threads_cpu()
    for _ in range(timed):
        start = time.thread_time()
        images += next(batches)[0].shape[0]
        caller += time.thread_time() - start
    after = python_threads_cpu()
    batches.close()
    every = sum(spent - before.get(ident, 0.0) for ident, spent in after.items())
    return 1e6 * caller / images, 1e6 * every / images


def compare_python_cpu(root: Path, images: int, rounds: int, quick: bool) -> list[list[object]]:
    rows = []
    for batch in (128, 256) if not quick else (8, 16):
        per_epoch = images // batch
        warmup, timed = per_epoch, per_epoch if quick else CPU_TIMED_IMAGES // batch
        epochs = 2 + -(-timed // per_epoch)  # the warm-up epoch, the timed batches, one to spare
        runs: dict[str, list[tuple[float, float]]] = {"dalaug": [], "DALI": []}
        streams = {"dalaug": dalaug_batches, "DALI": plain_dali_batches}
        for _ in range(rounds):
            for name, make in streams.items():
                runs[name].append(python_cpu(make(root, batch, SMALL_CROP, epochs), warmup, timed))
            print(f"    batch {batch}: dalaug {runs['dalaug'][-1][1]:.2f}, readers.file "
                  f"{runs['DALI'][-1][1]:.2f} µs/img", flush=True)  # fmt: skip
        (our_caller, ours), (their_caller, theirs) = (
            [statistics.median(run[k] for run in runs[name]) for k in (0, 1)] for name in ("dalaug", "DALI")
        )
        paired = statistics.median(a[1] / b[1] for a, b in zip(runs["dalaug"], runs["DALI"], strict=True))
        print(f"  batch {batch:3d}: dalaug {ours:.2f} µs/img (next() {our_caller:.2f}), readers.file "
              f"{theirs:.2f} (next() {their_caller:.2f}): {ours / theirs:.2f}x (each round's ratio: "
              f"median {paired:.2f}x)", flush=True)  # fmt: skip
        callers = f"{our_caller:.2f}", f"{their_caller:.2f}", f"{our_caller / their_caller:.2f}x"
        every = f"{ours:.2f}", f"{theirs:.2f}", f"**{ours / theirs:.2f}x**", f"{paired:.2f}x"
        rows.append([batch, timed, *callers, *every])
    return rows


# --- 2. images/s to a consumer --------------------------------------------------------------------


def rate(batches: Batches, warmup: int, consumer: bool) -> float:
    """Images/s after ``warmup`` batches; with ``consumer``, a sleep of batch/3000 s follows each."""
    for _ in range(warmup):
        next(batches)
    count, start = 0, time.perf_counter()
    for images, _ in batches:
        count += images.shape[0]
        if consumer:
            time.sleep(images.shape[0] / CONSUMER_RATE)
    return count / (time.perf_counter() - start)


def compare_rates(
    root: Path, images: int, batch: int, epochs: int, rounds: int
) -> dict[tuple[str, bool], float]:
    per_epoch = images // batch
    streams: dict[str, Callable[[], Batches]] = {
        "dalaug, local files": lambda: dalaug_batches(root, batch, SMALL_CROP, epochs + 1),
        "dalaug, 1 ms per read": lambda: dalaug_batches(root, batch, SMALL_CROP, epochs + 1),
        "DALI readers.file, local files": lambda: plain_dali_batches(root, batch, SMALL_CROP, epochs + 1),
    }
    runs: dict[tuple[str, bool], list[float]] = {}
    for _ in range(rounds):
        for consumer in (False, True):
            for name, make in streams.items():
                with read_latency(READ_DELAY if "1 ms" in name else 0.0):
                    runs.setdefault((name, consumer), []).append(rate(make(), per_epoch, consumer))
                print(f"  {name:32s} {'consumer' if consumer else 'no consumer':11s} "
                      f"{runs[name, consumer][-1]:7.0f} img/s", flush=True)  # fmt: skip
        for name, delay in READER_ALONE.items():
            with read_latency(delay):
                runs.setdefault((name, False), []).append(reader_rate(root, batch, 3 * epochs))
            print(f"  {name:36s} {runs[name, False][-1]:7.0f} img/s", flush=True)
    return {key: statistics.median(values) for key, values in runs.items()}


# --- 3. the feed ceiling ---------------------------------------------------------------------------


@pipeline_def
def _feed_only(files: list[str] | None, source):
    """The reading path and nothing after it (``peek_image_shape`` parses only the header)."""
    if source is None:
        encoded, labels = fn.readers.file(files=files, labels=list(range(len(files))), random_shuffle=True)
    else:
        encoded, labels = encoded_samples(source)
    return fn.peek_image_shape(encoded), labels


def feed_rate(root: Path, batch: int, batches: int, io_workers: int | None) -> tuple[float, float]:
    """(images/s DALI receives, training-thread CPU-ms per batch) from dalaug's reader with
    ``io_workers`` (None: DALI's readers.file), after a warm-up epoch."""
    loader = dalaug.Loader(root, batch, train=True, device="cpu", seed=0, io_workers=io_workers or 0)
    source = None
    if io_workers is not None:
        reader = loader.reader
        reader.restart((0, 0))

        def source(info):  # as the loader uses it: hand a batch over, drop it once it is out
            if reader.issued:
                reader.take()
            return reader(info)

    pipe = _feed_only(list(loader.samples.paths), source, batch_size=batch, num_threads=loader.num_workers,
                      device_id=None, prefetch_queue_depth=2)  # fmt: skip
    pipe.build()
    for _ in range(len(loader)):
        pipe.run()
    start, cpu = time.perf_counter(), time.thread_time()
    for _ in range(batches):
        pipe.run()
    seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu
    del pipe
    loader.reader.close()
    return batches * batch / seconds, 1000 * cpu / batches


def compare_feeds(root: Path, batch: int, batches: int, rounds: int) -> list[list[object]]:
    feeds = {"dalaug, 4 read workers (default)": 4, "dalaug, io_workers=0 (a thread of this process)": 0,
             "DALI readers.file": None}  # fmt: skip
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in feeds}
    for _ in range(rounds):
        for name, io_workers in feeds.items():
            runs[name].append(feed_rate(root, batch, batches, io_workers))
            rate, ms = runs[name][-1]
            print(f"  {name:48s} {rate:8.0f} img/s, {ms:.2f} ms/batch", flush=True)
    best = statistics.median(rate for rate, _ in runs["DALI readers.file"])
    rows = []
    for name in feeds:
        rate, ms = (statistics.median(values) for values in zip(*runs[name], strict=True))
        rows.append([name, f"{rate:,.0f}", f"{rate / best:.2f}x", f"{ms:.2f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000, help="ImageNet-like JPEGs (part 3)")
    parser.add_argument("--small-images", type=int, default=8000, help="small JPEGs (parts 1 and 2)")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs of each images/s stream")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of every comparison")
    parser.add_argument("--quick", action="store_true", help="a few images, to show that it runs")
    args = parser.parse_args()
    command = " ".join(["python -m benchmarks.bench_io", *sys.argv[1:]])
    batch = 256
    if args.quick:
        args.images, args.small_images, args.epochs, args.rounds, batch = 64, 64, 1, 1, 16
    started = time.perf_counter()
    photos = photo_folder(Path(f"data/bench-io-{args.images}"), args.images)
    small = photo_folder(
        Path(f"data/bench-io-small-{args.small_images}"), args.small_images, short_side=(128, 160)
    )
    print(f"{machine()}; {args.images} JPEGs in {photos}, {args.small_images} small in {small}", flush=True)

    print(f"1. the training process's Python CPU per image, crop {SMALL_CROP}, small JPEGs", flush=True)
    thread_rows = compare_python_cpu(small, args.small_images, args.rounds, args.quick)
    print(f"2. images/s, batch {batch}, crop {SMALL_CROP}, small JPEGs", flush=True)
    rates = compare_rates(small, args.small_images, batch, args.epochs, args.rounds)
    print(f"3. feed ceiling, batch {batch}, no decoding", flush=True)
    feed_rows = compare_feeds(photos, batch, 8 if args.quick else 60, args.rounds)

    rate_rows = []
    for name in ("dalaug, local files", "dalaug, 1 ms per read", "DALI readers.file, local files"):
        rate_rows.append([name, f"{rates[name, False]:,.0f}", f"**{rates[name, True]:,.0f}**"])
    rate_rows.append(["DALI readers.file, 1 ms per read", "n/a: no hook to slow its C++ reads", "n/a"])
    for name in READER_ALONE:
        rate_rows.append([f"{name} (read + check, no decoding)", f"{rates[name, False]:,.0f}", "—"])
    local, slow = rates["dalaug, local files", True], rates["dalaug, 1 ms per read", True]
    ceiling, io = rates["dalaug, local files", False], rates["dalaug's reader alone, 1 ms per read", False]
    limit = (
        f"dalaug with 1 ms per read delivers {slow:,.0f} img/s to the consumer, {slow / local:.0%} of "
        f"its rate on local files ({local:,.0f}); its decode ceiling here is {ceiling:,.0f} img/s and "
        f"its reader alone, with 1 ms per read, supplies {io:,.0f} img/s ({workers.READS_IN_FLIGHT} "
        f"files in flight per read worker once its files are seen to wait). "
        f"Target >= 2,700 img/s: {'met' if slow >= 2700 else 'not met'}"
        + (" here: decoding, not I/O, is the limit on this machine" if slow < 2700 and ceiling < 2700 else "")
        + "."
    )
    thread_table = markdown_table(
        ["batch", "batches timed", "dalaug next(), CPU-µs/img", "readers.file next()", "ratio",
         "dalaug, every Python thread, CPU-µs/img", "readers.file, every Python thread", "ratio",
         "median of the rounds' ratios"],
        thread_rows,
    )  # fmt: skip
    rate_table = markdown_table(
        ["loader", "no consumer (decode ceiling), img/s", f"{CONSUMER_RATE:,} img/s consumer, img/s"],
        rate_rows,
    )
    feed_table = markdown_table(
        ["reading path", "img/s DALI receives", "vs readers.file", "training-thread CPU-ms per batch"],
        feed_rows,
    )
    threads = loader_default_threads(photos, torch.device("cpu"))
    markdown = (
        f"## Reading files off the training thread: dalaug vs DALI's readers.file (CPU)\n\n"
        f"`{command}` on {machine()}; date {time.strftime('%Y-%m-%d')}; median of {args.rounds} "
        f"alternating rounds; {time.perf_counter() - started:.0f} s in all. Same graph on both "
        f"(image_random_crop, resize, crop_mirror_normalize), dalaug's default DALI threads.\n\n"
        f"The training process's Python CPU per image: of the thread calling `next()` "
        f"(`time.thread_time`), and of every Python thread of the process (each thread's CPU clock; "
        f"DALI's C++ threads are not Python threads), {args.small_images:,} small JPEGs (short side "
        f"128-160), crop {SMALL_CROP}, one warm-up epoch, then the batches the table names timed. "
        f"dalaug's reader reads {TASK_SAMPLES:,} samples a task where the epoch allows. Targets: `next()` "
        f"<= 1.5x (issue 12), every Python thread <= 1.2x (issue 28).\n\n{thread_table}\n\n"
        f"Images/s, batch {batch}, the {args.small_images:,} small JPEGs and a "
        f"{SMALL_CROP} px crop so that decoding is cheap; one warm-up epoch, {args.epochs} timed; "
        f"the consumer sleeps batch/{CONSUMER_RATE} s after each batch.\n\n{rate_table}\n\n{limit}\n\n"
        f"The feed ceiling: images/s a DALI pipeline receives when it decodes nothing "
        f"(`peek_image_shape`), batch {batch}, {args.images:,} ImageNet-like JPEGs, {threads} DALI "
        f"threads. A GPU decodes ~27k img/s (H200, 16 threads): the reading path must feed more, "
        f"and leave the GIL to the training loop.\n\n{feed_table}\n"
    )
    print("\n" + markdown, flush=True)
    if not args.quick:
        write_section("io", markdown)


if __name__ == "__main__":
    main()

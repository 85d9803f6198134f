"""Shards in a bucket: dalaug from moto's S3 (each request delayed) vs the same shards on local disk,
vs LitData reading the same images from the same server in its own format, and DALI's own
``readers.webdataset`` on ``s3://``; the second epoch from the cache; the first batch's wait.

    .venv/bin/python -m benchmarks.bench_bucket [--images 2000] [--delay 0.02] [--rate 3000]

ImageNet-like JPEGs (random crops of real photos, short side 256-400 px) as WebDataset shards,
uploaded to moto's S3 server on 127.0.0.1 behind a proxy that delays every request by ``--delay``
seconds and logs it. Each run is a process of its own (its RSS, its workers), with a consumer that
takes at most ``--rate`` img/s; the table's ratios are against dalaug from local disk, in the same run.
Peers that cannot run here are listed with why. Writes its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import bucket_servers as servers
from benchmarks.report import machine, markdown_table, write_section

CROP = 224
BATCH = 64


def consume(batches, rate: float, count: int) -> dict:
    """Take batches at most ``rate`` img/s; the times and RSS of one epoch."""
    start = time.time()
    first, done, due = None, 0, time.perf_counter()
    for images in batches:
        if first is None:
            first = time.time()
        done += len(images)
        due += len(images) / rate
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        if done >= count:
            break
    end = time.time()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    steady = (done - BATCH) / (end - first) if first and end > first else 0.0  # after the first batch
    return {"start": start, "first": first, "end": end, "images": done, "img_s": steady,
            "rss_mb": rss}  # fmt: skip


def run_dalaug(source: str, epochs: int, rate: float, count: int) -> dict:
    import dalaug

    built = time.time()
    loader = dalaug.Loader(source, BATCH, train=True, crop=CROP, device="cpu", io_workers=4, seed=0)
    ready = time.time()
    out = []
    for _ in range(epochs):
        out.append(consume((images for images, _ in loader), rate, count))
    return {"built": built, "ready": ready, "epochs": out}


def run_litdata(source: str, epochs: int, rate: float, count: int) -> dict:
    import litdata
    import torch
    import torchvision.transforms.v2 as T
    from torchvision.io import decode_jpeg

    transform = T.Compose([T.RandomResizedCrop(CROP, antialias=True), T.RandomHorizontalFlip()])

    class Images(litdata.StreamingDataset):
        def __getitem__(self, index):
            data, label = super().__getitem__(index)
            image = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            return transform(image).float(), label

    built = time.time()
    cache = tempfile.mkdtemp(prefix="litdata-cache-")
    dataset = Images(source, shuffle=True, cache_dir=cache)
    loader = litdata.StreamingDataLoader(dataset, batch_size=BATCH, num_workers=2)
    ready = time.time()
    out = [consume((images for images, _ in loader), rate, count) for _ in range(epochs)]
    return {"built": built, "ready": ready, "epochs": out}


def run_dali(urls: list[str], indexes: list[str], epochs: int, rate: float, count: int) -> dict:
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=BATCH, num_threads=2, device_id=None)
    def pipe():
        jpegs, _ = fn.readers.webdataset(paths=urls, index_paths=indexes, ext=["jpg", "cls"],
                                         random_shuffle=True, name="reader",
                                         missing_component_behavior="error")  # fmt: skip
        images = fn.decoders.image_random_crop(jpegs, output_type=types.RGB)
        images = fn.resize(images, resize_x=CROP, resize_y=CROP)
        return fn.crop_mirror_normalize(images, mirror=fn.random.coin_flip(), dtype=types.FLOAT)

    built = time.time()
    dali = pipe()
    dali.build()
    ready = time.time()

    def batches():
        while True:
            (images,) = dali.run()
            yield range(len(images))

    return {"built": built, "ready": ready, "epochs": [consume(batches(), rate, count) for _ in range(epochs)]}  # noqa: E501


def child(args) -> None:
    spec = json.loads(args.child)
    runner = {"dalaug": run_dalaug, "litdata": run_litdata, "dali": run_dali}[spec.pop("kind")]
    print("RESULT " + json.dumps(runner(**spec)), flush=True)


def launch(spec: dict, env: dict, timeout: float = 900) -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_bucket", "--child", json.dumps(spec)]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    for line in run.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError((run.stderr or run.stdout)[-1500:])


def requests_between(proxy, start: float, end: float, part: str) -> int:
    return sum(1 for t, method, path in list(proxy.log) if start <= t <= end and method == "GET" and part in path)  # noqa: E501


def first_request(proxy, after: float, part: str) -> float | None:
    times = [t for t, method, path in list(proxy.log) if t >= after and part in path]
    return min(times) if times else None


def make_litdata(folder: Path, images: list[bytes], labels: list[int]) -> Path:
    """The images in LitData's own format (its chunk writer, in this process: optimize() spawns
    workers that re-import the calling script)."""
    from litdata.streaming.writer import BinaryWriter

    out = folder / "litdata"
    out.mkdir()
    writer = BinaryWriter(str(out), chunk_bytes="16MB")
    for i, item in enumerate(zip(images, labels, strict=True)):
        writer[i] = item
    writer.done()
    writer.merge()
    return out


def _last_error(error: BaseException) -> str:
    """The line of a child's traceback that says what failed."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if "Error" in line or "error" in line] or lines or [repr(error)]
    return useful[-1][:300]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--rate", type=float, default=3000.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.child:
        return child(args)
    from dalaug.datasets import write_photo_folder

    work = Path(tempfile.mkdtemp(prefix="bench-bucket-"))
    photos = write_photo_folder(work / "photos", args.images, num_classes=10, short_side=(256, 400))
    files = sorted(photos.glob("*/*.jpg"))
    classes = sorted({f.parent.name for f in files})
    images, labels = [f.read_bytes() for f in files], [classes.index(f.parent.name) for f in files]
    shards = servers.write_shards(work / "wds", images, labels, args.shards)
    moto, upstream = servers.start_moto()
    plain = f"http://{upstream[0]}:{upstream[1]}"
    servers.upload(plain, "bench", shards, prefix="wds/")
    proxy = servers.Proxy(upstream, delay=args.delay)
    env = dict(os.environ, **servers.s3_environment(proxy.url), DALAUG_CACHE=str(work / "cache"))
    count, epochs = args.images, 2
    spec = {"epochs": epochs, "rate": args.rate, "count": count}
    rows, notes, results = [], [], {}

    results["local"] = launch(dict(spec, kind="dalaug", source=str(work / "wds")), env)
    shutil.rmtree(work / "cache", ignore_errors=True)
    results["cold"] = launch(dict(spec, kind="dalaug", source="s3://bench/wds/"), env)
    for cached in (work / "cache" / "shards").glob("*.tar"):
        cached.unlink()  # the indexes stay: this run's epoch fetches every shard through the workers
    results["streamed"] = launch(dict(spec, kind="dalaug", source="s3://bench/wds/"), env)
    try:
        lit = make_litdata(work, images, labels)
        servers.upload(plain, "litdata", sorted(lit.iterdir()), prefix="train/")
        results["litdata"] = launch(dict(spec, kind="litdata", source="s3://litdata/train"), env)
    except Exception as error:  # a peer that fails is reported, not fatal
        notes.append(f"LitData: did not run: {_last_error(error)}")
    try:
        import numpy as np  # noqa: F401

        indexes = []
        for shard in shards:
            index = work / "wds" / (shard.name + ".idx")
            subprocess.run([str(Path(sys.executable).parent / "wds2idx"), str(shard), str(index)], check=True,
                           capture_output=True)  # fmt: skip
            indexes.append(str(index))
        urls = [f"s3://bench/wds/{shard.name}" for shard in shards]
        results["dali"] = launch(dict(spec, kind="dali", urls=urls, indexes=indexes), env)
    except Exception as error:
        notes.append(f"DALI readers.webdataset on s3://: did not run: {_last_error(error)}")
    notes.append("Mosaic Streaming: not run: mosaicml-streaming 0.13.0 (the newest) would downgrade the "
                 "venv's numpy (2.4.6 -> 2.1.3) and huggingface_hub (to 0.36.2), which the project's other "
                 "dependencies use; it was not installed in the shared venv")  # fmt: skip

    base = results["local"]["epochs"][0]["img_s"]
    labels_of = {
        "local": "dalaug, shards on local disk", "cold": "dalaug, s3:// cold (index built: shards fetched before batch 1)",  # noqa: E501
        "streamed": "dalaug, s3:// streamed (index cached, shards fetched by the workers during the epoch)",
        "litdata": "LitData StreamingDataLoader (2 workers, torchvision decode), s3://",
        "dali": "DALI readers.webdataset, s3://",
    }  # fmt: skip
    for name, result in results.items():
        part = {"local": None, "cold": "/bench/", "streamed": "/bench/", "litdata": "/litdata/", "dali": "/bench/"}[name]  # noqa: E501
        one, two = result["epochs"][0], result["epochs"][-1]
        asked = first_request(proxy, result["built"], part) if part else None
        wait = f"{one['first'] - asked:.2f}" if asked else "-"
        build = f"{result['ready'] - result['built']:.2f}"
        second = requests_between(proxy, two["start"], two["end"], part) if part else "-"
        rows.append([labels_of[name], f"{one['img_s']:.0f}", f"{one['img_s'] / base:.2f}x", f"{two['img_s']:.0f}",  # noqa: E501
                     second, wait, build, f"{one['rss_mb']:.0f} / {two['rss_mb']:.0f}"])  # fmt: skip
    table = markdown_table(
        ["run", "epoch 1 img/s", "vs local", "epoch 2 img/s", "epoch 2 GETs", "first batch after first request (s)",  # noqa: E501
         "loader built in (s)", "max RSS MiB after epoch 1 / 2"], rows,
    )  # fmt: skip
    text = (
        f"## Shards in a bucket (benchmarks/bench_bucket.py)\n\n{machine()}. {args.images} ImageNet-like JPEGs "  # noqa: E501
        f"(short side 256-400 px) in {args.shards} WebDataset shards on moto's S3 server (127.0.0.1), every "
        f"request delayed {args.delay * 1000:.0f} ms by a proxy that logs it; consumer at most {args.rate:.0f} "  # noqa: E501
        f"img/s; batch {BATCH}, crop {CROP}; each run its own process; two epochs each.\n\n{table}\n\n"
        + "\n".join(f"- {note}" for note in notes)
    )
    print(text)
    if not args.no_write:
        write_section("bench_bucket", text)
    proxy.shutdown()
    proxy.server_close()
    moto.stop()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""WebDataset shards in a bucket (s3:// on moto's server, https:// on a Range server; 127.0.0.1 only):
listing, braces, the cache and its sharing, retries, unreadable shards, clear errors, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch

import dalaug
from benchmarks import bucket_servers as servers
from dalaug.reading import storage, workers
from dalaug.reading.sources import resolve_source

pytest.importorskip("moto")
pytest.importorskip("obstore")
CROP = 32
IMAGES, SHARDS = 48, 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    labels = [i % 3 for i in range(IMAGES)]
    return servers.write_shards(folder, servers.jpegs(IMAGES), labels, SHARDS)


@pytest.fixture(scope="module")
def server(shards):
    moto, upstream = servers.start_moto()
    proxy = servers.Proxy(upstream)
    servers.upload(f"http://{upstream[0]}:{upstream[1]}", "data", shards, prefix="imagenet/train/")
    servers.upload(f"http://{upstream[0]}:{upstream[1]}", "denied", shards[:1])
    # A data set as python -m train --data takes it: train/ and val/ prefixes of shards.
    servers.upload(f"http://{upstream[0]}:{upstream[1]}", "runs", shards, prefix="imagenet/train/")
    servers.upload(f"http://{upstream[0]}:{upstream[1]}", "runs", shards[:1], prefix="imagenet/val/")
    yield proxy
    proxy.shutdown()
    proxy.server_close()
    moto.stop()


@pytest.fixture
def bucket(server, tmp_path, monkeypatch):
    """The proxy in front of moto as the S3 endpoint, a fresh cache, and workers that see both."""
    for name, value in servers.s3_environment(server.url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DALAUG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DALAUG_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("DALAUG_REQUEST_RETRIES", "1")
    monkeypatch.setattr(storage, "_BACKOFF", 0.05)
    storage._stores.clear()
    storage._failed.clear()
    workers.shutdown()  # workers copy the environment when they start
    server.fail.clear()
    server.cut.clear()
    yield server
    workers.shutdown()
    storage._stores.clear()


def epoch_ids(loader) -> list[int]:
    ids = []
    for _ in loader:
        ids += loader.sample_ids.tolist()
    return ids


def test_a_prefix_lists_its_shards_and_braces_name_them(bucket, shards):
    listed = resolve_source("s3://data/imagenet/train/")
    assert sorted(set(listed.paths)) == [f"s3://data/imagenet/train/{s.name}" for s in shards]
    assert len(listed) == IMAGES and listed.streamed
    braced = resolve_source("s3://data/imagenet/train/train-{000001..000002}.tar")
    assert sorted(set(braced.paths)) == [f"s3://data/imagenet/train/{s.name}" for s in shards[1:3]]
    local = resolve_source(str(shards[0].parent / "train-{000000..000001}.tar"))
    assert len(local) == IMAGES // 2 and not local.streamed
    mixed = resolve_source([str(shards[0]), "s3://data/imagenet/train/train-000003.tar"])
    assert len(mixed) == IMAGES // 2
    np.testing.assert_array_equal(listed.labels, resolve_source([str(s) for s in shards]).labels)


def test_the_second_epoch_is_read_from_the_cache_without_a_request(bucket):
    before = bucket.gets("/data/")
    loader = dalaug.Loader("s3://data/imagenet/train/", 8, train=True, crop=CROP, device="cpu", io_workers=2)
    first = epoch_ids(loader)
    assert sorted(first) == list(range(IMAGES))
    fetched = bucket.gets("/data/") - before
    assert fetched == SHARDS  # indexing fetched each shard once; the epoch read them from the cache
    assert sorted(epoch_ids(loader)) == list(range(IMAGES))
    assert bucket.gets("/data/") - before == fetched
    assert not any(name.endswith(".dalaug-idx.npy") for name in _bucket_keys(bucket))  # indexes: cache


def test_an_epoch_streams_each_shard_once_into_the_cache(bucket):
    loader = dalaug.Loader("s3://data/imagenet/train/", 4, train=True, crop=CROP, device="cpu", io_workers=2)
    for cached in (storage.cache_root() / "shards").glob("*.tar"):
        cached.unlink()  # indexed (the indexes stay cached), then evicted: the workers fetch them
    before = bucket.gets("/data/")
    assert sorted(epoch_ids(loader)) == list(range(IMAGES))
    assert bucket.gets("/data/") - before == SHARDS
    assert sorted(epoch_ids(loader)) == list(range(IMAGES))
    assert bucket.gets("/data/") - before == SHARDS


def test_the_cache_keeps_to_its_limit_evicting_the_shards_used_longest_ago(bucket, shards, monkeypatch):
    monkeypatch.setenv(storage.CACHE_LIMIT_VARIABLE, str(2 * shards[0].stat().st_size + 100))
    samples = resolve_source("s3://data/imagenet/train/")
    cached = sorted((storage.cache_root() / "shards").glob("*.tar"))
    assert len(cached) == 2
    assert all(samples.read(i).size for i in range(IMAGES))  # fetched again where evicted
    assert len(list((storage.cache_root() / "shards").glob("*.tar"))) <= 2


def test_a_shard_fetched_while_another_eviction_runs_is_counted(bucket, shards, monkeypatch):
    # An eviction that found another under way used to give way to it; that one had scanned the
    # cache before this shard was in place, and the cache stayed over its limit (4 of 2 shards).
    monkeypatch.setenv(storage.CACHE_LIMIT_VARIABLE, str(2 * shards[0].stat().st_size + 100))
    samples = resolve_source("s3://data/imagenet/train/")
    names = [samples.location(int(start)) for start in samples.shard_starts[:-1]]
    folder = storage.cache_root() / "shards"
    for cached in folder.glob("*.tar"):
        cached.unlink()
    for name in names[:2]:  # the cache full: the next shard must evict the first
        storage.fetch(name)
    with storage._locked(folder / ".evict.lock"):  # another process evicting
        late = threading.Thread(target=storage.fetch, args=(names[2],))
        late.start()
        deadline = time.monotonic() + 30
        while not storage.cached_path(names[2]).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert storage.cached_path(names[2]).exists() and late.is_alive()  # its eviction waits
    late.join(30)
    assert sorted(folder.glob("*.tar")) == sorted(map(storage.cached_path, names[1:3]))


def _bucket_keys(bucket) -> list[str]:
    return [path for method, path in bucket.requests if method == "PUT"]


def test_an_epoch_order_keeps_to_windows_of_shards_and_is_a_function_of_seed_and_epoch(bucket):
    samples = resolve_source("s3://data/imagenet/train/")
    loader = dalaug.Loader(samples, 4, train=True, crop=CROP, device="cpu", seed=3)
    loader.feed.window = 2
    order = loader.feed.order(1)
    shard_of = np.repeat(np.arange(SHARDS), np.diff(samples.shard_starts))
    halves = [set(shard_of[order[: IMAGES // 2]]), set(shard_of[order[IMAGES // 2 :]])]
    assert all(len(h) == 2 for h in halves) and not halves[0] & halves[1]
    np.testing.assert_array_equal(order, loader.feed.order(1))
    assert not np.array_equal(order, loader.feed.order(2))


def test_an_https_source_reads_through_range_requests(bucket, shards):
    server = servers.serve_files(shards[0].parent)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        source = f"{base}/train-{{000000..000003}}.tar"
        loader = dalaug.Loader(source, 8, train=False, crop=CROP, device="cpu")
        assert sorted(epoch_ids(loader)) == list(range(IMAGES))
        with pytest.raises(ValueError, match="cannot be listed"):
            resolve_source(f"{base}/")
    finally:
        server.shutdown()
        server.server_close()


def test_two_processes_share_one_cache_and_fetch_each_shard_once(bucket, tmp_path):
    script = textwrap.dedent("""
        import sys
        from dalaug.reading.sources import resolve_source
        print(len(resolve_source("s3://data/imagenet/train/")))
    """)
    before = bucket.gets("/data/")
    env = dict(os.environ)
    runs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(2)]  # fmt: skip
    assert [run.communicate(timeout=120)[0].strip() for run in runs] == [str(IMAGES)] * 2
    assert bucket.gets("/data/") - before == SHARDS
    assert len(list((tmp_path / "cache" / "shards").glob("*.tar"))) == SHARDS


def test_failed_and_cut_requests_are_retried(bucket):
    bucket.fail["train-000001"] = 2  # two 503s
    bucket.cut["train-000002"] = 1  # a body that ends halfway
    samples = resolve_source("s3://data/imagenet/train/")
    assert len(samples) == IMAGES
    assert bucket.fail["train-000001"] == bucket.cut["train-000002"] == 0


def test_a_shard_that_stays_unreadable_is_named_and_left_out(bucket, caplog):
    samples = resolve_source("s3://data/imagenet/train/")
    for cached in (storage.cache_root() / "shards").glob("*train-000002.tar"):
        cached.unlink()  # indexed, then gone from the cache: the epoch must fetch it again
    bucket.fail["train-000002"] = 10**6
    loader = dalaug.Loader(samples, 4, train=False, crop=CROP, device="cpu", max_bad_fraction=0.3)
    ids = epoch_ids(loader)
    lost = set(range(int(samples.shard_starts[2]), int(samples.shard_starts[3])))
    assert sorted(ids) == sorted(set(range(IMAGES)) - lost)
    bad = loader.bad_samples.items()
    assert all("train-000002.tar" in name and storage.UNFETCHED in why for name, why in bad)
    assert len(loader.bad_samples) == len(lost)
    strict = dalaug.Loader(samples, 4, train=False, crop=CROP, device="cpu", max_bad_fraction=0.1)
    with pytest.raises(dalaug.DecodeError, match="train-000002.tar"):
        epoch_ids(strict)


def test_a_missing_bucket_or_denied_access_is_one_clear_error(bucket):
    with pytest.raises(FileNotFoundError, match="bucket 'nowhere' .* does not exist"):
        dalaug.Loader("s3://nowhere/train/", 8, train=True, crop=CROP, device="cpu")
    bucket.deny.add("denied")
    try:
        with pytest.raises(PermissionError, match="access to 's3://denied/' denied .*AccessDenied"):
            dalaug.Loader("s3://denied/", 8, train=True, crop=CROP, device="cpu")
    finally:
        bucket.deny.clear()
    with pytest.raises(FileNotFoundError, match="no .tar shards under 's3://data/nothing/'"):
        resolve_source("s3://data/nothing/")
    with pytest.raises(FileNotFoundError, match="1 of 2 shards do not exist"):
        resolve_source("s3://data/imagenet/train/train-{000003..000004}.tar")


def test_a_run_resumes_mid_epoch_from_a_bucket(bucket):
    def make():
        return dalaug.Loader("s3://data/imagenet/train/", 4, train=True, crop=CROP, device="cpu", seed=5)

    reference = make()
    batches = [(reference.sample_ids.tolist(), images.clone()) for images, _ in reference]
    interrupted = make()
    iterator = iter(interrupted)
    for _ in range(5):
        next(iterator)
    state = interrupted.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    rest = [(resumed.sample_ids.tolist(), images) for images, _ in resumed]
    assert [ids for ids, _ in rest] == [ids for ids, _ in batches[5:]]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(rest, batches[5:], strict=True))


TINY_RECIPE = """
import dalaug
from train.recipe import Recipe

recipe = Recipe(name="tiny", model="preact_resnet18", model_kwargs={"width": 4}, data=None, crop=16,
                eval_resize=16, scale=(0.5, 1.0), flip=False, batch_size=8, lr=0.05,
                phases=[dalaug.Phase(1, name="clean")], gap_samples=0, seed=0)
"""


def test_python_m_train_takes_a_bucket_prefix_holding_train_and_val_shards(bucket, tmp_path):
    recipe = tmp_path / "tiny.py"
    recipe.write_text(TINY_RECIPE)
    command = [sys.executable, "-m", "train", "--recipe", str(recipe), "--data", "s3://runs/imagenet/",
               "--out", str(tmp_path / "run"), "--device", "cpu"]  # fmt: skip
    before = bucket.gets("/runs/imagenet/train/")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert bucket.gets("/runs/imagenet/train/") - before == SHARDS  # each shard fetched once
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 0 and 0 <= record["top1"] <= 100, record  # evaluated on val/
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"] == "s3://runs/imagenet"
    # Without val/ (or test/) it is refused by name before anything trains.
    command[command.index("--data") + 1] = "s3://runs/imagenet/train"
    refused = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "--data: 's3://runs/imagenet/train' must hold train/ and val/" in (
        refused.stdout + refused.stderr
    ), refused.stderr[-2000:]

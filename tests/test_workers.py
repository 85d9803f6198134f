"""The processes that read and check files for the loaders (dalaug.reading.workers)."""

from __future__ import annotations

import io
import itertools
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

import dalaug
from dalaug.reading import workers
from dalaug.reading.sources import resolve_source

CROP = 32


def epoch_batches(loader: dalaug.Loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images.clone(), labels.clone()) for images, labels in loader]


def table(items: list) -> workers.SampleTable:
    """A sample table of ``items`` ((path, offset, size) each; sample i of class i)."""
    paths, offsets, sizes = zip(*items, strict=True)
    return workers.SampleTable(paths, np.arange(len(items)), offsets, sizes, np.arange(len(items)))


def submit(pool: workers.ReadPool, items: list) -> workers.Pending:
    """``items`` given to ``pool``, as the reader gives them: a table, and ids into it."""
    return pool.submit(table(items), np.arange(len(items)))


def results(chunk: workers.Chunk) -> list[tuple[np.ndarray | None, str | None]]:
    return [(chunk.sample(i), chunk.reasons.get(i)) for i in range(len(chunk))]


def test_worker_processes_give_the_batches_this_process_reads(photo_folder):
    here = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", seed=3, io_workers=0)
    apart = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", seed=3, io_workers=2)
    for (a, y), (b, z) in zip(epoch_batches(here), epoch_batches(apart), strict=True):
        assert torch.equal(a, b) and torch.equal(y, z)
    pids = workers.pool(1).pids()
    assert pids and os.getpid() not in pids


def test_a_chunk_is_read_into_shared_memory_and_bad_samples_are_named(photo_folder, tmp_path):
    samples = resolve_source(photo_folder)
    truncated, text = tmp_path / "cut.jpg", tmp_path / "notes.jpg"
    truncated.write_bytes(samples.read(1)[:500].tobytes())
    text.write_bytes(b"not a picture at all")
    items = [(samples.paths[0], -1, -1), (str(truncated), -1, -1), (str(tmp_path / "gone.jpg"), -1, -1),
             (str(text), -1, -1), (samples.paths[2], -1, -1)]  # fmt: skip
    chunk = submit(workers.pool(1), items).result()
    got = results(chunk)
    assert np.array_equal(got[0][0], samples.read(0)) and got[0][1] is None
    assert np.array_equal(got[4][0], samples.read(2)) and got[4][1] is None
    assert got[1][1].startswith("truncated JPEG") and got[1][0] is None
    assert got[2] == (None, "cannot read: No such file or directory")
    assert got[3] == (None, "not an image (starts with 'not a pi')")
    # One buffer, the samples in order; a bad one has no place (start -1) and no length.
    starts, lengths = chunk.rows[:, 0], chunk.rows[:, 1]
    assert starts[[1, 2, 3]].tolist() == [-1] * 3 and lengths[[1, 2, 3]].tolist() == [0] * 3
    assert 0 == starts[0] < starts[4] and starts[4] + got[4][0].size <= chunk.memory.size
    assert chunk.rows[:, 2].tolist() == [0, 1, 2, 3, 4]  # each sample's label, from the table


def test_a_task_is_only_ids_into_a_table_each_worker_maps_once(photo_folder, tmp_path, monkeypatch):
    samples = resolve_source(photo_folder)
    odd = tmp_path / "caf\udcff \u00e9.jpg"  # a name that is not UTF-8, as a file system may hold
    odd.write_bytes(samples.read(2).tobytes())
    items = [(p, -1, -1) for p in samples.paths[:4]] + [(str(odd), -1, -1)]
    sent, send = [], workers._send

    def recorded(connection, payload, descriptors=()):  # this process's messages to its workers
        sent.append((len(payload), len(descriptors)))
        send(connection, payload, descriptors)

    monkeypatch.setattr(workers, "_send", recorded)
    shared, pool = table(items), workers.ReadPool()
    try:
        pool.ensure(2)
        for ids in ([4, 0], [3], [1, 2, 4], [0]):  # to the two workers in turn
            chunk = pool.submit(shared, np.array(ids)).result()
            expected = [(samples.read(2) if i == 4 else samples.read(i)).tobytes() for i in ids]
            assert not chunk.reasons and [chunk.sample(k).tobytes() for k in range(len(ids))] == expected
            assert chunk.rows[:, 2].tolist() == ids
        # The table went to each worker once, with its first task; a task is a few ids.
        assert [fds for _, fds in sent] == [1, 1, 0, 0] and max(size for size, _ in sent) < 200
    finally:
        pool.close()


def read_slowly(items: list, latency: float, monkeypatch) -> tuple[list, float, int]:
    """One worker reads ``items`` while every open waits ``latency`` s, as on a network file system
    (the benchmarks' knob): the results, the seconds they took and the worker's thread count."""
    monkeypatch.setenv(workers.LATENCY_VARIABLE, str(latency))
    pool = workers.ReadPool()
    try:
        pool.ensure(1)
        submit(pool, items[:1]).result()  # the worker started: its start-up is not timed
        begin = time.perf_counter()
        chunk = submit(pool, items).result()
        return results(chunk), time.perf_counter() - begin, len(os.listdir(f"/proc/{pool.pids()[0]}/task"))
    finally:
        pool.close()


def test_on_storage_whose_opens_wait_a_worker_reads_many_files_at_once(photo_folder, tmp_path, monkeypatch):
    samples = resolve_source(photo_folder)
    text = tmp_path / "notes.jpg"
    text.write_bytes(b"not a picture at all")
    items = [(samples.paths[i % len(samples)], -1, -1) for i in range(64)]
    items[5], items[40] = (str(tmp_path / "gone.jpg"), -1, -1), (str(text), -1, -1)
    results, elapsed, threads = read_slowly(items, 0.02, monkeypatch)
    for i, (data, reason) in enumerate(results):  # in order, bad samples named in place
        if i == 5:
            assert (data, reason) == (None, "cannot read: No such file or directory")
        elif i == 40:
            assert data is None and reason.startswith("not an image")
        else:
            assert reason is None and np.array_equal(data, samples.read(i % len(samples)))
    # One file at a time would take 20 ms per file opened at the least (a bound, not a speed target).
    assert elapsed < len({path for path, _, _ in items}) * 0.02
    assert threads == 1 + workers.READS_IN_FLIGHT


def test_reads_spread_over_threads_land_in_place(photo_folder, tmp_path, monkeypatch):
    # Both steps on the worker's threads (as on storage whose every file waits), in this process.
    monkeypatch.setattr(workers, "_SLOW_FILE", 0.0)
    samples = resolve_source(photo_folder)
    truncated, text = tmp_path / "cut.jpg", tmp_path / "notes.jpg"
    truncated.write_bytes(samples.read(1)[:500].tobytes())
    text.write_bytes(b"not a picture at all")
    whole = samples.read(3).tobytes()
    (tmp_path / "both.bin").write_bytes(whole + whole)  # two samples at offsets of one file
    items = [(samples.paths[i], -1, -1) for i in range(40)]
    items[0:0] = [(str(tmp_path / "gone.jpg"), -1, -1), (str(truncated), -1, -1)]  # bad ones first
    items[20:20] = [(str(text), -1, -1), (str(tmp_path / "both.bin"), len(whole), len(whole)),
                    (str(tmp_path / "both.bin"), 0, len(whole))]  # fmt: skip
    buffers = workers._Buffers()
    with ThreadPoolExecutor(workers.READS_IN_FLIGHT) as threads:
        buffer, size, places = workers._read_chunk(items, buffers, threads)
        assert len(threads._threads) > 1
    memory = buffers.memory[buffer][1]
    for item, place in zip(items, places, strict=True):
        expected, reason = workers.read_checked(workers.read_file, *item)
        if expected is None:
            assert place == (None, reason)
        else:
            start, length = place
            assert start + length <= size and bytes(memory[start : start + length]) == expected.tobytes()


def test_the_samples_of_a_shard_share_one_open(photo_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("DALAUG_CACHE", str(tmp_path / "cache"))
    photos = resolve_source(photo_folder)
    shard = tmp_path / "shard-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(64):
            image = photos.read(i % len(photos)).tobytes()
            for name, data in ((f"{i:06d}.jpg", image), (f"{i:06d}.cls", b"1")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    samples = resolve_source(shard)
    items = [(samples.paths[i], int(samples.offsets[i]), int(samples.sizes[i])) for i in range(64)]
    results, elapsed, _ = read_slowly(items, 0.05, monkeypatch)
    assert all(np.array_equal(data, photos.read(i % len(photos))) for i, (data, _) in enumerate(results))
    # An open per sample would take (2 + 62 / 8) x 50 ms at the least, 8 at a time (a bound).
    assert elapsed < 0.4


def test_dali_is_handed_the_bytes_where_the_workers_read_them(photo_folder):
    loader = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", seed=0, io_workers=1)
    reader = loader.reader
    reader.restart((0, 0))
    try:
        whole, rows = reader(None)  # as DALI calls it: the batch's buffer, and a row per sample
        ids, rows = reader.issued[0].ids, rows.as_array()
        assert len(whole) == len(rows) == 8 and not whole.is_dense_tensor()
        # No copy: every sample is the worker's shared buffer itself, which holds them back to back.
        pointers = {whole[i].data_ptr() for i in range(len(whole))}
        running = [slot.worker for slot in workers.pool(1)._slots if slot.worker]
        mapped = [np.frombuffer(memory, np.uint8) for worker in running for memory in worker.buffers.values()]
        assert len(pointers) == 1
        pointer = pointers.pop()
        assert any(m.ctypes.data == pointer for m in mapped)
        buffer = np.array(whole.at(0))
        samples = [buffer[start : start + length].tobytes() for start, length, _ in rows]
        assert samples == [loader.samples.read(int(i)).tobytes() for i in ids]
        assert rows[:, 2].tolist() == loader.samples.labels[ids].tolist()
        assert rows[:, 0].tolist() == np.cumsum([0, *rows[:-1, 1]]).tolist()
    finally:
        reader.close()


def test_a_task_reads_several_batches_into_one_buffer_and_the_first_after_a_jump_one(photo_folder):
    # A task costs the training process a message each way and their Python: one a batch was a
    # third more Python per image than DALI's readers.file (issue 28). The first batch after a
    # jump is a task alone, so that it comes as soon as a batch can be read.
    loader = dalaug.Loader(photo_folder, 4, train=True, crop=CROP, device="cpu", seed=0, io_workers=1)
    reader, per_epoch = loader.reader, len(loader)  # 15 batches: 2 tasks ahead of 7 (half an epoch each)

    def runs(count: int) -> list[int]:
        """Lengths of the runs of consecutive batches handed over in one buffer."""
        pointers = [reader(None)[0][0].data_ptr() for _ in range(count)]  # each kept (reader.issued)
        return [len(list(run)) for _, run in itertools.groupby(pointers)]

    try:
        reader.restart((0, 0))
        assert per_epoch == 15 and runs(15) == [1, 7, 7]
        reader.seek((3, 5))
        assert runs(8) == [1, 7] and reader.cursor == (3, 13)
    finally:
        reader.close()


def test_no_thread_of_the_training_process_waits_on_the_workers(photo_folder):
    # The thread that needs a batch receives it; a thread per worker, woken for every batch, cost
    # the training process more CPU than the rest of the loader (benchmarks/bench_io.py).
    before = {thread.name for thread in threading.enumerate()}
    loader = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", seed=0, io_workers=2)
    for _ in range(2):
        epoch_batches(loader)
    started = {thread.name for thread in threading.enumerate()} - before
    assert workers.pool(2).pids() and not [name for name in started if name.startswith("dalaug")]


def test_a_task_and_a_reply_longer_than_a_socket_message_go_in_parts(tmp_path):
    path = tmp_path / "tiny.jpg"
    PIL.Image.new("RGB", (8, 8), (200, 30, 40)).save(path)
    photo = np.fromfile(path, np.uint8)
    count = 20_000  # 160 KB of ids, 480 KB of rows: more than one message holds
    assert 8 * count > workers._MESSAGE
    chunk = submit(workers.pool(1), [(str(path), -1, -1)] * count).result()
    assert not chunk.reasons and all(np.array_equal(chunk.sample(i), photo) for i in (0, 1, count - 1))
    assert chunk.rows[:, 0].tolist() == list(range(0, count * photo.size, photo.size))


def test_memory_is_reused_once_the_batches_are_gone(photo_folder):
    samples = resolve_source(photo_folder)
    items = [(samples.paths[i], -1, -1) for i in range(32)]
    pool = workers.ReadPool()
    try:
        pool.ensure(1)
        for _ in range(20):  # each result dropped before the next: one buffer serves them all
            chunk = submit(pool, items).result()
            assert not chunk.reasons
            del chunk
        assert pool.buffers() == [1]
        held = [submit(pool, items).result() for _ in range(3)]  # kept: three buffers
        assert pool.buffers() == [3] and len(held) == 3
    finally:
        pool.close()


def test_a_worker_that_dies_is_replaced_and_the_epochs_go_on(photo_folder):
    options = dict(train=True, crop=CROP, device="cpu")
    here = dalaug.Loader(photo_folder, 8, io_workers=0, **options)
    reference = [batch for _ in range(3) for batch in epoch_batches(here)]
    loader, pool = dalaug.Loader(photo_folder, 8, io_workers=1, **options), workers.pool(1)
    batches, killed = [], []
    for epoch in range(3):
        for step, (images, labels) in enumerate(loader):
            if epoch == 0 and step == 2:  # the reads ahead run into the next epochs: those need a worker
                killed = pool.pids()
                for pid in killed:
                    os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
            batches.append((images.clone(), labels.clone()))
    assert killed and pool.pids() and not set(killed) & set(pool.pids())
    for (a, y), (b, z) in zip(reference, batches, strict=True):
        assert torch.equal(a, b) and torch.equal(y, z)


def test_a_worker_imports_neither_torch_nor_dali():
    # It starts in a fraction of a second and holds a few MB, however many loaders a rank builds.
    code = "import sys, dalaug.reading.workers; print(sorted({'torch', 'nvidia.dali'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_io_workers_must_be_a_count(photo_folder):
    for wrong in (-1, 1.5, True):
        with pytest.raises(ValueError, match="io_workers: expected an int >= 0"):
            dalaug.Loader(photo_folder, 8, train=True, io_workers=wrong)


class Unsendable:
    def __reduce__(self):
        raise TypeError("cannot be sent to a worker")


def test_a_task_that_fails_in_an_unexpected_way_raises_instead_of_hanging(photo_folder):
    samples = resolve_source(photo_folder)
    pool = workers.ReadPool()
    try:
        pool.ensure(1)
        with pytest.raises(TypeError, match="cannot be sent"):
            pool.submit(table([(samples.paths[0], -1, -1)]), np.arange(1), (Unsendable(),)).result()
        assert not submit(pool, [(samples.paths[0], -1, -1)]).result().reasons  # still serving
    finally:
        pool.close()


def run_script(code: str, cwd) -> str:
    root = str(Path(workers.__file__).resolve().parents[2])
    script = f"import sys; sys.path.insert(0, {root!r})\n" + textwrap.dedent(code)
    out = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_workers_run_this_dalaug_whatever_the_working_directory_holds(photo_folder, tmp_path):
    (tmp_path / "dalaug").mkdir()
    (tmp_path / "dalaug" / "__init__.py").write_text("raise ImportError('the wrong dalaug')\n")
    out = run_script(f"""
        from dalaug.reading import workers
        from dalaug.reading.sources import resolve_source
        samples = resolve_source({str(photo_folder)!r})
        columns = samples.offsets, samples.sizes, samples.labels
        table = workers.SampleTable(samples.paths, range(len(samples)), *columns)
        print(workers.pool(1).submit(table, [0]).result().reasons)
    """, cwd=tmp_path)  # fmt: skip
    assert out.strip() == "{}"


def test_a_forked_child_reads_with_workers_of_its_own(photo_folder, tmp_path):
    out = run_script(f"""
        import os
        from dalaug.reading import workers
        from dalaug.reading.sources import resolve_source
        samples = resolve_source({str(photo_folder)!r})
        columns = samples.offsets, samples.sizes, samples.labels
        table = workers.SampleTable(samples.paths, range(len(samples)), *columns)
        read = lambda: workers.pool(1).submit(table, [0]).result().reasons
        assert not read()
        child = os.fork()
        if child == 0:
            os._exit(1 if read() else 0)
        assert os.waitpid(child, 0)[1] == 0 and not read()
        print("ok")
    """, cwd=tmp_path)  # fmt: skip
    assert out.strip() == "ok"


def test_the_lazy_package_still_offers_every_public_name():
    import dalaug.reading.verification  # the module importing first must not shadow dalaug.verify()

    assert all(getattr(dalaug, name) is not None for name in dalaug.__all__)
    assert callable(dalaug.verify) and dalaug.verify is dalaug.reading.verification.verify
    with pytest.raises(AttributeError, match="no attribute 'Loadr'"):
        dalaug.Loadr  # noqa: B018


def test_a_read_that_hangs_raises_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "_REPLY_TIMEOUT", 1.0)
    fifo = tmp_path / "stuck.jpg"
    os.mkfifo(fifo)  # opening it waits for a writer that never comes, as a hung mount would
    pool = workers.ReadPool()
    try:
        pool.ensure(1)
        with pytest.raises(TimeoutError, match=f"from {fifo} on in 1 s: is the storage answering"):
            submit(pool, [(str(fifo), -1, -1)]).result()
    finally:
        pool.close()


def test_a_loader_used_in_a_forked_child_says_so_instead_of_hanging(photo_folder, tmp_path):
    out = run_script(f"""
        import os
        import dalaug
        loader = dalaug.Loader({str(photo_folder)!r}, 8, train=True, crop=32, device="cpu")
        next(iter(loader))  # the pipeline and its threads live in this process
        child = os.fork()
        if child == 0:
            try:
                next(iter(loader))
            except RuntimeError as error:
                print("child:", error, flush=True)
            os._exit(0)
        os.waitpid(child, 0)
        print("parent:", next(iter(loader))[0].shape)
    """, cwd=tmp_path)  # fmt: skip
    assert "child: this Loader's pipeline was built in process" in out
    assert "parent: torch.Size([8, 3, 32, 32])" in out

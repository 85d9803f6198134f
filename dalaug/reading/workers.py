"""Worker processes that read and check samples' bytes, so that no file is read under this
process's GIL.

Reading a file from Python costs ~15 µs of interpreter time and checking its bytes ~6 µs more
(:func:`~dalaug.reading.integrity.check_encoded`). Done in threads of the training process, that work
holds the GIL the training loop needs: on 2 cores 4 reading threads fed DALI 14-16k files/s, and
on a 16-core H200 machine 16 of them held the loader near 8k img/s where DALI alone decoded 27k.
Here each read runs in a worker process (a plain ``python -I`` running :func:`serve_fd`: nothing of
the training script, torch or DALI is imported there), which reads a chunk of samples straight into a
``memfd`` buffer (anonymous shared memory, not limited by a container's small /dev/shm), checks
them there and replies over a Unix socket with where each sample lies. This process maps each
buffer once (its descriptor comes with the first reply that uses it) and gives DALI views into it:
no byte is copied or touched under the GIL. When the last view of a chunk is gone (DALI has
consumed the batch) the worker is told, on its next task, that it may fill that buffer again:
pages are allocated once, not per chunk (a fresh memfd per chunk cost ~30 µs a file in page
faults), and a worker keeps only two released buffers beyond those in flight.

The workers are shared by every loader of the process (stateless: a task names paths and byte
ranges) and started on first use. One thread of this process waits on each worker's replies. Each
worker reads up to ``READS_IN_FLIGHT`` files of its chunk at once, so that network storage's
latency is paid by many reads together.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import math
import mmap
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dalaug.reading.integrity import check_encoded

__all__ = [
    "LATENCY_VARIABLE", "READS_IN_FLIGHT", "ReadPool", "pool", "read_checked", "read_file", "serve_fd",
    "shutdown",
]  # fmt: skip

Item = tuple[str, int, int]  # (path, offset, size): a whole file when offset is -1
Result = tuple[np.ndarray | None, str | None]  # the bytes, or None and why not
# Largest task or reply message: a socket's default send buffer (~208 KiB) bounds one message.
_MESSAGE = 1 << 17
_SMALLEST_BUFFER = 1 << 20
# A worker that has not answered a chunk in this many seconds is taken for hung (storage that no
# longer answers): it is replaced, and the chunk read once more before the loader raises.
_REPLY_TIMEOUT = 600.0
_KEEP_FREE = 2  # released buffers a worker keeps for the next chunks
# Files each worker opens or reads at once when its storage makes them wait. On network storage
# every open and read is a round trip (1 ms: one file at a time caps a worker near 1,000 files/s);
# files in flight, in threads of the worker (whose GIL is its own), overlap them. The first _PROBE
# files of a chunk, timed, tell such storage (a network round trip: _SLOW_FILE or more a file) from
# local files (~5 µs to open, ~15 µs to read and check 35 KB, more for large files or fresh pages:
# those may spread, which costs little, as their copies release the GIL).
READS_IN_FLIGHT = 8
_PROBE = 2
_SLOW_FILE = 100e-6
# Seconds a worker waits before each file it opens: network storage's latency, simulated for
# benchmarks (benchmarks/bench_io.py). Read when a worker starts; see :func:`shutdown`.
LATENCY_VARIABLE = "DALAUG_SIMULATED_READ_LATENCY"


def read_file(path: str, offset: int = -1, size: int = -1) -> np.ndarray:
    """The bytes of ``path`` (or ``size`` of them at ``offset``) as a uint8 array, shorter if
    the file is shorter than its table says. One ``preadv`` into a fresh array: the read
    releases the GIL and copies once."""
    descriptor = _open(path)
    try:
        if offset < 0:
            offset, size = 0, os.fstat(descriptor).st_size
        data = np.empty(size, np.uint8)
        return data[: _read_into(descriptor, memoryview(data), offset)]
    finally:
        os.close(descriptor)


def _open(path: str) -> int:
    """A descriptor of ``path``, or of the cached copy of a shard in a bucket (fetched if need be:
    a name of :func:`dalaug.reading.storage.item_name` holds a newline, which no path here has)."""
    if "\n" in path:
        from dalaug.reading import storage  # obstore is imported only where a bucket is read

        return storage.open_shard(path)
    return os.open(path, os.O_RDONLY)


def read_checked(read, *args) -> Result:
    """``read(*args)``'s bytes if they pass :func:`check_encoded`, else None and the reason.
    A second read before giving up: a network file system's hiccup is not a bad file."""
    for _ in range(2):
        try:
            data = read(*args)
        except OSError as error:
            reason = f"cannot read: {error.strerror or error}"
            continue
        reason = check_encoded(data)
        if reason is None:
            return data, None
    return None, reason


def _read_into(descriptor: int, buffer: memoryview, offset: int) -> int:
    done = 0
    while done < len(buffer):
        count = os.preadv(descriptor, [buffer[done:]], offset + done)
        if count == 0:
            break
        done += count
    return done


# --- this process's side ----------------------------------------------------------------------------


class _Worker:
    """One worker process and the socket this process talks to it through."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # -I: neither the working directory nor PYTHONPATH can put another dalaug (or numpy) in
        # front of the one this process runs; its folder goes first unless it is on the path.
        root = str(Path(__file__).resolve().parents[2])
        start = (
            f"import sys; {root!r} in sys.path or sys.path.insert(0, {root!r}); "
            f"import dalaug.reading.workers; dalaug.reading.workers.serve_fd({theirs.fileno()})"
        )
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-c", start], pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                env=dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"),
            )  # fmt: skip
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(_REPLY_TIMEOUT)
        self.socket = ours
        self.buffers: dict[int, mmap.mmap] = {}  # the worker's buffers, mapped here too
        self.freed: collections.deque[int] = collections.deque()  # buffers to tell the worker of

    def read(self, items: list[Item], fetch: tuple[str, ...] = ()) -> list[Result]:
        """The samples ``items``, read and checked by the worker; it starts fetching the shards
        ``fetch`` (from a bucket, into the cache) in its own threads first."""
        freed = [self.freed.popleft() for _ in range(len(self.freed))]
        task = pickle.dumps((items, freed, fetch), pickle.HIGHEST_PROTOCOL)
        if len(task) > _MESSAGE // 2 and len(items) > 1:  # very long paths: in two messages
            self.freed.extend(freed)
            half = len(items) // 2
            return self.read(items[:half], fetch) + self.read(items[half:])
        self.socket.send(task)
        try:
            message, descriptors, _, _ = socket.recv_fds(self.socket, _MESSAGE, 1)
        except TimeoutError as error:
            raise TimeoutError(
                f"dalaug read worker {self.process.pid} has not read {len(items)} samples from "
                f"{items[0][0]} on in {_REPLY_TIMEOUT:.0f} s: is the storage answering?"
            ) from error
        if not message:
            raise ConnectionError(
                f"dalaug read worker {self.process.pid} exited (code {self.process.poll()}; its error, "
                "if any, is on stderr); io_workers=0 reads in this process instead"
            )
        buffer, capacity, size, places, dropped = pickle.loads(message)
        for name in dropped:  # released by us, let go by the worker: no view of it is left
            del self.buffers[name]
        if descriptors:  # a buffer new to us, or grown: map it (once; it is reused after)
            try:
                self.buffers[buffer] = mmap.mmap(descriptors[0], capacity)
            finally:
                os.close(descriptors[0])
        if size == 0:
            self.freed.append(buffer)
            return places  # every sample failed: (None, reason) each
        chunk = np.frombuffer(self.buffers[buffer], np.uint8, size)
        # The worker may reuse the buffer once the last view of this chunk is gone (DALI is done).
        weakref.finalize(chunk, self.freed.append, buffer)
        return [(None, place[1]) if place[0] is None else (chunk[place[0] : place[0] + place[1]], None)
                for place in places]  # fmt: skip

    def close(self, kill: bool = False) -> None:
        """Let the worker end (it reads end-of-file), or kill it: one that failed may hang."""
        self.socket.close()
        try:
            if kill:
                self.process.kill()
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ReadPool:
    """Worker processes reading chunks of samples; :meth:`submit` returns a Future of the
    results. Grown to the most workers any loader asked for; a worker that dies is replaced and
    its chunk read again once."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._workers: list[_Worker | None] = []  # thread i talks to worker i
        self._lock = threading.Lock()

    def ensure(self, workers: int) -> None:
        """Have at least ``workers`` workers (each started by its thread, on its first chunk)."""
        with self._lock:
            while len(self._threads) < workers:
                slot = len(self._threads)
                self._workers.append(None)
                self._threads.append(threading.Thread(target=self._serve, args=(slot,), daemon=True,
                                                      name=f"dalaug-read-{slot}"))  # fmt: skip
                self._threads[-1].start()

    def submit(self, items: list[Item], fetch: tuple[str, ...] = ()) -> Future:
        """A Future of ``items``' results; the worker that takes them also starts fetching the
        shards ``fetch`` (:func:`dalaug.reading.storage.prefetch`)."""
        future: Future = Future()
        self._tasks.put((future, items, fetch))
        return future

    def pids(self) -> list[int]:
        """The worker processes running now."""
        return [worker.process.pid for worker in self._workers if worker is not None]

    def buffers(self) -> list[int]:
        """How many shared-memory buffers each running worker has filled for this process."""
        return [len(worker.buffers) for worker in self._workers if worker is not None]

    def close(self) -> None:
        """Stop the workers; chunks not yet read are cancelled."""
        with self._lock:
            while True:
                try:
                    task = self._tasks.get_nowait()
                except queue.Empty:
                    break
                if task is not None:
                    task[0].cancel()
            for _ in self._threads:
                self._tasks.put(None)
            for thread in self._threads:
                thread.join(timeout=10)
            self._threads.clear()

    def _serve(self, slot: int) -> None:
        try:
            while (task := self._tasks.get()) is not None:
                future, items, fetch = task
                if not future.set_running_or_notify_cancel():
                    if fetch:  # the shards are still wanted: the next task takes them
                        self._tasks.put((Future(), [], fetch))
                    continue  # dropped before it ran: the reader moved elsewhere
                for attempt in range(2):
                    try:
                        self._workers[slot] = self._workers[slot] or _Worker()
                        future.set_result(self._workers[slot].read(items, fetch))
                        break
                    except BaseException as error:  # the reader waits on this future: always answer it
                        self._stop(slot, kill=True)
                        if attempt or not isinstance(error, (OSError, EOFError, pickle.UnpicklingError)):
                            future.set_exception(error)
                            break
        finally:
            self._stop(slot)

    def _stop(self, slot: int, kill: bool = False) -> None:
        worker, self._workers[slot] = self._workers[slot], None
        if worker is not None:
            worker.close(kill)

    def _forget(self) -> None:
        """In a forked child: the threads did not come along; close the sockets that did."""
        for worker in self._workers:
            if worker is not None:
                worker.socket.close()


_pool: ReadPool | None = None
_pool_lock = threading.Lock()


def pool(workers: int) -> ReadPool:
    """This process's read pool, with at least ``workers`` workers."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ReadPool()
        _pool.ensure(workers)
        return _pool


def _after_fork() -> None:
    global _pool, _pool_lock
    if _pool is not None:
        _pool._forget()
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


@atexit.register
def shutdown() -> None:
    """Stop this process's workers (the next read starts new ones)."""
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.close()
        _pool = None


# --- the worker's side -----------------------------------------------------------------------------


class _Buffers:
    """The worker's shared-memory buffers: each chunk is read into one that this process's parent
    has released (or a new or grown one), so its pages are allocated once, not per chunk. Beyond
    ``_KEEP_FREE`` released ones, the smallest are let go: as many stay as chunks are in flight."""

    def __init__(self) -> None:
        self.memory: dict[int, tuple[int, mmap.mmap]] = {}  # buffer -> (memfd, its mapping)
        self.free: set[int] = set()
        self.fresh: set[int] = set()  # new or grown since the parent last mapped them
        self._names = itertools.count()

    def release(self, freed: list[int]) -> list[int]:
        """Take back the buffers the parent has released; the ones let go, for it to unmap."""
        self.free.update(freed)
        by_size = sorted(self.free, key=lambda b: len(self.memory[b][1]))
        dropped = by_size[: max(0, len(by_size) - _KEEP_FREE)]
        for buffer in dropped:
            memfd, memory = self.memory.pop(buffer)
            memory.close()
            os.close(memfd)
            self.free.discard(buffer)
            self.fresh.discard(buffer)
        return dropped

    def take(self, size: int) -> int:
        fitting = [b for b in self.free if len(self.memory[b][1]) >= size]
        if fitting:
            buffer = min(fitting, key=lambda b: len(self.memory[b][1]))
        elif self.free:
            buffer = max(self.free, key=lambda b: len(self.memory[b][1]))
        else:
            buffer, memfd = next(self._names), os.memfd_create("dalaug-read", os.MFD_CLOEXEC)
            os.ftruncate(memfd, max(size, _SMALLEST_BUFFER))
            self.memory[buffer] = (memfd, mmap.mmap(memfd, max(size, _SMALLEST_BUFFER)))
            self.fresh.add(buffer)
        self.free.discard(buffer)
        self.grow(buffer, size)
        return buffer

    def grow(self, buffer: int, size: int) -> None:
        memfd, memory = self.memory[buffer]
        if len(memory) < size:
            size = max(size, 2 * len(memory))  # room for later, larger chunks
            memory.close()
            os.ftruncate(memfd, size)
            self.memory[buffer] = (memfd, mmap.mmap(memfd, size))
            self.fresh.add(buffer)


def _read_chunk(
    items: list[Item], buffers: _Buffers, threads: ThreadPoolExecutor, latency: float = 0.0
) -> tuple[int, int, list]:
    """Read ``items`` into one buffer and check each: ``(buffer, size, [(start, length) or
    (None, reason)])``. Each file is opened once (a WebDataset shard's samples share it), then every
    sample read into place, each step spread over ``threads`` when the storage makes it wait
    (:func:`_spread`; reads follow the opens: storage whose opens wait makes reads wait too). A
    sample that fails to open or to pass its check is read again on its own (:func:`read_checked`)
    and, if it passes then, appended."""
    paths = list(dict.fromkeys(path for path, _, _ in items))

    def open_run(run: range) -> list:
        files = []  # (descriptor, size) per path, None if it did not open
        for path in (paths[i] for i in run):
            if latency:
                time.sleep(latency)
            try:
                descriptor = _open(path)
            except OSError:
                files.append(None)
                continue
            try:
                files.append((descriptor, os.fstat(descriptor).st_size))
            except OSError:
                os.close(descriptor)
                files.append(None)
        return files

    opened_wide, opened = _spread(open_run, len(paths), threads)
    files = dict(zip(paths, opened, strict=True))
    try:
        places, buffer, size = _read_into_buffer(items, files, buffers, threads, opened_wide)
    finally:
        for file in files.values():
            if file is not None:
                os.close(file[0])
    for i, place in enumerate(places):
        if place is not None:
            continue
        data, reason = read_checked(read_file, *items[i])
        if data is None:
            places[i] = (None, reason)
        else:  # it passes on a second read: append it
            buffers.grow(buffer, size + data.size)
            buffers.memory[buffer][1][size : size + data.size] = data
            places[i] = (size, data.size)
            size += data.size
    return buffer, size, places


def _read_into_buffer(
    items: list[Item], files: dict, buffers: _Buffers, threads: ThreadPoolExecutor, wide: bool
) -> tuple[list, int, int]:
    """Each item's bytes read from its open file into one buffer, laid out in order, and checked:
    ``([(start, length) or None (to read again)], buffer, size)``."""
    spans = []  # (descriptor, offset, length) per item, None if its file did not open
    for path, offset, length in items:
        file = files[path]
        if file is None:
            spans.append(None)
        else:  # offset -1: the whole file
            spans.append((file[0], 0, file[1]) if offset < 0 else (file[0], offset, length))
    starts, size = [], 0
    for span in spans:
        starts.append(size)
        size += 0 if span is None else span[2]
    buffer = buffers.take(size)
    memory = buffers.memory[buffer][1]

    def read_run(run: range) -> list:
        places = []  # (start, length) per item, None if it must be read again
        for i in run:
            if spans[i] is None:
                places.append(None)
                continue
            descriptor, offset, length = spans[i]
            try:
                got = _read_into(descriptor, memoryview(memory)[starts[i] : starts[i] + length], offset)
                good = check_encoded(np.frombuffer(memory, np.uint8, got, starts[i])) is None
                places.append((starts[i], got) if good else None)
            except OSError:
                places.append(None)
        return places

    return _spread(read_run, len(items), threads, wide)[1], buffer, size


def _spread(work, count: int, threads: ThreadPoolExecutor, wide: bool = False) -> tuple[bool, list]:
    """``work(range(count))``, one result per item, with as many files in flight as pays; and
    whether they went to ``threads``.

    Unless ``wide``, the first ``_PROBE`` items run on this thread, timed. If each of them waited
    (``_SLOW_FILE`` or more: network storage, where every open and read is a round trip), the rest
    go to ``threads`` in ``READS_IN_FLIGHT`` runs of consecutive items (one task per run, not per
    file, keeps the hand-offs cheap), so that their round trips overlap. Otherwise (local files)
    the rest stay on this thread, where the worker's threads would only contend for its GIL (a
    third fewer files/s).
    """
    results, fastest = [], math.inf
    for i in range(0 if wide else min(_PROBE, count)):
        begin = time.perf_counter()
        results += work(range(i, i + 1))
        fastest = min(fastest, time.perf_counter() - begin)
    rest = range(len(results), count)
    wide = wide or _SLOW_FILE <= fastest < math.inf  # the fastest probe: one preemption cannot fool it
    if not (wide and rest):
        return wide, results + work(rest)
    parts = min(READS_IN_FLIGHT, len(rest))
    runs = [rest[k * len(rest) // parts : (k + 1) * len(rest) // parts] for k in range(parts)]
    return wide, results + [result for part in threads.map(work, runs) for result in part]


def _serve(connection: socket.socket) -> None:
    buffers, latency = _Buffers(), float(os.environ.get(LATENCY_VARIABLE, 0))
    threads = ThreadPoolExecutor(READS_IN_FLIGHT, thread_name_prefix="dalaug-worker-read")
    while True:
        message = connection.recv(_MESSAGE)
        if not message:
            return  # the loader's process closed the socket, or is gone
        items, freed, fetch = pickle.loads(message)
        if fetch:
            from dalaug.reading import storage

            storage.prefetch(fetch)
        dropped = buffers.release(freed)
        buffer, size, places = _read_chunk(items, buffers, threads, latency)
        memfd, memory = buffers.memory[buffer]
        reply = pickle.dumps((buffer, len(memory), size, places, dropped), pickle.HIGHEST_PROTOCOL)
        if buffer in buffers.fresh:
            buffers.fresh.discard(buffer)
            socket.send_fds(connection, [reply], [memfd])
        else:
            connection.send(reply)


def serve_fd(descriptor: int) -> None:
    """A worker's life: serve the tasks that come through the socket ``descriptor`` until it
    closes. Ctrl-C is the training job's to handle: the worker ends when its socket does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _serve(socket.socket(fileno=descriptor))
    # Not a normal exit: that would wait for the shards still being fetched ahead, which no one
    # needs now (their temporary files are deleted by a later eviction).
    os._exit(0)

"""Worker processes that read and check samples' bytes, so that no file is read under this
process's GIL.

Reading a file from Python costs ~15 µs of interpreter time and checking its bytes ~6 µs more
(:func:`~dalaug.reading.integrity.check_encoded`). Done in threads of the training process, that work
holds the GIL the training loop needs: on 2 cores 4 reading threads fed DALI 14-16k files/s, and
on a 16-core H200 machine 16 of them held the loader near 8k img/s where DALI alone decoded 27k.
Here each read runs in a worker process (a plain ``python -I`` running :func:`serve_fd`: nothing of
the training script, torch or DALI is imported there), which reads a chunk of samples straight into a
``memfd`` buffer (anonymous shared memory, not limited by a container's small /dev/shm), checks
them there and replies over a Unix socket with where each sample lies. Where the samples are (a
:class:`SampleTable`: paths or shards, byte ranges, labels) is written once into shared memory that
each worker maps on its first task from it, so that a task is only the samples' ids. This process maps each
buffer once (its descriptor comes with the first reply that uses it) and hands DALI the chunk as it
lies there: no byte is copied or touched under the GIL. A task and its reply are a few arrays
whatever the number of samples (ids, and the rows DALI takes, as int64 bytes): Python's work per
sample in this process (paths gathered and joined, tuples, a view and a DLPack conversion each) was
most of the loader's cost to the training process (issue 28). When the last view of a chunk is gone (DALI
has consumed the batch) the worker is told, on its next task, that it may fill that buffer again:
pages are allocated once, not per chunk (a fresh memfd per chunk cost ~30 µs a file in page
faults), and a worker keeps only ``_KEEP_FREE`` released buffers beyond those in flight.

The workers are shared by every loader of the process (a task names its table) and started on
first use. No thread of this process waits on them: a task is sent by the
thread that asks for it and its reply received by the thread that needs it (:class:`_Slot`). Each
worker reads up to ``READS_IN_FLIGHT`` files of its chunk at once, so that network storage's
latency is paid by many reads together.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import itertools
import math
import mmap
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dalaug.reading.integrity import check_encoded

__all__ = [
    "LATENCY_VARIABLE", "READS_IN_FLIGHT", "Chunk", "ReadPool", "SampleTable", "pool", "read_checked",
    "read_file", "serve_fd", "shutdown",
]  # fmt: skip

Item = tuple[str, int, int]  # (path, offset, size): a whole file when offset is -1
Result = tuple[np.ndarray | None, str | None]  # the bytes, or None and why not
Task = tuple["SampleTable", np.ndarray, tuple[str, ...]]  # where samples lie, ids, shards to fetch
# Largest message: a socket's default send buffer (~208 KiB) bounds one; a longer task or reply
# goes in several (:func:`_send`).
_MESSAGE = 1 << 17
_SMALLEST_BUFFER = 1 << 20
# A worker that has not answered a chunk in this many seconds is taken for hung (storage that no
# longer answers): it is replaced, and the chunk read once more before the loader raises.
_REPLY_TIMEOUT = 600.0
_KEEP_FREE = 3  # released buffers a worker keeps for the next chunks
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


class SampleTable:
    """Where the samples of a data set lie, for the workers: sample ``i`` is ``sizes[i]`` bytes at
    ``offsets[i]`` of ``names[name_of[i]]`` (a path, or a shard's name in a bucket; the whole file
    when the offset is -1), of class ``labels[i]``. Written once into a memfd that each worker maps
    on its first task from this table: a task is then only the ids, and the reply the rows DALI
    takes (gathering and joining paths, and composing rows, per batch cost the training process
    ~0.5 µs a sample). Laid out as int64 ``[len(names), len(name_of)]``, ``name_of``, ``offsets``,
    ``sizes``, ``labels``, then the names, UTF-8 (surrogates passed through) and NUL-separated."""

    _serials = itertools.count()

    def __init__(self, names: Sequence[str], name_of, offsets, sizes, labels) -> None:
        self.names, self.name_of = names, np.asarray(name_of, np.int64)
        blob = "\0".join(names).encode("utf-8", "surrogatepass")
        header = [len(names), len(self.name_of)]
        columns = np.concatenate([header, self.name_of, offsets, sizes, labels]).astype(np.int64)
        self.serial = next(self._serials)
        self.descriptor = os.memfd_create("dalaug-samples", os.MFD_CLOEXEC)
        weakref.finalize(self, _drop_table, self.serial, self.descriptor)
        with open(self.descriptor, "wb", closefd=False) as file:
            file.write(columns.tobytes())
            file.write(blob)

    def name(self, sample_id: int) -> str:
        return self.names[self.name_of[sample_id]]


# Tables no longer used: each worker that mapped one is told on its next task, and lets it go.
_dropped_tables: set[int] = set()


def _drop_table(serial: int, descriptor: int) -> None:
    _dropped_tables.add(serial)
    os.close(descriptor)


class _MappedTable:
    """A :class:`SampleTable` as a worker sees it."""

    def __init__(self, descriptor: int) -> None:
        try:
            self.memory = mmap.mmap(descriptor, 0, prot=mmap.PROT_READ)
        finally:
            os.close(descriptor)
        names, samples = np.frombuffer(self.memory, np.int64, 2)
        columns = np.frombuffer(self.memory, np.int64, 4 * samples, 16).reshape(4, samples)
        self.name_of, self.offsets, self.sizes, self.labels = columns
        blob_start = 16 + 32 * int(samples)
        blob = np.frombuffer(self.memory, np.uint8, offset=blob_start)
        ends = np.flatnonzero(blob == 0)
        self.bounds = blob_start + np.concatenate([[0], ends + 1, [len(blob) + 1]])[: int(names) + 1]

    def items(self, ids: np.ndarray) -> list[Item]:
        """What to read for samples ``ids``: (name, offset, size) each."""
        name_of = self.name_of[ids]
        starts, ends = self.bounds[name_of].tolist(), (self.bounds[name_of + 1] - 1).tolist()
        names = {start: self.memory[start:end].decode("utf-8", "surrogatepass")
                 for start, end in zip(starts, ends, strict=True)}  # fmt: skip
        offsets, sizes = self.offsets[ids].tolist(), self.sizes[ids].tolist()
        return [(names[start], *place) for start, *place in zip(starts, offsets, sizes, strict=True)]


@dataclasses.dataclass
class Chunk:
    """Samples read into one buffer, in order, and a row per sample (start, length, label):
    sample ``i`` is ``memory[start : start + length]``, unless it failed its read or check
    (``reasons[i]`` says why; its start is -1, its length 0)."""

    memory: np.ndarray  # uint8; a worker's buffer, which it fills again once no view of it is left
    rows: np.ndarray  # int64, (samples, 3)
    reasons: dict[int, str]

    def __len__(self) -> int:
        return len(self.rows)

    def sample(self, i: int) -> np.ndarray | None:
        """Sample ``i``'s bytes (a view), or None if it failed."""
        start, length, _ = self.rows[i].tolist()
        return None if start < 0 else self.memory[start : start + length]

    @classmethod
    def gather(cls, results: list[Result], labels: np.ndarray) -> Chunk:
        """The samples ``results`` (each its bytes, or None and why not) of classes ``labels``,
        copied into one buffer."""
        rows = np.empty((len(results), 3), np.int64)
        rows[:, 1] = [0 if data is None else data.size for data, _ in results]
        rows[:, 0] = np.cumsum(rows[:, 1]) - rows[:, 1]
        rows[:, 2] = labels
        reasons = {i: reason for i, (data, reason) in enumerate(results) if data is None}
        rows[list(reasons), 0] = -1
        kept = [data for data, _ in results if data is not None]
        return cls(np.concatenate(kept) if kept else np.empty(0, np.uint8), rows, reasons)


def _send(connection: socket.socket, payload: bytes, descriptors: list[int] = ()) -> None:
    """``payload`` in messages of at most ``_MESSAGE`` bytes, each led by a byte saying whether
    more follow; ``descriptors`` go with the first."""
    view, step = memoryview(payload), _MESSAGE - 1
    for start in range(0, max(1, len(view)), step):
        message = (b"+" if start + step < len(view) else b".") + view[start : start + step]
        if start == 0 and descriptors:
            socket.send_fds(connection, [message], list(descriptors))
        else:
            connection.send(message)


def _receive(connection: socket.socket) -> tuple[bytes, list[int]]:
    """What :func:`_send` sent (b"" once the other side has closed) and the descriptors with it."""
    parts, descriptors = [], []
    while True:
        message, received, _, _ = socket.recv_fds(connection, _MESSAGE, 1)
        descriptors += received
        if not message:
            return b"", descriptors
        parts.append(message[1:])
        if message[:1] == b".":
            return b"".join(parts), descriptors


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
        self.tables: set[int] = set()  # the sample tables the worker has mapped

    def send(self, task: Task) -> None:
        """Give the worker ``task`` (it starts fetching the task's shards first, then reads)."""
        table, ids, fetch = task
        freed, dropped = list(self.freed), self.tables & _dropped_tables
        ids = np.asarray(ids, np.int64).tobytes()
        message = pickle.dumps((table.serial, ids, freed, fetch, dropped), pickle.HIGHEST_PROTOCOL)
        _send(self.socket, message, [] if table.serial in self.tables else [table.descriptor])
        for _ in freed:  # told: only now (a task that could not be sent told nothing)
            self.freed.popleft()
        self.tables = self.tables - dropped | {table.serial}

    def receive(self, task: Task) -> Chunk:
        """The reply to ``task``, the oldest task sent and not yet answered."""
        try:
            message, descriptors = _receive(self.socket)
        except TimeoutError as error:
            table, ids, _ = task
            raise TimeoutError(
                f"dalaug read worker {self.process.pid} has not read {len(ids)} samples from "
                f"{table.name(ids[0])} on in {_REPLY_TIMEOUT:.0f} s: is the storage answering?"
            ) from error
        if not message:
            raise ConnectionError(
                f"dalaug read worker {self.process.pid} exited (code {self.process.poll()}; its error, "
                "if any, is on stderr); io_workers=0 reads in this process instead"
            )
        buffer, capacity, size, rows, reasons, dropped = pickle.loads(message)
        for name in dropped:  # released by us, let go by the worker: no view of it is left
            del self.buffers[name]
        if descriptors:  # a buffer new to us, or grown: map it (once; it is reused after)
            try:
                self.buffers[buffer] = mmap.mmap(descriptors[0], capacity)
            finally:
                os.close(descriptors[0])
        rows = np.frombuffer(rows, np.int64).reshape(-1, 3)
        if size == 0:  # every sample failed
            self.freed.append(buffer)
            return Chunk(np.empty(0, np.uint8), rows, reasons)
        memory = np.frombuffer(self.buffers[buffer], np.uint8, size)
        # The worker may reuse the buffer once the last view of this chunk is gone (DALI is done).
        weakref.finalize(memory, self.freed.append, buffer)
        return Chunk(memory, rows, reasons)

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


class Pending:
    """A chunk given to a worker; :meth:`result` waits for its :class:`Chunk`."""

    def __init__(self, slot: _Slot, task: Task) -> None:
        self.task, self._slot = task, slot
        self.attempts = 0  # times sent: a chunk is read once more after its worker failed
        self.chunk: Chunk | None = None
        self.error: BaseException | None = None
        self.cancelled = False

    @property
    def done(self) -> bool:
        return self.chunk is not None or self.error is not None

    def cancel(self) -> None:
        """Not wanted any more: its reply is dropped when it comes (the worker reads it anyway)."""
        self.cancelled = True

    def result(self) -> Chunk:
        self._slot.wait(self)
        if self.error is not None:
            raise self.error
        return self.chunk


class _Slot:
    """One worker and the chunks given to it, which it answers in order. Whichever thread needs a
    reply receives it: no thread of this process waits on a worker for nothing (a thread per
    worker, woken for every chunk, cost the training process more CPU than the rest of the loader)."""

    def __init__(self) -> None:
        self.worker: _Worker | None = None
        self.sent: collections.deque[Pending] = collections.deque()  # not yet answered, oldest first
        self.lock = threading.Lock()

    def give(self, pending: Pending) -> None:
        with self.lock:
            self._send(pending)

    def wait(self, pending: Pending) -> None:
        with self.lock:
            while not pending.done:
                if pending not in self.sent:  # cancelled and dropped with its worker
                    pending.error = LookupError("this chunk was cancelled")
                    break
                self._collect()

    def _send(self, pending: Pending) -> None:
        pending.attempts += 1
        try:
            self.worker = self.worker or _Worker()
            self.worker.send(pending.task)
        except (OSError, EOFError) as error:  # the worker is gone: a new one reads its chunks
            self.sent.append(pending)
            self._restart(error)
            return
        except BaseException as error:  # a task that cannot be sent at all (not the worker's fault)
            pending.error = error
            return
        self.sent.append(pending)

    def _collect(self) -> None:
        """Receive the oldest reply."""
        oldest = self.sent[0]
        try:
            chunk = self.worker.receive(oldest.task)
        except (OSError, EOFError, pickle.UnpicklingError) as error:  # it died, hung or garbled
            self._restart(error)
            return
        except BaseException as error:  # e.g. Ctrl-C in the middle of a reply: the stream is cut
            self.stop(kill=True)
            for pending in self.sent:
                pending.error = error
            self.sent.clear()
            raise
        self.sent.popleft()
        if not oldest.cancelled:
            oldest.chunk = chunk

    def _restart(self, error: BaseException) -> None:
        """The worker failed (``error``): stop it, and give its unanswered chunks to a new one; a
        chunk that was already read once more fails with ``error``."""
        self.stop(kill=True)
        again, self.sent = self.sent, collections.deque()
        for pending in again:
            if pending.cancelled:
                continue
            if pending.attempts >= 2:
                pending.error = error
            else:
                self._send(pending)

    def stop(self, kill: bool = False) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.close(kill)


class ReadPool:
    """Worker processes reading chunks of samples: :meth:`submit` gives one to a worker with the
    fewest in hand. Grown to the most workers any loader asked for; a worker that dies is
    replaced and its chunks read again once."""

    def __init__(self) -> None:
        self._slots: list[_Slot] = []
        self._turns = itertools.count()
        self._lock = threading.Lock()

    def ensure(self, workers: int) -> None:
        """Have at least ``workers`` workers (each started on its first chunk)."""
        with self._lock:
            while len(self._slots) < workers:
                self._slots.append(_Slot())

    def submit(self, table: SampleTable, ids: np.ndarray, fetch: tuple[str, ...] = ()) -> Pending:
        """The samples ``ids`` of ``table``, to be read and checked into a :class:`Chunk`; the
        worker that takes them starts fetching the shards ``fetch`` first
        (:func:`dalaug.reading.storage.prefetch`)."""
        turn = next(self._turns) % len(self._slots)  # among the least busy, each in turn
        slot = min(self._slots[turn:] + self._slots[:turn], key=lambda slot: len(slot.sent))
        pending = Pending(slot, (table, ids, fetch))
        slot.give(pending)
        return pending

    def pids(self) -> list[int]:
        """The worker processes running now."""
        running = [slot.worker.process for slot in self._slots if slot.worker is not None]
        return [process.pid for process in running if process.poll() is None]

    def buffers(self) -> list[int]:
        """How many shared-memory buffers each running worker has filled for this process."""
        return [len(slot.worker.buffers) for slot in self._slots if slot.worker is not None]

    def close(self) -> None:
        """Stop the workers; chunks not yet answered fail."""
        with self._lock:
            for slot in self._slots:
                with slot.lock:
                    for pending in slot.sent:
                        pending.error = ConnectionError("dalaug's read workers were shut down")
                    slot.sent.clear()
                    slot.stop()
            self._slots.clear()

    def _forget(self) -> None:
        """In a forked child: close the sockets that came along (the workers are the parent's)."""
        for slot in self._slots:
            if slot.worker is not None:
                slot.worker.socket.close()


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
    ``_KEEP_FREE`` released ones, the smallest are let go: as many stay as chunks are in flight.
    Sizes are powers of two, so that a buffer fits the next chunks of about the same size: a chunk
    a little larger than the last made a buffer grow, and another be let go, every few batches
    (each unmapping cost the parent ~0.4 ms of page-table work on 2 cores)."""

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
            os.ftruncate(memfd, _capacity(size))
            self.memory[buffer] = (memfd, mmap.mmap(memfd, _capacity(size)))
            self.fresh.add(buffer)
        self.free.discard(buffer)
        self.grow(buffer, size)
        return buffer

    def grow(self, buffer: int, size: int) -> None:
        memfd, memory = self.memory[buffer]
        if len(memory) < size:
            size = _capacity(size)
            memory.close()
            os.ftruncate(memfd, size)
            self.memory[buffer] = (memfd, mmap.mmap(memfd, size))
            self.fresh.add(buffer)


def _capacity(size: int) -> int:
    """The size of a buffer for ``size`` bytes: the next power of two, 1 MiB at the least."""
    return max(_SMALLEST_BUFFER, 1 << max(0, size - 1).bit_length())


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
    tables: dict[int, _MappedTable] = {}
    while True:
        try:
            message, descriptors = _receive(connection)
        except ConnectionResetError:  # closed with replies it had not read (chunks dropped)
            return
        if not message:
            return  # the loader's process closed the socket, or is gone
        serial, ids, freed, fetch, dropped_tables = pickle.loads(message)
        for gone in dropped_tables:
            del tables[gone]  # unmapped once the last of its arrays is gone
        if descriptors:  # the first task from this table
            tables[serial] = _MappedTable(descriptors[0])
        table, ids = tables[serial], np.frombuffer(ids, np.int64)
        items = table.items(ids)
        if fetch:
            from dalaug.reading import storage

            storage.prefetch(fetch)
        dropped = buffers.release(freed)
        buffer, size, places = _read_chunk(items, buffers, threads, latency)
        memfd, memory = buffers.memory[buffer]
        reasons = {i: place[1] for i, place in enumerate(places) if place[0] is None}
        rows = np.empty((len(places), 3), np.int64)  # as DALI takes them: start, length, label
        rows[:, 0] = [-1 if start is None else start for start, _ in places]
        rows[:, 1] = [0 if start is None else length for start, length in places]
        rows[:, 2] = table.labels[ids]
        reply = (buffer, len(memory), size, rows.tobytes(), reasons, dropped)
        reply = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
        fresh = buffer in buffers.fresh
        buffers.fresh.discard(buffer)
        try:
            _send(connection, reply, [memfd] if fresh else [])
        except (BrokenPipeError, ConnectionResetError):  # the reader's process stopped its workers
            return


def serve_fd(descriptor: int) -> None:
    """A worker's life: serve the tasks that come through the socket ``descriptor`` until it
    closes. Ctrl-C is the training job's to handle: the worker ends when its socket does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _serve(socket.socket(fileno=descriptor))
    # Not a normal exit: that would wait for the shards still being fetched ahead, which no one
    # needs now (their temporary files are deleted by a later eviction).
    os._exit(0)

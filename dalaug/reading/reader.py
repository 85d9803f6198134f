"""Reading each batch's bytes ahead (in worker processes), checked, and handing them to DALI in order.

The loader's pipeline sees one endless stream of batches. Each position in it is ``(epoch,
iteration)``; the reader hands DALI the batch at its cursor and moves the cursor on (the last batch
of an epoch is followed by the first of the next), so a loop that runs epoch after epoch never
rebuilds anything. A jump (``seek``: another epoch, an epoch broken off) moves the cursor; the
batches DALI already holds for the old positions are marked stale and the loader drops them as
they come out. Which samples make a position is :class:`~dalaug.feed.EpochFeed`'s pure function.

File reads run ahead of the cursor in worker processes (:mod:`dalaug.reading.workers`), never under this
process's GIL and never on the thread that iterates the loader (the one DALI calls the source
from): a network file system's latency is paid by many reads at once. One worker reads a task
of whole batches (about ``TASK_SAMPLES`` samples) into one shared buffer, and DALI is handed that
buffer as every sample of each of its batches, with each sample's start and length beside it:
the pipeline cuts the samples out (``fn.slice``, in DALI's threads). Handing DALI a view per
sample cost this process ~1.3 µs of Python each (the view, its DLPack conversion, freeing it),
more than the rest of the loader's Python together.
Each sample's bytes are checked before DALI sees them
(:func:`~dalaug.reading.integrity.check_encoded`): DALI 2.4 can crash the process on bytes it cannot decode
(issue 18), so a missing, unreadable, empty, truncated or non-image file is named and left out here,
and the batch is completed with the next samples of the shard, exactly as the feed's exclusion
rule says. With ``workers=0`` one thread of this process reads (through :meth:`BatchReader.read_bytes`,
which tests and benchmarks may replace).
"""

from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from nvidia.dali.tensors import TensorCPU, TensorListCPU

from dalaug.feed import EpochFeed
from dalaug.reading import workers as read_workers
from dalaug.reading.storage import UNFETCHED

Position = tuple[int, int]  # (epoch, iteration)
# Samples a worker's task reads, in whole batches (one at least). A task costs the training process
# ~100 µs of Python (a message each way, its objects and their freeing, with cold caches): one
# task per batch of 256 was a third more Python per image than DALI's readers.file (issue 28). The
# first task after a jump reads one batch, so that the first batch comes as soon as before.
TASK_SAMPLES = 1024
MAX_TASKS_AHEAD = 8  # tasks read ahead of the batch DALI asks for (~110 MB each for ImageNet)
# Shards of a bucket asked for ahead of the cursor: the shuffle's window now and the next one.
FETCH_AHEAD = 2


Batch = tuple[TensorListCPU, TensorListCPU]  # the buffer, and int64 (start, length, label) per sample


@dataclass
class Read:
    """Consecutive batches read together (one task, one buffer): their positions, their samples'
    ids (batch ``k`` is ``ids[bounds[k] : bounds[k + 1]]``) and the read of their
    :class:`~dalaug.reading.workers.Chunk` (a worker's :class:`~dalaug.reading.workers.Pending`,
    or this process's reading thread's Future)."""

    positions: list[Position]
    ids: np.ndarray
    bounds: list[int]
    chunk: read_workers.Pending | Future
    memory: TensorCPU | None = None  # the chunk's buffer as DALI takes it, made once for its batches

    def cancel(self) -> None:
        self.chunk.cancel()  # a chunk already being read finishes; its result is dropped


@dataclass
class Issued:
    """A batch handed to DALI: its position, sample ids and what DALI was given (kept alive until
    the batch is out: DALI reads it where it is, ``no_copy``)."""

    position: Position
    ids: np.ndarray
    batch: Batch
    stale: bool = False


class BatchReader:
    """The ``fn.external_source`` callback of a loader's pipeline (see the module docstring).

    Args:
        feed: the epoch order.
        workers: worker processes reading ahead (shared with the process's other loaders); 0
            reads in one thread of this process.
    """

    def __init__(self, feed: EpochFeed, workers: int) -> None:
        self.feed = feed
        self.cursor: Position = (0, 0)  # the next position handed to DALI
        self.issued: collections.deque[Issued] = collections.deque()
        self.found_bad: dict[int, str] = {}  # sample id -> reason, for the loader to report
        self._workers = workers
        self._local: ThreadPoolExecutor | None = None  # the reading thread when workers == 0
        # Enough tasks ahead that every worker has one to read and one more is waiting; a task
        # reads up to TASK_SAMPLES samples, fewer where the tasks ahead would span more than an
        # epoch (a small data set is not read epochs ahead).
        tasks = min(MAX_TASKS_AHEAD, max(2, workers + 1))
        self._group = max(1, min(TASK_SAMPLES // feed.batch_size, feed.num_batches() // tasks))
        self._ahead = self._group * tasks  # batches
        self._reads: dict[Position, Read] = {}  # each batch's read (a task reads several)
        self._next_read: Position = (0, 0)  # the first position after those being read
        self._table: read_workers.SampleTable | None = None  # for the workers, built on first use
        samples = feed.samples
        self._streamed = samples.streamed
        if self._streamed:  # shards in a bucket: their cached copies, and those asked for ahead
            starts = samples.shard_starts
            self._shard_of = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
            self._fetch_names = [samples.location(int(start)) for start in starts[:-1]]
            self._asked: tuple[int, set[int]] = (-1, set())

    def restart(self, position: Position) -> None:
        """A new pipeline starts at ``position``: nothing is in flight."""
        self.issued.clear()
        self._move(position)

    def seek(self, position: Position) -> None:
        """Serve ``position`` next; batches already handed to DALI for other positions go stale."""
        live = [entry for entry in self.issued if not entry.stale]
        if live and live[0].position == position or not live and self.cursor == position:
            return
        for entry in self.issued:
            entry.stale = True
        self._move(position)

    def take(self) -> Issued:
        """The entry of the batch DALI just gave out (the oldest handed over)."""
        return self.issued.popleft()

    def close(self) -> None:
        """Drop the reads in flight and stop this reader's thread (a later batch starts it
        again; the worker processes stay for the process's other loaders)."""
        self._drop_reads()
        self.issued.clear()
        if self._local is not None:
            self._local.shutdown(wait=False, cancel_futures=True)
        self._local = None

    def __call__(self, info) -> Batch:
        # DALI's own (epoch_idx, iteration) are ignored: the stream never ends, the cursor decides.
        position = self.cursor
        while True:
            if self.feed.num_batches() == 0:
                named = [f"{self.feed.samples.name(i)}: {why}" for i, why in self.found_bad.items()]
                raise ValueError(
                    "source: every sample of this rank's share of the data set turned out bad"
                    + (f", e.g. {named[0]}" if named else "")
                    + "; find them all with `dalaug verify`"
                )
            position = self.in_stream(position)
            if position not in self._reads:  # the first batch, a jump, or files left out: read from here
                self._drop_reads()
                self._submit(position, 1)
                self._read_ahead()
            read = self._reads.pop(position)
            chunk = read.chunk.result()
            if not chunk.reasons:
                break
            # Left out from here on; the batch takes the next samples of the shard instead, and
            # the batches read ahead are read again (their samples have moved up).
            bad = self._whole_shards({int(read.ids[i]): reason for i, reason in chunk.reasons.items()})
            self.found_bad.update(bad)
            self.feed.exclude(bad)
            self._drop_reads()
        # Every sample refers to the whole buffer (one object, where a view each costs Python
        # per sample); the graph cuts sample i out as rows[i] = (start, length, label) say. Both
        # as DALI's own TensorLists: DALI checks nothing more of them.
        k = read.positions.index(position)
        start, end = read.bounds[k], read.bounds[k + 1]
        if read.memory is None:
            read.memory = TensorCPU(chunk.memory)
        batch = (TensorListCPU.broadcast(read.memory, end - start), TensorListCPU(chunk.rows[start:end]))
        self.issued.append(Issued(position, read.ids[start:end], batch))
        self.cursor = self._after(position)
        self._read_ahead()
        return batch

    # --- reading ahead --------------------------------------------------------------------------

    def _move(self, position: Position) -> None:
        self.cursor = position
        self._drop_reads()

    def _drop_reads(self) -> None:
        for read in self._reads.values():
            read.cancel()
        self._reads.clear()

    def in_stream(self, position: Position) -> Position:
        """``position`` as the stream has it: past an epoch's last batch (an evaluation epoch
        shrinks when files are left out) comes the next epoch's first."""
        epoch, iteration = position
        return position if iteration < self.feed.num_batches() else (epoch + 1, 0)

    def _after(self, position: Position) -> Position:
        return self.in_stream((position[0], position[1] + 1))

    def _whole_shards(self, bad: dict[int, str]) -> dict[int, str]:
        """``bad`` and every other sample of a shard that could not be fetched from its bucket
        (each would fail in turn, after the same retries)."""
        if not self._streamed:
            return bad
        starts, failed = self.feed.samples.shard_starts, dict(bad)
        for sample_id, reason in bad.items():
            if UNFETCHED in reason:
                shard = self._shard_of[sample_id]
                for other in range(int(starts[shard]), int(starts[shard + 1])):
                    if other not in self.feed.excluded:
                        failed.setdefault(other, reason)
        return failed

    def _read_ahead(self) -> None:
        """Have the ``_ahead`` batches from the cursor on being read, ``_group`` to a task."""
        while len(self._reads) < self._ahead:
            self._submit(self._next_read, self._group)

    def _to_fetch(self, position: Position) -> tuple[str, ...]:
        """The shards of a bucket the samples after ``position`` come from, up to ``FETCH_AHEAD``
        windows of them (the next epoch's first when this one ends), not asked for yet."""
        if not self._streamed or not self._workers:
            return ()
        epoch, iteration = position
        window = self.feed.window * FETCH_AHEAD
        per_shard = max(1, len(self._shard_of) // len(self._fetch_names))
        start = iteration * self.feed.batch_size
        upcoming = self.feed.shard(epoch)[start : start + window * per_shard * 2]
        if len(upcoming) < window * per_shard:
            upcoming = np.concatenate([upcoming, self.feed.shard(epoch + 1)[: window * per_shard]])
        shards = self._shard_of[upcoming]
        _, first = np.unique(shards, return_index=True)
        ahead = shards[np.sort(first)][:window].tolist()
        if self._asked[0] != epoch:
            self._asked = (epoch, set())
        new = [s for s in ahead if s not in self._asked[1]]
        self._asked[1].update(new)
        return tuple(self._fetch_names[s] for s in new)

    def _submit(self, first: Position, count: int) -> None:
        """Read the ``count`` batches from ``first`` on as one task."""
        positions = [first]
        while len(positions) < count:
            positions.append(self._after(positions[-1]))
        batches = [self.feed.batch_ids(*position) for position in positions]
        ids = np.concatenate(batches)
        bounds = np.cumsum([0] + [len(batch) for batch in batches]).tolist()
        read = Read(positions, ids, bounds, self._read(ids, self._to_fetch(first)))
        self._reads.update(dict.fromkeys(positions, read))
        self._next_read = self._after(positions[-1])

    def _read(self, ids: np.ndarray, fetch: tuple[str, ...] = ()) -> read_workers.Pending | Future:
        """The read of the :class:`~dalaug.reading.workers.Chunk` of samples ``ids``: by a
        worker process, which starts fetching the shards ``fetch`` first, or by this process's
        reading thread (``workers=0``)."""
        if self._workers:
            return read_workers.pool(self._workers).submit(self._table or self._make_table(), ids, fetch)
        if self._local is None:
            self._local = ThreadPoolExecutor(1, thread_name_prefix="dalaug-read")
        return self._local.submit(self._read_here, ids)

    def _make_table(self) -> read_workers.SampleTable:
        """What a worker opens for each sample: its file, or its shard's cached copy."""
        samples = self.feed.samples
        if self._streamed:
            names, name_of = self._fetch_names, self._shard_of
        else:
            names, name_of = samples.paths, np.arange(len(samples))
        self._table = read_workers.SampleTable(names, name_of, samples.offsets, samples.sizes, samples.labels)
        return self._table

    def _read_here(self, ids: np.ndarray) -> read_workers.Chunk:
        results = [read_workers.read_checked(self.read_bytes, int(i)) for i in ids]
        return read_workers.Chunk.gather(results, self.feed.samples.labels[ids])

    def read_bytes(self, sample_id: int) -> np.ndarray:
        """Sample ``sample_id``'s bytes, when this process reads (``workers=0``)."""
        return self.feed.samples.read(sample_id)

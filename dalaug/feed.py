"""The epoch order, as a pure function: which samples make batch ``i`` of epoch ``e`` on this rank.

The reader (:class:`~dalaug.reading.reader.BatchReader`) asks it for the samples of each position
``(epoch, iteration)``, so the order never depends on how the pipeline got there: the same after a
restart from a checkpoint, after a rebuilt pipeline, or in a second loader built for another phase.

Samples found bad during training are *excluded*: they are filtered out of every rank's shard, so
the batches after the bad one shift by one sample and every other sample is still delivered once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from dalaug.reading.sources import Samples

# Shards of a bucket whose samples an epoch shuffles together (see EpochFeed).
SHARD_WINDOW = 8


@dataclass(frozen=True)
class Sharding:
    """This process's place among the ranks of a distributed run."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.world_size, int) or self.world_size < 1:
            raise ValueError(f"world_size: expected a positive int, got {self.world_size!r}")
        if not isinstance(self.rank, int) or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank: expected an int in [0, {self.world_size}), got {self.rank!r}")


class EpochFeed:
    """Which samples make each batch of each epoch on this rank.

    Each epoch is a permutation of the data set seeded by ``(seed, epoch)`` (identity order when
    ``shuffle`` is False), split into contiguous shards, one per rank.

    Samples in shards fetched from a bucket (``samples.streamed``) are permuted so that each shard
    is fetched about once an epoch (as Mosaic Streaming's and LitData's orders do): the shards are
    shuffled, then cut into windows of ``SHARD_WINDOW`` shards, and the samples of each window
    shuffled together; the order is still a function of ``(seed, epoch)`` alone. A rank's contiguous
    share is then a run of windows, and the reader fetches the next window while this one is read.

    A training feed (``shuffle`` or ``drop_last``) keeps the ranks in lockstep, as DDP's backward
    pass needs: the permutation is padded by wrapping around to a multiple of ``world_size``, so
    every rank gets the same number of samples and batches; the only duplicates are the at most
    ``world_size - 1`` padding samples. Excluded samples (bad files) are removed from the shard,
    which is then padded back to its length with its own first samples, so the batch count never
    changes (LR schedules count ``len(loader)``).

    An evaluation feed (neither) counts every sample exactly once across ranks: no padding, so
    shards may differ by one sample and ranks by one batch (evaluation runs no collective per
    batch: reduce the sums once at the end), and excluded samples just leave their shard.

    Args:
        samples: the data set.
        batch_size: samples per batch.
        shuffle: a new permutation every epoch (else the data set order).
        drop_last: leave out the last partial batch of the shard.
        seed: seeds the permutations; it must agree across ranks.
        sharding: this rank and the number of ranks.
        lockstep: equal shards (default: for training, ``shuffle or drop_last``).
        pad: make lockstep shards equal by wrapping around (True), or by leaving out the last
            ``len % world_size`` samples of the order (False: a ``DistributedSampler(drop_last=True)``).
        repeats: repeated augmentation (Hoffer et al. 2020; DeiT's ``RASampler``, timm's
            ``--aug-repeats``): each sample of the order ``repeats`` times in a row, the ranks taking
            every ``world_size``-th place so that the copies go to different ranks, each rank
            reading ``len // world_size`` places: one epoch's length, with about ``len / repeats``
            distinct samples each seen ``repeats`` times. (DeiT and timm also round the epoch down
            to a multiple of 256 samples; this feed does not.)
    """

    def __init__(
        self, samples: Samples, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int,
        sharding: Sharding = Sharding(), lockstep: bool | None = None, pad: bool = True, repeats: int = 1,
    ) -> None:  # fmt: skip
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
        if not isinstance(sharding, Sharding):
            raise ValueError(f"sharding: expected a Sharding, got {type(sharding).__name__}")
        self.samples = samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.sharding = sharding
        # Training: equal, fixed-length shards. An evaluation loop that reduces across ranks every
        # batch (timm's validate) needs them too, at the price of the padding's duplicates.
        self.lockstep = shuffle or drop_last if lockstep is None else lockstep
        self.pad = pad
        self.repeats = repeats
        self.window = SHARD_WINDOW
        self.excluded: frozenset[int] = frozenset()
        # An epoch resumed under another world size: (epoch, ids the old ranks had delivered).
        self.resumed: tuple[int, np.ndarray] | None = None
        # Shards of the last two epochs asked for (the reader reads ahead into the next epoch
        # while it hands over the last batches of this one: a permutation of ImageNet is ~20 ms)
        # and the batch count, for the exclusions they were made with.
        self._cache: tuple[frozenset[int], dict[int, np.ndarray]] = (self.excluded, {})
        self._batches: tuple[frozenset[int], int] | None = None

    def exclude(self, ids: Iterable[int]) -> None:
        """Leave samples ``ids`` out of every epoch from now on (see the class docstring)."""
        ids = {int(i) for i in ids}
        bad = [i for i in ids if not 0 <= i < len(self.samples)]
        if bad:
            raise ValueError(f"ids: {bad} are not sample ids of a {len(self.samples)}-sample data set")
        self.excluded = self.excluded | ids

    def shard(self, epoch: int) -> np.ndarray:
        """Sample ids this rank reads in ``epoch``, in order."""
        if self._cache[0] is not self.excluded:
            self._cache = (self.excluded, {})
        shards = self._cache[1]
        if epoch not in shards:
            while len(shards) >= 2:
                del shards[min(shards)]
            shards[epoch] = self._shard(epoch)
        return shards[epoch]

    def _shard(self, epoch: int) -> np.ndarray:
        order = self.order(epoch)
        if self.resumed is not None and self.resumed[0] == epoch:
            return self._rest(order, self.resumed[1])
        rank, world_size = self.sharding.rank, self.sharding.world_size
        per_rank = self.samples_per_rank
        if self.repeats > 1:
            places = np.repeat(order, self.repeats)  # copies in a row: rank r takes places r, r + W, ...
            places = np.resize(places, math.ceil(len(places) / world_size) * world_size)
            shard = places[rank::world_size][:per_rank]
        elif self.lockstep:
            # np.resize wraps around to pad, or cuts the order's tail off
            shard = np.resize(order, per_rank * world_size)[rank * per_rank : (rank + 1) * per_rank]
        else:
            shard = np.array_split(order, world_size)[rank]
        if self.excluded:
            shard = shard[~np.isin(shard, np.fromiter(self.excluded, np.int64))]
            if shard.size == 0:
                raise RuntimeError(
                    f"every sample of rank {self.sharding.rank}'s shard in epoch {epoch} is excluded "
                    "as undecodable"
                )
            if self.lockstep or self.repeats > 1:
                shard = np.resize(shard, per_rank)
        return shard

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's order of the whole data set, before sharding: a function of (seed, epoch)."""
        n = len(self.samples)
        if not self.shuffle:
            return np.arange(n)
        generator = np.random.default_rng([self.seed, epoch])
        if not self.samples.streamed:
            return generator.permutation(n)
        starts = self.samples.shard_starts
        shards = generator.permutation(len(starts) - 1)
        windows = [shards[k : k + self.window] for k in range(0, len(shards), self.window)]
        return np.concatenate([
            generator.permutation(np.concatenate([np.arange(starts[s], starts[s + 1]) for s in window]))
            for window in windows
        ])  # fmt: skip

    def delivered(self, epoch: int, iteration: int) -> np.ndarray:
        """The ids every rank had read when each stood at batch ``iteration`` of ``epoch`` (lockstep
        ranks stand at the same batch), computed for this feed's world size."""
        ranks = [self._as_rank(rank) for rank in range(self.sharding.world_size)]
        read = [feed.shard(epoch)[: iteration * self.batch_size] for feed in ranks]
        return np.unique(np.concatenate(read)) if read else np.zeros(0, np.int64)

    def _as_rank(self, rank: int) -> EpochFeed:
        feed = EpochFeed(
            self.samples, self.batch_size, shuffle=self.shuffle, drop_last=self.drop_last, seed=self.seed,
            sharding=Sharding(rank, self.sharding.world_size), lockstep=self.lockstep, pad=self.pad,
            repeats=self.repeats,
        )  # fmt: skip
        feed.excluded, feed.resumed = self.excluded, self.resumed
        return feed

    def resume_elsewhere(self, epoch: int, delivered: np.ndarray) -> int:
        """Serve the rest of ``epoch`` on this feed's ranks after the ranks of another world size
        read the ids ``delivered``: each remaining sample once across the ranks (the shares padded
        to equal length, as a lockstep epoch is). Returns the batch this rank goes on at: the epoch
        keeps its length in batches, so LR schedules that count ``len(loader)`` hold."""
        if not self.lockstep or self.repeats > 1:
            raise ValueError("resume_elsewhere: an evaluation feed (no lockstep) or one with repeats "
                             "restarts its epoch instead")  # fmt: skip
        self.resumed = (epoch, np.asarray(delivered, np.int64))
        self._cache = (self.excluded, {})
        return self.num_batches() - self._rest_batches(len(self._remaining(epoch)))

    def _remaining(self, epoch: int) -> np.ndarray:
        order = self.order(epoch)
        gone = np.union1d(self.resumed[1], np.fromiter(self.excluded, np.int64, len(self.excluded)))
        return order[~np.isin(order, gone)]

    def _rest_batches(self, remaining: int) -> int:
        """Batches of each rank's share of ``remaining`` samples (a share shorter than a batch that
        drop_last would drop is padded to one batch: no sample is lost to the resume)."""
        share = math.ceil(remaining / self.sharding.world_size)
        rest = share // self.batch_size if self.drop_last else math.ceil(share / self.batch_size)
        return min(max(rest, 1 if remaining else 0), self.num_batches())

    def _rest(self, order: np.ndarray, delivered: np.ndarray) -> np.ndarray:
        """The resumed epoch's shard: placeholders for the batches read before (the ids read then),
        then this rank's share of the ids not read."""
        remaining = self._remaining(self.resumed[0])
        rank, world_size = self.sharding.rank, self.sharding.world_size
        per_rank = math.ceil(len(remaining) / world_size)  # lockstep: padded to equal shares
        share = np.resize(remaining, per_rank * world_size)[rank * per_rank : (rank + 1) * per_rank]
        rest = self._rest_batches(len(remaining))
        if self.drop_last and len(share):
            share = np.resize(share, rest * self.batch_size)  # whole batches: wrapped or cut
        front = (self.num_batches() - rest) * self.batch_size
        filler = np.resize(delivered if len(delivered) else order, front)
        return np.concatenate([filler, share]).astype(np.int64)

    @property
    def samples_per_rank(self) -> int:
        """Samples in this rank's shard (before exclusions; with padding in a training feed)."""
        n, world_size = len(self.samples), self.sharding.world_size
        if self.repeats > 1:
            return n // world_size
        if self.lockstep:
            return math.ceil(n / world_size) if self.pad else n // world_size
        return n // world_size + (self.sharding.rank < n % world_size)

    def num_samples(self) -> int:
        """Samples this rank reads per epoch (the same every epoch)."""
        if self.lockstep or self.repeats > 1:
            return self.samples_per_rank
        # Evaluation reads the data set in order: this rank's shard is one range of ids.
        n, world_size, rank = len(self.samples), self.sharding.world_size, self.sharding.rank
        start = rank * (n // world_size) + min(rank, n % world_size)
        end = start + self.samples_per_rank
        return end - start - sum(start <= i < end for i in self.excluded)

    def num_batches(self) -> int:
        """Batches per epoch on this rank (the same every epoch)."""
        if self._batches is None or self._batches[0] is not self.excluded:
            count = self.num_samples()
            batches = count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)
            self._batches = (self.excluded, batches)
        return self._batches[1]

    def batch_ids(self, epoch: int, iteration: int) -> np.ndarray:
        if iteration >= self.num_batches():
            raise StopIteration
        return self.shard(epoch)[iteration * self.batch_size : (iteration + 1) * self.batch_size]

    def state_dict(self) -> dict:
        """The samples left out, and an epoch resumed under another world size."""
        resumed = self.resumed and {"epoch": self.resumed[0], "delivered": self.resumed[1].tolist()}
        return {"excluded": sorted(self.excluded), "resumed": resumed}

    def load_state_dict(self, state: dict) -> None:
        self.excluded = frozenset()
        self.exclude(state["excluded"])
        resumed = state.get("resumed")
        self.resumed = resumed and (int(resumed["epoch"]), np.asarray(resumed["delivered"], np.int64))
        self._cache = (self.excluded, {})

"""The epoch order, as a pure function: which samples make batch ``i`` of epoch ``e`` on this rank.

DALI's ``external_source`` calls :class:`EpochFeed` with a ``BatchInfo`` (epoch and iteration), so
the order never depends on how the pipeline got there: the same after a restart from a DALI
checkpoint, after a rebuilt pipeline, or in a second loader built for another phase of training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dalaug.sources import Samples


@dataclass(frozen=True)
class Sharding:
    """This process's place among the ranks of a distributed run."""

    rank: int = 0
    world_size: int = 1


class EpochFeed:
    """Batches of (encoded bytes, label, sample id) for ``fn.external_source(batch_info=True)``.

    Each epoch is a permutation of the data set seeded by ``(seed, epoch)`` (identity order when
    ``shuffle`` is False). The permutation is padded by wrapping around to a multiple of
    ``world_size`` and split into equal contiguous shards, so every rank gets the same number of
    samples and every sample appears once per epoch across ranks; the only duplicates are the at
    most ``world_size - 1`` padding samples.
    """

    def __init__(
        self, samples: Samples, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int,
        sharding: Sharding = Sharding(),
    ) -> None:  # fmt: skip
        self.samples = samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.sharding = sharding
        self.first_epoch = 0  # the epoch that DALI's epoch_idx 0 stands for

    def shard(self, epoch: int) -> np.ndarray:
        """Sample ids this rank reads in ``epoch``, in order."""
        n = len(self.samples)
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
        else:
            order = np.arange(n)
        per_rank = self.samples_per_rank
        padded = np.resize(order, per_rank * self.sharding.world_size)
        return padded[self.sharding.rank * per_rank : (self.sharding.rank + 1) * per_rank]

    @property
    def samples_per_rank(self) -> int:
        return math.ceil(len(self.samples) / self.sharding.world_size)

    def num_batches(self) -> int:
        """Batches per epoch on this rank (the same every epoch)."""
        count = self.samples_per_rank
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def batch_ids(self, epoch: int, iteration: int) -> np.ndarray:
        if iteration >= self.num_batches():
            raise StopIteration
        return self.shard(epoch)[iteration * self.batch_size : (iteration + 1) * self.batch_size]

    def __call__(self, info) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        ids = self.batch_ids(self.first_epoch + info.epoch_idx, info.iteration)
        encoded = [self.samples.read(i) for i in ids]
        return encoded, self.samples.labels[ids].astype(np.int32), ids.astype(np.int64)

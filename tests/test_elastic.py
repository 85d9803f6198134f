"""A loader state resumed under another number of ranks: every sample of the epoch once, across both runs."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

import dalaug

CROP = 16
BATCH = 4


def _loaders(folder, world_size, monkeypatch):
    """One loader per rank of ``world_size``, as each rank of torchrun builds it (RANK / WORLD_SIZE)."""
    loaders = []
    for rank in range(world_size):
        monkeypatch.setenv("WORLD_SIZE", str(world_size))
        monkeypatch.setenv("RANK", str(rank))
        loaders.append(dalaug.Loader(folder, BATCH, train=True, drop_last=False, crop=CROP, device="cpu",
                                     io_workers=0, num_threads=1))  # fmt: skip
    return loaders


def _read(loaders, batches=None, alive=None):
    """The ids the ranks read: ``batches`` batches each (None: to the epoch's end). The iterators
    stay in ``alive`` so that a state taken afterwards is mid-epoch (a dropped one ends its epoch)."""
    ids = []
    for loader in loaders:
        iterator = iter(loader)
        for _ in iterator if batches is None else (next(iterator) for _ in range(batches)):
            ids += loader.sample_ids.tolist()
        if alive is not None:
            alive.append(iterator)
    return ids


@pytest.mark.parametrize(("before", "after"), [(2, 3), (3, 2), (4, 1)])
def test_a_mid_epoch_state_resumes_on_another_world_size_each_sample_once(photo_folder, monkeypatch, before,
                                                                         after):  # fmt: skip
    old, alive = _loaders(photo_folder, before, monkeypatch), []
    first = _read(old, batches=2, alive=alive)
    state = old[0].state_dict()
    for loader in old:
        loader.close()
    new = _loaders(photo_folder, after, monkeypatch)
    for loader in new:
        loader.load_state_dict(state)  # any rank's state: rank 0's
        assert loader.epoch == 0 and loader.iteration > 0 and len(loader) == len(new[0])
    rest = _read(new)
    counts = collections.Counter(first + rest)
    assert set(counts) == set(range(60))  # every sample of the epoch
    assert not set(first) & set(rest)  # nothing read before is read again
    # the only repeats are the ranks' padding to equal shares (at most world_size - 1 per run)
    assert sum(counts.values()) - 60 <= (before - 1) + (after - 1)
    # the next epoch is this world size's own
    following = _read(new)
    assert set(following) == set(range(60)) and len(following) - 60 <= after - 1


def test_another_ranks_state_resumes_the_position_with_this_ranks_shard_and_draws(photo_folder, monkeypatch):
    """Lightning saves rank 0's loader state and hands it to every rank: rank 1 goes on from the
    position in its own shard, and never draws rank 0's augmentation."""
    (zero, one), alive = _loaders(photo_folder, 2, monkeypatch), []
    first = _read([zero, one], batches=2, alive=alive)
    state = zero.state_dict()
    (zero_again, one_again) = _loaders(photo_folder, 2, monkeypatch)
    zero_again.load_state_dict(state)
    one_again.load_state_dict(state)
    assert (one_again.epoch, one_again.iteration) == (0, 2)
    # rank 0's DALI checkpoint and operator draws are not taken: rank 1 starts draws of its own
    assert one_again._pipeline is None
    assert not torch.equal(one_again.generator.get_state(), state["generator"])
    rest = _read([zero_again, one_again])
    assert set(first + rest) == set(range(60)) and not set(first) & set(rest)


def test_a_state_resumed_elsewhere_can_be_saved_and_resumed_again(photo_folder, monkeypatch):
    """An elastic job that shrinks, then grows back within one epoch."""
    alive = []
    old = _loaders(photo_folder, 2, monkeypatch)
    first = _read(old, batches=2, alive=alive)
    middle_run = _loaders(photo_folder, 1, monkeypatch)
    middle_run[0].load_state_dict(old[0].state_dict())
    middle = _read(middle_run, batches=2, alive=alive)
    last_run = _loaders(photo_folder, 3, monkeypatch)
    for loader in last_run:
        loader.load_state_dict(middle_run[0].state_dict())
    last = _read(last_run)
    counts = collections.Counter(first + middle + last)
    assert set(counts) == set(range(60)) and not set(first + middle) & set(last)
    assert sum(counts.values()) - 60 <= 1 + 0 + 2


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"LOCAL_WORLD_SIZE": "2"}, 2),
        ({"SLURM_NTASKS_PER_NODE": "4"}, 4),
        ({"SLURM_TASKS_PER_NODE": "4(x2)"}, 4),  # srun without --ntasks-per-node
        ({"SLURM_TASKS_PER_NODE": "4(x2),3", "SLURM_NODEID": "2"}, 3),  # the third node's count
        ({"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, 2),
        ({}, 8),  # no launcher says: the whole world (one node)
    ],
)
def test_the_ranks_sharing_a_node_come_from_the_launcher(monkeypatch, variables, expected):
    from dalaug.feed import Sharding
    from dalaug.loader import LOCAL_WORLD_SIZE_VARIABLES, _local_world_size

    for name in (*LOCAL_WORLD_SIZE_VARIABLES, "SLURM_NODEID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert _local_world_size(Sharding(0, 8)) == expected


@pytest.mark.parametrize("world_size", [1, 3, 4])
def test_repeated_augmentation_serves_each_chosen_sample_repeats_times_on_different_ranks(world_size):
    """timm's --aug-repeats / DeiT's RASampler: the copies of a sample go to different ranks."""
    from dalaug.feed import EpochFeed, Sharding
    from dalaug.reading.sources import Samples

    n, repeats = 60, 3
    ids = np.arange(n)
    samples = Samples(tuple(map(str, ids)), ids - ids - 1, ids - ids - 1, ids % 3, ("a", "b", "c"))
    feeds = [EpochFeed(samples, 4, shuffle=True, drop_last=True, seed=5, sharding=Sharding(rank, world_size),
                       repeats=repeats) for rank in range(world_size)]  # fmt: skip
    shards = [feed.shard(2) for feed in feeds]
    for shard, feed in zip(shards, feeds, strict=True):
        assert len(shard) == n // world_size == feed.num_samples()
    counts = collections.Counter(np.concatenate(shards).tolist())
    # every sample served is served `repeats` times, but at the cut between ranks' last places
    assert sorted(set(counts.values()))[-1] == repeats and sum(c != repeats for c in counts.values()) <= 2
    if world_size >= repeats:  # the copies land on different ranks, in the same step
        for sample in counts:
            assert sum(sample in shard for shard in shards) == counts[sample]
    assert not np.array_equal(feeds[0].shard(3), shards[0])  # a new order each epoch


def test_the_repeated_augmentation_samplers_translate(photo_folder):
    from timm.data.distributed_sampler import RepeatAugSampler
    from torchvision import datasets
    from torchvision import transforms as T

    from dalaug.feed import Sharding

    dataset = datasets.ImageFolder(photo_folder, T.Compose([T.RandomResizedCrop(CROP), T.ToTensor()]))
    sampler = RepeatAugSampler(dataset, num_replicas=2, rank=1, num_repeats=3)
    loader = dalaug.Loader(dataset, BATCH, sampler=sampler, device="cpu")
    assert loader.config.repeats == 3 and loader.feed.sharding == Sharding(1, 2)
    assert len(loader.feed.shard(0)) == 30

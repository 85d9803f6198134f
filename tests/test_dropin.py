"""The DataLoader surface that third-party training scripts touch, on a dalaug Loader."""

from __future__ import annotations

import threading

import pytest
import torch
from torchvision.datasets import ImageFolder

import dalaug

CROP = 32


def test_train_must_be_said_or_follow_shuffle(photo_folder):
    with pytest.raises(ValueError, match="train: say train=True"):
        dalaug.Loader(photo_folder, 8, crop=CROP, device="cpu")
    # A DataLoader call says it with shuffle: shuffle=False is a validation loader, which never augments.
    val = dalaug.Loader(photo_folder, 8, shuffle=False, crop=CROP, device="cpu")
    train = dalaug.Loader(photo_folder, 8, shuffle=True, crop=CROP, device="cpu")
    assert (val.train, val.drop_last, train.train, train.drop_last) == (False, False, True, True)
    assert sum(len(y) for _, y in val) == 60  # every sample once, the last partial batch too


def test_dataset_sampler_and_attributes_answer_like_a_dataloader(photo_folder):
    loader = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", num_workers=2,
                           pin_memory=True, drop_last=False)  # fmt: skip
    reference = ImageFolder(photo_folder)
    dataset = loader.dataset
    assert len(dataset) == len(reference) and dataset.classes == reference.classes
    assert dataset.class_to_idx == reference.class_to_idx
    assert dataset.samples == [(str(p), y) for p, y in reference.samples] == dataset.imgs
    assert dataset.targets == reference.targets
    assert (loader.batch_size, loader.drop_last, loader.num_workers) == (8, False, 2)
    assert len(loader) == 8  # 60 / 8 rounded up: drop_last=False is honoured
    sampler = loader.sampler
    assert (len(sampler), sampler.num_replicas, sampler.rank, sampler.shuffle) == (60, 1, 0, True)
    sampler.set_epoch(3)  # as a DistributedSampler loop does: the loader serves epoch 3 next
    assert loader.epoch == 3 and sorted(sampler) == list(range(60))


def test_the_repr_shows_what_the_loader_does(photo_folder):
    evaluation = dalaug.Loader(photo_folder, 8, train=False, crop=CROP, device="cpu")
    assert repr(evaluation).startswith("Loader(60 samples, LoaderConfig(batch_size=8, train=False,")
    assert "train=True" not in repr(evaluation) and "operators" not in repr(evaluation)
    mixing = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", operators=dalaug.Mixup(0.2))
    assert "train=True" in repr(mixing) and repr(mixing).endswith(f"operators=[{dalaug.Mixup(0.2)!r}])")


@pytest.mark.parametrize("name", ["collate_fn", "batch_sampler", "worker_init_fn", "timeout", "cropsize"])
def test_dataloader_arguments_without_a_meaning_here_say_what_to_use(photo_folder, name):
    with pytest.raises(TypeError, match=f"{name}: not a dalaug.Loader argument"):
        dalaug.Loader(photo_folder, 8, train=True, device="cpu", **{name: print})


def test_dataloader_arguments_at_their_defaults_are_accepted(photo_folder):
    # Scripts pass DataLoader's defaults explicitly (torchvision's references: collate_fn=None).
    loader = dalaug.Loader(photo_folder, 8, train=True, device="cpu", collate_fn=None, sampler=None,
                           batch_sampler=None, worker_init_fn=None, generator=None, timeout=0)  # fmt: skip
    assert len(loader) == 7


def test_dataloader_names_cannot_contradict_ours(photo_folder):
    with pytest.raises(TypeError, match="num_workers or num_threads"):
        dalaug.Loader(photo_folder, 8, train=True, device="cpu", num_workers=2, num_threads=3)


def test_a_batch_larger_than_the_shard_is_refused_when_built(photo_folder):
    with pytest.raises(ValueError, match="batch_size: 64 is more than the 60 samples"):
        dalaug.Loader(photo_folder, 64, train=True, crop=CROP, device="cpu")


def test_channels_last_and_float16_come_straight_from_dali(photo_folder):
    loader = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", dtype=torch.float16,
                           memory_format=torch.channels_last)  # fmt: skip
    images, _ = next(iter(loader))
    assert images.shape == (8, 3, CROP, CROP) and images.dtype == torch.float16
    assert images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    plain = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", dtype=torch.float16)
    reference, _ = next(iter(plain))
    assert torch.equal(images, reference)  # the same pixels, another layout


def test_a_peek_costs_no_rebuild_and_the_next_epoch_is_whole(photo_folder):
    loader = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", seed=3)
    reference = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", seed=3)
    next(iter(loader))  # a peek, as scripts do to print shapes: counts as a broken-off epoch
    reference.set_epoch(1)
    ids = [loader.sample_ids.clone() for _ in loader]
    assert torch.equal(torch.cat(ids), torch.cat([reference.sample_ids.clone() for _ in reference]))
    for _ in loader:  # and on into epoch 2 with the same pipeline
        pass
    assert loader._generation == 1  # one pipeline built, for all of it


def test_a_kept_peek_ends_when_the_next_epoch_starts_and_no_epoch_is_skipped(photo_folder):
    loader = dalaug.Loader(photo_folder, 8, train=False, crop=CROP, device="cpu")
    peek = iter(loader)
    next(peek)  # kept, e.g. a warm-up batch for torch.compile
    first = [loader.sample_ids.clone() for _ in loader]  # a new epoch, whole: the peek counted as one
    del peek  # its end comes late and moves nothing
    second = [loader.sample_ids.clone() for _ in loader]
    assert loader.epoch == 3
    assert torch.equal(torch.cat(first), torch.arange(60))
    assert torch.equal(torch.cat(second), torch.arange(60))
    one, other = iter(loader), iter(loader)
    next(one)
    next(other)  # takes over: no batch goes to both, the one before says so
    with pytest.raises(RuntimeError, match="ended by a newer iter"):
        next(one)


def test_files_are_read_off_the_training_thread_also_without_workers(photo_folder):
    loader = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", io_workers=0)
    read, threads = loader.reader.read_bytes, set()

    def recording(index):
        threads.add(threading.current_thread().name)
        return read(index)

    loader.reader.read_bytes = recording
    for _ in loader:
        pass
    assert threads and all(name.startswith("dalaug-read") for name in threads)


def test_a_state_saved_under_another_configuration_is_refused(photo_folder):
    heavy = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", policy="autoaugment")
    next(iter(heavy))
    clean = heavy.with_options(policy=None, flip=False)
    with pytest.raises(ValueError, match="another configuration"):
        clean.load_state_dict(heavy.state_dict())
    # Performance settings are not part of it: a state moves between thread counts.
    heavy.with_options(num_threads=1, prefetch=3).load_state_dict(heavy.state_dict())


def test_operators_in_the_loader_give_soft_targets_and_turn_off_at_once(photo_folder):
    mix = dalaug.Mixup(alpha=1.0, num_classes=3, seed=0)
    loader = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", operators=[mix])
    images, soft = next(iter(loader))
    assert soft.shape == (8, 3) and torch.allclose(soft.sum(1), torch.ones(8))
    assert (soft.max(1).values < 1).any()  # mixed
    mix.mixup_enabled = False  # what timm's train.py sets at --mixup-off-epoch
    for _, soft in loader:
        assert torch.equal(soft.max(1).values, torch.ones(8))  # one-hot: not mixed any more


def test_the_device_is_resolved_once_not_per_thread(monkeypatch):
    # torch.cuda.current_device() is per host thread: the Schedule builds loaders in its own thread,
    # where it would say 0. Shown here without a GPU by letting each thread answer differently.
    from dalaug.config import LoaderConfig, resolve_device

    local = threading.local()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: getattr(local, "device", 0))
    local.device = 3  # this rank's GPU, set by torch.cuda.set_device in the main thread
    assert resolve_device(None) == resolve_device("cuda") == torch.device("cuda", 3)
    config = LoaderConfig(batch_size=8, train=True, shuffle=True, drop_last=True)
    built = []
    worker = threading.Thread(target=lambda: built.append(config.replace(policy="autoaugment")))
    worker.start()
    worker.join()
    assert config.device == built[0].device == torch.device("cuda", 3)


def test_a_schedule_iterated_like_a_loader_runs_refinement_in_an_unchanged_loop(photo_folder):
    template = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", policy="autoaugment")
    heavy = dalaug.Phase(2, policy="autoaugment", operators=[dalaug.Mixup(alpha=1.0, num_classes=3)])
    with dalaug.Schedule(dalaug.refine(heavy, 1), template) as schedule:
        train_loader = schedule.as_loader()
        seen = []
        for epoch in range(3):  # a DataLoader loop, DistributedSampler-style set_epoch included
            train_loader.sampler.set_epoch(epoch)
            rows = torch.cat([soft for _, soft in train_loader])
            seen.append((train_loader.loader.config.policy, bool((rows.max(1).values < 1).any())))
            assert rows.shape == (len(train_loader) * 8, 3)  # soft targets in every phase
        assert [mixed for _, mixed in seen] == [True, True, False]
        assert seen[0][0] is not None and seen[2][0] is None  # the clean pipeline for refinement
        assert len(train_loader.dataset) == 60 and train_loader.batch_size == 8


def test_a_schedule_as_a_loader_tells_each_epochs_length_and_obeys_the_mixup_switch(photo_folder):
    template = dalaug.Loader(photo_folder, 4, train=True, crop=CROP, device="cpu")
    heavy = dalaug.Phase(2, operators=[dalaug.Mixup(alpha=1.0, num_classes=3)])
    clean = dalaug.Phase(1, options={"batch_size": 6})  # a phase may change the batch size
    with dalaug.Schedule([heavy, clean], template) as schedule:
        train_loader = schedule.as_loader()
        lengths, mixed = [], []
        for epoch in range(3):
            told = (len(train_loader), train_loader.batch_size)  # asked before the epoch, as loops do
            batches = [soft for _, soft in train_loader]
            lengths.append((told, (len(batches), batches[0].shape[0])))
            mixed.append(bool((torch.cat(batches).max(1).values < 1).any()))
            if epoch == 0:
                train_loader.mixup_enabled = False  # timm's --mixup-off-epoch
                assert not train_loader.mixup_enabled
        assert [told for told, _ in lengths] == [got for _, got in lengths] == [(15, 4), (15, 4), (10, 6)]
        assert mixed == [True, False, False]


def test_a_schedule_as_a_loader_keeps_telling_the_epoch_being_served_when_a_kept_peek_ends(photo_folder):
    template = dalaug.Loader(photo_folder, 4, train=True, crop=CROP, device="cpu")
    phases = [dalaug.Phase(1), dalaug.Phase(1, options={"batch_size": 6}), dalaug.Phase(1)]
    with dalaug.Schedule(phases, template) as schedule:
        train_loader = schedule.as_loader()
        assert not train_loader.mixup_enabled  # no operators: nothing mixes
        with pytest.raises(AttributeError, match="mixup_enabled: no phase"):
            train_loader.mixup_enabled = False
        peek = iter(train_loader)
        next(peek)  # epoch 0, kept
        served = 0
        for _ in train_loader:  # epoch 1, batches of 6
            if served == 0:
                del peek  # the peek's end comes now: epoch 1 is still being served
            assert (len(train_loader), train_loader.batch_size) == (10, 6)
            served += 1
        assert served == 10 and (len(train_loader), train_loader.batch_size) == (15, 4)


def test_a_schedules_template_may_not_bring_operators_of_its_own(photo_folder):
    template = dalaug.Loader(photo_folder, 4, train=True, crop=CROP, device="cpu",
                             operators=[dalaug.Mixup(alpha=1.0, num_classes=3)])  # fmt: skip
    with pytest.raises(ValueError, match="loader: has operators .*Phase"):
        dalaug.Schedule(dalaug.refine(dalaug.Phase(2, policy="autoaugment"), 1), template)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_batches_never_wait_for_the_device(photo_folder):
    mix = dalaug.Mixup(alpha=1.0, num_classes=3)
    loader = dalaug.Loader(
        photo_folder, 8, train=True, crop=CROP, device="cuda", policy="autoaugment",
        dtype=torch.bfloat16, memory_format=torch.channels_last, operators=[mix],
    )  # fmt: skip
    next(iter(loader))  # the first batch builds the pipeline, which may wait for the device
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):  # on into the next epoch too: the stream goes on, nothing is rebuilt
            batches = list(loader)
        images, soft = batches[-1]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert images.is_cuda and soft.is_cuda and images.dtype == torch.bfloat16
    assert images.is_contiguous(memory_format=torch.channels_last) and soft.shape == (8, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_loader_built_in_another_thread_stays_on_its_device(photo_folder):
    # The Schedule builds the next phase's loader in its own thread, where the current CUDA device
    # is cuda:0 whatever the rank set: the loader must keep the device resolved at construction.
    device = torch.device("cuda", torch.cuda.device_count() - 1)
    torch.cuda.set_device(device)
    heavy = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, policy="autoaugment")
    built = []
    worker = threading.Thread(target=lambda: built.append(heavy.with_options(policy=None)))
    worker.start()
    worker.join()
    images, targets = next(iter(built[0]))
    assert heavy.device == built[0].device == images.device == targets.device == device


def test_a_loader_built_before_init_process_group_reads_its_ranks_share(photo_folder, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets them, before the script initializes
    shares = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        loader = dalaug.Loader(photo_folder, 8, train=False, crop=CROP, device="cpu")
        assert (loader.sampler.num_replicas, loader.sampler.rank) == (2, rank)
        shares.append(torch.cat([loader.sample_ids.clone() for _ in loader]).tolist())
    assert sorted(shares[0] + shares[1]) == list(range(60)) and not set(shares[0]) & set(shares[1])
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="distributed: WORLD_SIZE='2' and RANK='x'"):
        dalaug.Loader(photo_folder, 8, train=False, crop=CROP, device="cpu")

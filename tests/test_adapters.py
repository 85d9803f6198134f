"""timm's create_loader arguments on dalaug: what timm's train.py passes takes effect or is refused."""

from __future__ import annotations

import pytest
import torch
from timm.data import FastCollateMixup, create_transform
from timm.loss import SoftTargetCrossEntropy

from dalaug.adapters import create_loader
from dalaug.ops import RandomErasing

SIZE = (3, 32, 32)


def test_a_timm_shaped_loop_mixes_until_the_off_epoch_then_stops(photo_folder):
    smoothing = 0.1
    collate = FastCollateMixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=smoothing, num_classes=3)
    loader = create_loader(
        photo_folder, input_size=SIZE, batch_size=8, is_training=True, auto_augment="rand-m9-mstd0.5",
        interpolation="bicubic", re_prob=0.25, re_mode="pixel", collate_fn=collate, num_workers=2,
        device="cpu",
    )  # fmt: skip
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
    criterion = SoftTargetCrossEntropy()
    mixup_off_epoch, peaks = 2, []
    for epoch in range(3):
        if epoch == mixup_off_epoch:
            loader.mixup_enabled = False  # timm's train.py, prefetcher path
        loader.sampler.set_epoch(epoch)
        for images, target in loader:
            assert images.shape == (8, *SIZE) and target.shape == (8, 3)
            criterion(model(images), target).backward()
            peaks.append((epoch, target.max(1).values))
    one_hot_peak = 1 - smoothing + smoothing / 3
    mixed = [bool((peak < one_hot_peak - 1e-6).any()) for epoch, peak in peaks if epoch < mixup_off_epoch]
    assert any(mixed)
    for epoch, peak in peaks:
        if epoch == mixup_off_epoch:
            assert torch.allclose(peak, torch.full((8,), one_hot_peak))  # smoothed, never mixed
    # As timm's switch, it stops the mixing and leaves --reprob's random erasing on.
    erasing = [op for op in loader.operators if isinstance(op, RandomErasing)]
    assert erasing and all(op.enabled for op in erasing) and not loader.mixup_enabled


def test_the_eval_loader_reads_every_sample_once_at_timm_crop_pct(photo_folder):
    loader = create_loader(photo_folder, input_size=32, batch_size=8, crop_pct=0.9, device="cpu")
    assert not loader.train
    assert sum(len(target) for _, target in loader) == 60


@pytest.mark.parametrize("crop_pct", [0.875, 0.9, 0.95, 1.0])
def test_the_eval_resize_is_timms(photo_folder, crop_pct):
    timm_resize = create_transform(224, is_training=False, crop_pct=crop_pct).transforms[0].size
    loader = create_loader(photo_folder, input_size=224, batch_size=8, crop_pct=crop_pct, device="cpu")
    assert loader.config.resize == timm_resize


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"vflip": 0.5}, "RandomVerticalFlip"),  # the transform timm builds for it is named
        ({"grayscale_prob": 0.2}, "RandomGrayscale"),
        ({"re_count": 2, "re_prob": 0.5}, "count="),
        ({"re_split": True}, "re_split"),
        ({"num_aug_splits": 3}, "num_aug_splits"),
        ({"batch_size_choices": [8, 16]}, "batch_size_choices"),
        ({"auto_augment": "augmix-m5-w4-d2"}, "AugMix"),
        ({"input_size": (3, 32, 48)}, "square"),
        ({"collate_fn": lambda batch: batch}, "collate_fn"),
        ({"worker_seeding": "part"}, "worker_seeding"),
    ],
)
def test_what_dalaug_cannot_do_is_refused_by_name(photo_folder, kwargs, name):
    arguments = {"input_size": SIZE, "batch_size": 8, "is_training": True, "device": "cpu", **kwargs}
    with pytest.raises((ValueError, TypeError), match=name):
        create_loader(photo_folder, **arguments)


def test_timm_train_py_defaults_are_accepted_and_honoured(tmp_path, photo_folder):
    """The keyword arguments timm's train.py (HEAD aa4b585) passes with its default flags, and
    --train-interpolation random: the loader's dataset is timm's, with timm's transform."""
    from timm.data import create_dataset

    dataset = create_dataset("", root=str(photo_folder))
    loader = create_loader(
        dataset, input_size=SIZE, input_size_choices=None, batch_size_choices=None,
        batch_choice_weights=None, batch_choice_seed=42, batch_choice_schedule="constant",
        batch_schedule_epochs=None, batch_schedule_spread=0.65, batch_schedule_random_mix=0.1,
        num_batches=None, collate_fn=None, use_multi_epochs_loader=False,
        # common_loader_kwargs
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), num_workers=2, distributed=False,
        pin_memory=False, img_dtype=torch.float32, device=torch.device("cpu"), use_prefetcher=True,
        # train_loader_kwargs
        batch_size=8, is_training=True, no_aug=False, re_prob=0.0, re_mode="pixel", re_count=1,
        re_split=False, train_crop_mode=None, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3], hflip=0.5,
        vflip=0.0, color_jitter=0.4, color_jitter_prob=None, grayscale_prob=0.0,
        gaussian_blur_prob=0.0, auto_augment=None, num_aug_repeats=0, num_aug_splits=0,
        interpolation="random", worker_seeding="all",
    )  # fmt: skip
    assert loader.dataset is dataset and loader.dataset.transform is not None
    assert loader.config.interpolation == "random" and loader.config.color_jitter == pytest.approx(0.4)
    assert loader.config.flip and loader.config.policy is None and loader.train
    images, target = next(iter(loader))
    assert images.shape == (8, *SIZE) and target.dtype == torch.int64
    assert hasattr(loader.batch_sampler, "__len__") and len(loader.batch_sampler) == len(loader)


def test_timm_drops_colour_jitter_beside_a_policy_and_reads_an_empty_policy_as_none(photo_folder):
    with_policy = create_loader(photo_folder, input_size=SIZE, batch_size=8, is_training=True,
                                auto_augment="rand-m9-mstd0.5-inc1", device="cpu")  # fmt: skip
    assert with_policy.config.color_jitter == 0 and with_policy.config.policy.increasing
    empty = create_loader(photo_folder, input_size=SIZE, batch_size=8, is_training=True, auto_augment="",
                          device="cpu")  # fmt: skip
    assert empty.config.policy is None and empty.config.color_jitter == pytest.approx(0.4)

"""A user's dataset, transform, sampler and mixing objects as a dalaug loader (dalaug.translation)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler, RandomSampler, Subset
from torchvision import datasets
from torchvision import transforms as v1
from torchvision.transforms import v2

import dalaug
from dalaug.policies import AutoAugment, RandAugment, TimmRandAugment, TrivialAugment
from dalaug.translation import Untranslatable, translate_transform

CROP = 32
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def _train(T, *middle, tail=()):
    to_float = [T.ToTensor()] if T is v1 else [T.ToImage(), T.ToDtype(torch.float32, scale=True)]
    crop = T.RandomResizedCrop(CROP, scale=(0.3, 0.9), ratio=(0.8, 1.25))
    return T.Compose([crop, *middle, *to_float, T.Normalize(MEAN, STD), *tail])


@pytest.mark.parametrize("T", [v1, v2], ids=["v1", "v2"])
def test_a_training_transform_becomes_the_options_it_says(T):
    transform = _train(T, T.RandomHorizontalFlip(), T.RandAugment(num_ops=3, magnitude=7),
                       tail=[T.RandomErasing(p=0.3, scale=(0.1, 0.2), ratio=(0.5, 2.0))])  # fmt: skip
    out = translate_transform(transform)
    assert out.train and out.options["crop"] == CROP
    assert out.options["scale"] == (0.3, 0.9) and out.options["ratio"] == (0.8, 1.25)
    assert out.options["flip"] and out.options["interpolation"] == "bilinear"
    assert out.options["policy"] == RandAugment(n=3, m=7, num_magnitude_bins=31, interpolation="nearest")
    assert out.options["mean"] == tuple(MEAN) and out.options["std"] == tuple(STD)
    (erasing,) = out.operators
    assert (erasing.p, erasing.scale, erasing.ratio, erasing.value) == (0.3, (0.1, 0.2), (0.5, 2.0), 0.0)


@pytest.mark.parametrize("T", [v1, v2], ids=["v1", "v2"])
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda T: T.AutoAugment(T.AutoAugmentPolicy.CIFAR10, fill=7), AutoAugment("cifar10", fill=7)),
        (lambda T: T.TrivialAugmentWide(num_magnitude_bins=21, interpolation=T.InterpolationMode.BILINEAR),
         TrivialAugment(num_magnitude_bins=21, interpolation="bilinear")),
        (lambda T: T.ColorJitter(0.3, 0.3, 0.3), None),
    ],
)  # fmt: skip
def test_policies_and_jitter_carry_their_parameters(T, make, expected):
    out = translate_transform(_train(T, make(T)))
    if expected is None:
        assert out.options["color_jitter"] == pytest.approx(0.3) and "policy" not in out.options
    else:
        assert out.options["policy"] == expected


@pytest.mark.parametrize("T", [v1, v2], ids=["v1", "v2"])
def test_an_evaluation_transform_resizes_and_centre_crops(T):
    transform = T.Compose([T.Resize(40, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(CROP),
                           T.PILToTensor(), T.ConvertImageDtype(torch.float32)])  # fmt: skip
    out = translate_transform(transform)
    assert not out.train
    assert out.options == {"resize": 40, "interpolation": "bicubic", "crop": CROP, "mean": (0.0, 0.0, 0.0),
                           "std": (1.0, 1.0, 1.0)}  # fmt: skip


def test_timms_create_transform_translates_with_its_random_interpolation_and_rand_augment():
    from timm.data import create_transform

    transform = create_transform(CROP, is_training=True, auto_augment="rand-m9-mstd0.5-inc1",
                                 interpolation="random", re_prob=0.25, re_mode="pixel")  # fmt: skip
    out = translate_transform(transform)
    assert out.options["interpolation"] == "random" and out.options["flip"]
    policy = out.options["policy"]
    assert isinstance(policy, TimmRandAugment)
    assert (policy.n, policy.m, policy.mstd, policy.increasing, policy.p) == (2, 9, 0.5, True, 0.5)
    assert policy.fill == round(np.mean((124, 116, 104)))  # timm's mean colour, as one grey
    (erasing,) = out.operators
    assert erasing.p == 0.25 and erasing.value == "random"
    assert erasing.ratio == pytest.approx((0.3, 1 / 0.3))


class MyCrop(v1.RandomResizedCrop):
    """A user's own class: translated by exact type only, so a subclass is refused."""


@pytest.mark.parametrize(
    ("transform", "name"),
    [
        (v1.Compose([v1.RandomResizedCrop(CROP), v1.Lambda(lambda x: x), v1.ToTensor()]), "Lambda"),
        (v1.Compose([MyCrop(CROP), v1.ToTensor()]), "MyCrop"),
        (v1.Compose([v1.RandomResizedCrop(CROP), v1.AugMix(), v1.ToTensor()]), "AugMix"),
        (v1.Compose([v1.RandomResizedCrop(CROP), v1.RandomVerticalFlip(), v1.ToTensor()]), "VerticalFlip"),
        (v1.Compose([v1.RandomResizedCrop(CROP), v1.RandomHorizontalFlip(0.3), v1.ToTensor()]), "p=0.3"),
        (v1.Compose([v1.RandomResizedCrop((CROP, 40)), v1.ToTensor()]), "square"),
        (v1.Compose([v1.RandomResizedCrop(CROP)]), "ToTensor"),
        (v1.Compose([v1.ToTensor(), v1.Normalize(MEAN, STD), v1.RandomResizedCrop(CROP)]), "comes after"),
        (v1.Compose([v1.CenterCrop(CROP), v1.ToTensor()]), "without a Resize"),
        (v1.Compose([v1.Resize((40, 50)), v1.CenterCrop(CROP), v1.ToTensor()]), "shorter side"),
        (v1.Compose([v1.RandomResizedCrop(CROP), v1.ColorJitter(0.4, 0.2), v1.ToTensor()]), "one strength"),
    ],
)  # fmt: skip
def test_what_has_no_translation_is_refused_by_name(transform, name):
    with pytest.raises(Untranslatable, match=name):
        translate_transform(transform)


def test_the_loaders_dataset_is_the_users_and_a_subset_of_it_reads_as_before(photo_folder):
    dataset = datasets.ImageFolder(photo_folder, _train(v1, v1.RandomHorizontalFlip()))
    loader = dalaug.Loader(dataset, 8, shuffle=True, device="cpu")
    assert loader.dataset is dataset and loader.dataset.transform is dataset.transform and loader.train
    assert loader.classes == dataset.classes and len(loader.dataset) == 60
    images, targets = next(iter(loader))
    assert images.shape == (8, 3, CROP, CROP) and targets.dtype == torch.int64
    # pytorch/examples' leftover pass: a torch DataLoader over a Subset of loader.dataset
    leftover = torch.utils.data.DataLoader(Subset(loader.dataset, range(55, 60)), batch_size=4)
    assert sum(len(y) for _, y in leftover) == 5
    # and a dalaug loader over a Subset reads those samples, in the Subset's order
    subset = dalaug.Loader(Subset(dataset, [9, 3, 41]), 2, shuffle=False, drop_last=False, device="cpu")
    ids = [i for _ in subset for i in subset.sample_ids.tolist()]
    assert ids == [0, 1, 2] and subset.samples.paths == tuple(dataset.samples[i][0] for i in (9, 3, 41))


def test_evaluation_pixels_match_torchvisions_within_the_decoders_rounding(photo_folder):
    """Resize + CenterCrop through DALI against the same transform through PIL, same files: the
    measured difference is what README's drop-in section states."""
    for mode in (v1.InterpolationMode.BILINEAR, v1.InterpolationMode.BICUBIC):
        transform = v1.Compose([v1.Resize(36, interpolation=mode), v1.CenterCrop(CROP), v1.ToTensor()])
        dataset = datasets.ImageFolder(photo_folder, transform)
        loader = dalaug.Loader(dataset, 60, shuffle=False, device="cpu")
        (images, targets), = list(loader)
        reference = torch.stack([dataset[i][0] for i in range(60)])
        difference = (images - reference).abs()
        assert targets.tolist() == dataset.targets
        # Decoders (libjpeg-turbo in PIL, DALI's) and the filters round differently: a few levels of 255.
        assert difference.mean() < 4 / 255, (mode, difference.mean())
        assert torch.quantile(difference.flatten(), 0.99) < 24 / 255, mode


def test_a_distributed_sampler_is_honoured_as_a_dataloader_honours_it(photo_folder):
    evaluation = v1.Compose([v1.Resize(36), v1.CenterCrop(CROP), v1.ToTensor()])
    dataset = datasets.ImageFolder(photo_folder, evaluation)
    seen = []
    for rank in range(2):  # 60 samples do not divide by 7 ranks: drop_last leaves 4 out
        sampler = DistributedSampler(dataset, num_replicas=7, rank=rank, shuffle=False, drop_last=True)
        loader = dalaug.Loader(dataset, 3, shuffle=False, sampler=sampler, device="cpu")
        assert loader.sampler is sampler and len(loader) == math.ceil(len(sampler) / 3) == 3
        seen += [i for _ in loader for i in loader.sample_ids.tolist()]
    assert len(seen) == len(set(seen)) == 16 and max(seen) < 56  # the first 7 * 8 samples only
    shuffled = DistributedSampler(dataset, num_replicas=2, rank=0, shuffle=True)
    loader = dalaug.Loader(dataset, 5, sampler=shuffled, device="cpu")
    first = [i for _ in loader for i in loader.sample_ids.tolist()]
    shuffled.set_epoch(0)  # the script's set_epoch decides the order, as with a DataLoader
    again = [i for _ in loader for i in loader.sample_ids.tolist()]
    shuffled.set_epoch(1)
    other = [i for _ in loader for i in loader.sample_ids.tolist()]
    assert first == again != other and loader.config.shuffle
    with pytest.raises(ValueError, match="not both"):
        dalaug.Loader(dataset, 5, sampler=shuffled, shuffle=True, device="cpu")
    assert dalaug.Loader(dataset, 5, sampler=RandomSampler(dataset), device="cpu").config.shuffle


def test_a_transform_assigned_later_takes_effect_at_the_next_epoch(photo_folder):
    dataset = datasets.ImageFolder(photo_folder, _train(v1, v1.TrivialAugmentWide()))
    loader = dalaug.Loader(dataset, 8, shuffle=True, device="cpu")
    next(iter(loader))
    assert isinstance(loader.config.policy, TrivialAugment)
    dataset.transform = _train(v1, v1.RandomHorizontalFlip())  # a final clean phase
    assert isinstance(loader.config.policy, TrivialAugment)  # not mid-epoch
    for _ in loader:
        pass
    assert loader.config.policy is None and loader.config.flip
    dataset.transform = v1.Compose([v1.Resize(36), v1.CenterCrop(CROP), v1.ToTensor()])
    with pytest.raises(ValueError, match="training to an evaluation"):
        next(iter(loader))


def test_erasing_alone_keeps_class_indices_and_mixing_gives_soft_targets(photo_folder):
    dataset = datasets.ImageFolder(photo_folder, _train(v1, tail=[v1.RandomErasing(p=1.0)]))
    images, targets = next(iter(dalaug.Loader(dataset, 8, shuffle=True, device="cpu")))
    assert targets.dtype == torch.int64 and (images == 0).any()
    # torchvision v2's mixing, as a script's collate_fn held it, with a 1000-way head on 3 classes
    mixing = v2.RandomChoice([v2.MixUp(alpha=0.2, num_classes=1000), v2.CutMix(alpha=1.0, num_classes=1000)])
    loader = dalaug.Loader(dataset, 8, shuffle=True, device="cpu", operators=mixing)
    choice = loader.operators[-1]
    assert [type(op).__name__ for op in choice.ops] == ["Mixup", "CutMix"]
    assert [op.partner for op in choice.ops] == ["roll", "roll"] and choice.p == [0.5, 0.5]
    images, soft = next(iter(loader))
    assert soft.shape == (8, 1000) and torch.allclose(soft.sum(1), torch.ones(8))
    with pytest.raises(ValueError, match="num_classes=2"):
        dalaug.Loader(dataset, 8, shuffle=True, device="cpu", operators=dalaug.Mixup(0.2, num_classes=2))


def test_timms_mixup_object_as_operators(photo_folder):
    from timm.data import Mixup

    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.25, label_smoothing=0.1, num_classes=3)
    loader = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", operators=mixup)
    (choice,) = loader.operators
    assert choice.p == [0.75, 0.25] and all(op.label_smoothing == 0.1 for op in choice.ops)


def test_datasets_that_are_not_files_are_refused_by_name(photo_folder):
    with pytest.raises(Untranslatable, match="FakeData has no image files"):
        dalaug.Loader(datasets.FakeData(8, (3, 8, 8), 2, v1.ToTensor()), 4, shuffle=True)
    dataset = datasets.ImageFolder(photo_folder, _train(v1), target_transform=lambda y: y + 1)
    with pytest.raises(Untranslatable, match="target_transform"):
        dalaug.Loader(dataset, 4, shuffle=True)
    with pytest.raises(ValueError, match="train: False, but dataset.transform is a training"):
        dalaug.Loader(datasets.ImageFolder(photo_folder, _train(v1)), 4, train=False, device="cpu")
    with pytest.raises(ValueError, match="crop: 64 given, but the dataset.transform says 32"):
        dalaug.Loader(datasets.ImageFolder(photo_folder, _train(v1)), 4, shuffle=True, crop=64, device="cpu")


def test_dalaug_dataloader_serves_what_it_can_and_says_when_torch_serves(photo_folder, caplog):
    dataset = datasets.ImageFolder(photo_folder, _train(v1, v1.RandomHorizontalFlip()))
    loader = dalaug.DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2, pin_memory=True)
    assert isinstance(loader, dalaug.Loader) and loader.config.shuffle and not loader.drop_last
    assert len(loader) == 8  # DataLoader's drop_last=False: the partial batch is kept
    with caplog.at_level(logging.WARNING, logger="dalaug"):
        fallback = dalaug.DataLoader(datasets.FakeData(8, (3, 8, 8), 2, v1.ToTensor()), batch_size=4)
    assert isinstance(fallback, torch.utils.data.DataLoader) and not isinstance(fallback, dalaug.Loader)
    assert "FakeData has no image files" in caplog.text and "torch's DataLoader" in caplog.text
    assert next(iter(fallback))[0].shape == (4, 3, 8, 8)


def test_random_interpolation_runs_and_only_in_training(photo_folder):
    loader = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, interpolation="random", device="cpu")
    assert next(iter(loader))[0].shape == (8, 3, CROP, CROP)
    with pytest.raises(ValueError, match="training loader's crop only"):
        dalaug.Loader(photo_folder, 8, train=False, crop=CROP, interpolation="random", device="cpu")


def test_dalaug_dataloader_takes_the_mixing_as_operators_or_collate_fn_and_torch_mixes_on_fallback(
    photo_folder, caplog
):  # fmt: skip
    dataset = datasets.ImageFolder(photo_folder, _train(v1))
    mixing = v2.MixUp(alpha=0.2, num_classes=3)
    for spelling in ({"operators": mixing}, {"collate_fn": mixing}):
        loader = dalaug.DataLoader(dataset, batch_size=8, shuffle=True, **spelling)
        assert isinstance(loader, dalaug.Loader) and loader.operators[0].partner == "roll"
    # torch serves FakeData: it collates, then mixes as the script's collate_fn did
    fake = datasets.FakeData(8, (3, 8, 8), 3, v1.ToTensor())
    with caplog.at_level(logging.WARNING, logger="dalaug"):
        fallback = dalaug.DataLoader(fake, batch_size=4, collate_fn=mixing)
    images, soft = next(iter(fallback))
    assert not isinstance(fallback, dalaug.Loader) and soft.shape == (4, 3)


def test_a_random_sampler_reads_every_sample_on_every_rank_as_torch_does(photo_folder, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    dataset = datasets.ImageFolder(photo_folder, _train(v1))
    loader = dalaug.Loader(dataset, 4, sampler=RandomSampler(dataset), drop_last=False, device="cpu")
    assert loader.feed.sharding.world_size == 1 and len(loader.sampler) == 60

"""Entry points shaped like other libraries', so a script swaps one import line.

:func:`create_loader` takes timm's ``timm.data.create_loader`` arguments (timm's ``train.py`` passes
all of them from its command line) and returns a dalaug :class:`~dalaug.Loader`. It builds the
transform the way timm's own does (``timm.data.create_transform``, with timm's prefetcher's
normalizing and erasing in it, which dalaug does on the device too), sets it on the dataset as timm
does, and the loader translates it (:mod:`dalaug.translation`): every augmentation argument takes
effect through the transform it builds, and one whose transform has no DALI translation
(``vflip``, ``grayscale_prob``, ...) is refused naming that transform. timm's mixing
(``FastCollateMixup`` given as ``collate_fn``, or ``Mixup``) becomes dalaug operators inside the
loader, so batches come out mixed, with soft targets, on the device, as timm's prefetcher gives them;
``loader.mixup_enabled = False`` (what timm does at ``--mixup-off-epoch``) turns them off.

Arguments about how timm's DataLoader runs (workers, pinning, the prefetcher, persistence) are
accepted for what dalaug does in their place; the rest either take effect or, where dalaug has no
equivalent for a value other than timm's default, raise a ValueError that names them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from dalaug.loader import Loader
from dalaug.translation import MIXING, translate_transform

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


def create_loader(
    dataset: Any,
    input_size: int | Sequence[int],
    batch_size: int,
    is_training: bool = False,
    no_aug: bool = False,
    re_prob: float = 0.0,
    re_mode: str = "const",
    re_count: int = 1,
    re_split: bool = False,
    train_crop_mode: str | None = None,
    scale: Sequence[float] | None = None,
    ratio: Sequence[float] | None = None,
    hflip: float = 0.5,
    vflip: float = 0.0,
    color_jitter: float | Sequence[float] = 0.4,
    color_jitter_prob: float | None = None,
    grayscale_prob: float = 0.0,
    gaussian_blur_prob: float = 0.0,
    auto_augment: str | None = None,
    num_aug_repeats: int = 0,
    num_aug_splits: int = 0,
    interpolation: str = "bilinear",
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    num_workers: int = 1,
    distributed: bool = False,
    crop_pct: float | None = None,
    crop_mode: str | None = None,
    crop_border_pixels: int | None = None,
    collate_fn: Any = None,
    pin_memory: bool = False,
    fp16: bool = False,
    img_dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    use_prefetcher: bool = True,
    use_multi_epochs_loader: bool = False,
    persistent_workers: bool = True,
    worker_seeding: str = "all",
    tf_preprocessing: bool = False,
    input_size_choices: Sequence | None = None,
    batch_size_choices: Sequence[int] | None = None,
    num_batches: int | None = None,
    **batch_schedule: Any,
) -> Loader:
    """A dalaug Loader from timm's ``create_loader`` arguments (see the module docstring).

    ``dataset`` is what timm's ``create_dataset`` returned (an ``ImageDataset`` over a folder: it
    becomes ``loader.dataset``, with the transform timm would give it), or a folder / WebDataset
    path. Training loaders mix when ``collate_fn`` is timm's ``FastCollateMixup`` (or ``Mixup``);
    evaluation loaders pad the ranks' shards to equal length, as timm's ordered distributed sampler
    does, because timm's ``validate`` reduces every batch. ``use_prefetcher``, ``pin_memory``,
    ``persistent_workers`` and ``use_multi_epochs_loader`` change nothing: batches arrive on the
    device, normalized (and erased), from DALI threads that persist, epoch after epoch.
    ``batch_schedule`` takes timm's batch-schedule arguments (``batch_choice_seed``, ...), which mean
    nothing without ``input_size_choices`` / ``batch_size_choices``: those are refused.

    Example:
        >>> from dalaug.adapters import create_loader  # instead of: from timm.data import create_loader
        >>> loader_train = create_loader(dataset_train, input_size=(3, 224, 224), batch_size=128,
        ...                              is_training=True, auto_augment="rand-m9-mstd0.5",
        ...                              collate_fn=FastCollateMixup(mixup_alpha=0.8, cutmix_alpha=1.0,
        ...                                                          num_classes=1000))  # doctest: +SKIP
    """
    from timm.data import create_transform  # a timm user's entry point: timm is theirs to install

    unknown = sorted(batch_schedule.keys() - TIMM_BATCH_SCHEDULE)
    if unknown:
        raise TypeError(f"{', '.join(unknown)}: not an argument of timm's create_loader")
    refused = {
        "input_size_choices": (input_size_choices, None, "dalaug's batches have one size"),
        "batch_size_choices": (batch_size_choices, None, "dalaug's batches have one size"),
        "num_batches": (num_batches, None, "an epoch is the data set once"),
        "num_aug_splits": (num_aug_splits, 0, "augmentation splits (AugMix's) are not supported"),
        "re_split": (re_split, False, "random erasing applies to the whole batch"),
        "worker_seeding": (worker_seeding, "all", "dalaug's augmentation follows `seed` per rank"),
    }  # fmt: skip
    for name, (value, default, reason) in refused.items():
        if value != default:
            raise ValueError(
                f"{name}={value!r}: not supported by dalaug's loader ({reason}); leave it at {default!r}"
            )
    if collate_fn is not None and type(collate_fn) not in MIXING:
        raise ValueError(
            f"collate_fn: {type(collate_fn).__name__} is not timm's Mixup/FastCollateMixup; give batch "
            "operators to dalaug.Loader(operators=...) instead"
        )
    transform = create_transform(
        input_size, is_training=is_training, no_aug=no_aug, train_crop_mode=train_crop_mode, scale=scale,
        ratio=ratio, hflip=hflip, vflip=vflip, color_jitter=color_jitter, color_jitter_prob=color_jitter_prob,
        grayscale_prob=grayscale_prob, gaussian_blur_prob=gaussian_blur_prob, auto_augment=auto_augment,
        interpolation=interpolation, mean=mean, std=std, crop_pct=crop_pct, crop_mode=crop_mode,
        crop_border_pixels=crop_border_pixels, re_prob=re_prob, re_mode=re_mode, re_count=re_count,
        tf_preprocessing=tf_preprocessing,
        # The whole transform, normalizing and erasing included: what timm's prefetcher does on the
        # device is in the dalaug graph and operators, with or without the prefetcher.
        use_prefetcher=False,
    )  # fmt: skip
    options: dict[str, Any] = dict(
        shuffle=is_training, drop_last=is_training, num_workers=num_workers or None,
        dtype=torch.float16 if fp16 else img_dtype, device=device, distributed=distributed,
        operators=collate_fn,
    )  # fmt: skip
    if not is_training:
        options["lockstep"] = True  # timm's validate() all-reduces every batch: equal batch counts
    elif num_aug_repeats:
        options["repeats"] = num_aug_repeats  # timm's RepeatAugSampler
    if isinstance(dataset, (str, os.PathLike)):
        translation = translate_transform(transform)
        options["operators"] = [*translation.operators, *([] if collate_fn is None else [collate_fn])]
        return Loader(dataset, batch_size, train=translation.train, **translation.options, **options)
    dataset.transform = transform  # as timm's create_loader does
    return Loader(dataset, batch_size, **options)


# timm's batch-schedule arguments, inert without input_size_choices / batch_size_choices.
TIMM_BATCH_SCHEDULE = {
    "batch_choice_weights", "batch_choice_seed", "batch_choice_schedule", "batch_schedule_epochs",
    "batch_schedule_spread", "batch_schedule_random_mix",
}  # fmt: skip

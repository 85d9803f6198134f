"""Entry points shaped like other libraries', so a script swaps one import line.

:func:`create_loader` takes timm's ``timm.data.create_loader`` arguments (timm's ``train.py`` passes
all of them from its command line) and returns a dalaug :class:`~dalaug.Loader`. timm's
mixing (``FastCollateMixup`` given as ``collate_fn``, or ``Mixup``) becomes dalaug operators inside
the loader, so batches come out mixed, with soft targets, on the device, as timm's prefetcher gives
them; ``loader.mixup_enabled = False`` (what timm does at ``--mixup-off-epoch``) turns them off.

Every argument either takes effect or, where dalaug has no equivalent, raises a ValueError that
names it: nothing a command line sets is silently dropped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from dalaug.loader import Loader
from dalaug.ops import BatchOp, CutMix, Mixup, RandomChoice, RandomErasing

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875


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
    **schedules: Any,
) -> Loader:
    """A dalaug Loader from timm's ``create_loader`` arguments (see the module docstring).

    ``dataset`` is what timm's ``create_dataset`` returned (its folder is read again by dalaug),
    or a folder / WebDataset path. Training loaders mix when ``collate_fn`` is timm's
    ``FastCollateMixup`` (or ``Mixup``); evaluation loaders pad the ranks' shards to equal length,
    as timm's ordered distributed sampler does, because timm's ``validate`` reduces every batch.

    Example:
        >>> from dalaug.adapters import create_loader  # instead of: from timm.data import create_loader
        >>> loader_train = create_loader(dataset_train, input_size=(3, 224, 224), batch_size=128,
        ...                              is_training=True, auto_augment="rand-m9-mstd0.5",
        ...                              collate_fn=FastCollateMixup(mixup_alpha=0.8, cutmix_alpha=1.0,
        ...                                                          num_classes=1000))  # doctest: +SKIP
    """
    unsupported = {
        "no_aug": no_aug, "re_split": re_split, "vflip": vflip, "color_jitter_prob": color_jitter_prob,
        "grayscale_prob": grayscale_prob, "gaussian_blur_prob": gaussian_blur_prob,
        "num_aug_repeats": num_aug_repeats, "num_aug_splits": num_aug_splits,
        "crop_border_pixels": crop_border_pixels, "tf_preprocessing": tf_preprocessing,
        # How timm seeds its worker processes: dalaug's augmentation follows `seed` per rank instead.
        "worker_seeding": worker_seeding,
        **{name: value for name, value in schedules.items() if value is not None},
    }  # fmt: skip
    for name, value in unsupported.items():
        if value not in (None, False, 0, 0.0, "all"):
            raise ValueError(f"{name}={value!r}: not supported by dalaug's loader; leave it at its default")
    if re_count != 1:
        raise ValueError(f"re_count={re_count!r}: dalaug's RandomErasing erases one box; use 1")
    if train_crop_mode not in (None, "rrc"):
        raise ValueError(f"train_crop_mode={train_crop_mode!r}: dalaug crops with 'rrc'")
    if crop_mode not in (None, "center"):
        raise ValueError(f"crop_mode={crop_mode!r}: dalaug's eval crop is a centre crop")
    if hflip not in (0, 0.5):
        raise ValueError(f"hflip={hflip!r}: dalaug flips with probability 0.5 or not at all")
    crop = _square_size(input_size)
    options: dict[str, Any] = dict(
        crop=crop, interpolation=interpolation, mean=tuple(mean), std=tuple(std),
        dtype=torch.float16 if fp16 else img_dtype, device=device, distributed=distributed,
        num_threads=num_workers or None,
    )  # fmt: skip
    if not is_training:
        # timm's validate() all-reduces every batch: the ranks must hold equal batch counts.
        resize = math.floor(crop / (crop_pct or DEFAULT_CROP_PCT))  # as timm's eval transform
        return Loader(_source(dataset), batch_size, train=False, resize=resize, lockstep=True, **options)
    # timm leaves colour jitter out when a policy is set, and so does this.
    jitter = 0.0 if auto_augment else _single(color_jitter)
    operators = _operators(collate_fn)
    if re_prob:
        if re_mode not in ("const", "pixel"):
            raise ValueError(f"re_mode={re_mode!r}: dalaug fills 'const' or 'pixel'")
        operators.append(RandomErasing(p=re_prob, value="random" if re_mode == "pixel" else 0.0))
    for name, value in (("scale", scale), ("ratio", ratio)):
        if value is not None:
            options[name] = tuple(value)
    return Loader(
        _source(dataset), batch_size, train=True, policy=auto_augment, flip=hflip > 0,
        color_jitter=jitter, operators=operators, **options,
    )  # fmt: skip


def _source(dataset: Any) -> Any:
    """The folder (or shards) behind what timm's or torchvision's dataset constructors return."""
    if isinstance(dataset, (str, os.PathLike)):
        return dataset
    for path in ("root", "reader.root"):
        value: Any = dataset
        for attribute in path.split("."):
            value = getattr(value, attribute, None)
        if isinstance(value, (str, os.PathLike)) and value:
            return value
    raise TypeError(
        f"dataset: expected a folder path or a dataset with a .root (ImageFolder, timm's ImageDataset), "
        f"got {type(dataset).__name__}"
    )


def _square_size(input_size: int | Sequence[int]) -> int:
    size = input_size if isinstance(input_size, int) else tuple(input_size)[-2:]
    if isinstance(size, tuple):
        if size[0] != size[1]:
            raise ValueError(f"input_size={input_size!r}: dalaug's crops are square")
        size = size[0]
    return int(size)


def _single(strength: float | Sequence[float]) -> float:
    if isinstance(strength, Sequence):
        values = set(strength)
        if len(values) != 1:
            raise ValueError(f"color_jitter={strength!r}: dalaug jitters all three with one strength")
        (strength,) = values
    return float(strength or 0.0)


def _operators(collate_fn: Any) -> list[BatchOp]:
    """timm's FastCollateMixup / Mixup settings as dalaug operators (None: no mixing)."""
    if collate_fn is None:
        return []
    settings = vars(collate_fn)
    if not {"mixup_alpha", "cutmix_alpha", "switch_prob", "mix_prob"} <= settings.keys():
        raise ValueError(
            f"collate_fn: {type(collate_fn).__name__} is not timm's Mixup/FastCollateMixup; give "
            "batch operators to dalaug.Loader(operators=...) instead"
        )
    if settings.get("cutmix_minmax") is not None:
        raise ValueError("collate_fn: cutmix_minmax is not supported; CutMix draws its box from cutmix_alpha")
    if settings.get("mode", "batch") not in ("batch", "elem"):
        raise ValueError(f"collate_fn: mode={settings['mode']!r}; dalaug mixes per 'batch' or per 'elem'")
    common = dict(
        num_classes=settings["num_classes"], p=settings["mix_prob"],
        label_smoothing=settings.get("label_smoothing", 0.0), per_sample=settings.get("mode") == "elem",
    )  # fmt: skip
    ops: list[BatchOp] = []
    if settings["mixup_alpha"] > 0:
        ops.append(Mixup(settings["mixup_alpha"], **common))
    if settings["cutmix_alpha"] > 0:
        ops.append(CutMix(settings["cutmix_alpha"], **common))
    if not ops:
        return []
    switch = settings["switch_prob"]
    op: BatchOp = ops[0] if len(ops) == 1 else RandomChoice(ops, p=[1.0 - switch, switch])
    op.enabled = bool(settings.get("mixup_enabled", True))
    return [op]

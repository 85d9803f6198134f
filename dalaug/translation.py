"""Other libraries' objects as loader options: a user's dataset, its transform, its sampler, its mixing.

A training script written for ``torch.utils.data.DataLoader`` already says everything a dalaug
loader needs, in torchvision's and timm's objects: the files and labels (an ``ImageFolder``'s
``samples``), what happens to each image (its ``transform``), the order (a ``DistributedSampler``)
and the batch mixing (torchvision v2's ``MixUp`` / ``CutMix``, timm's ``Mixup``). This module reads
those objects and says what they mean as :class:`~dalaug.Loader` options, each from a table whose
entries name a class and what its attributes become. An object with no entry, or an attribute
value an entry cannot express, is refused by name (:class:`Untranslatable`): nothing a script says
is dropped or approximated without saying so. The approximations that remain are listed here:

- DALI's random-resized-crop draws its window as torchvision's does (area and log-ratio uniform,
  10 attempts) but falls back to the whole image where torchvision falls back to a centre crop of
  clamped ratio; resizing uses DALI's filters (antialiased as torchvision's with ``antialias=True``),
  whose pixels differ from PIL's by rounding (tests/test_translation.py measures it).
- The graph's order is fixed: crop, colour jitter, policy, flip, normalize. A flip written after a
  policy moves before it; every policy op draws its sign at random, so the images come out with
  the same distribution. ``ColorJitter`` applies brightness, contrast and saturation in one fixed
  order where torchvision shuffles them per image.
- A torchvision policy with a bicubic (or finer) filter warps bilinearly (DALI's warps have no
  bicubic), with a warning.
- timm's RandAugment fills warped-in pixels with one grey (the mean of timm's fill colour): DALI's
  warps take one value. Its warps sample bilinearly where timm draws bilinear or bicubic (DALI's
  warps have no bicubic).
- torchvision's ``MixUp`` / ``CutMix`` pair sample i with i - 1 (``roll``), as here; timm's
  ``Mixup`` pairs i with N - 1 - i, as here.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler, RandomSampler, SequentialSampler, Subset
from torchvision import datasets
from torchvision import transforms as v1
from torchvision.transforms import v2

from dalaug.ops import BatchOp, CutMix, Mixup, RandomChoice, RandomErasing, as_operator
from dalaug.ops.kornia import is_kornia
from dalaug.policies import AutoAugment, RandAugment, TimmRandAugment, TrivialAugment
from dalaug.reading.sources import Samples


class Untranslatable(ValueError):
    """An object (a transform, a dataset, a sampler, a mixing object) dalaug cannot take as it is."""


# --- the dataset ----------------------------------------------------------------------------------

READABLE = (
    "dalaug reads image files: give an ImageFolder / DatasetFolder, timm's ImageDataset, a Subset of "
    "one, or the folder, WebDataset shards or (path, label) pairs themselves"
)


def dataset_samples(dataset: Any) -> Samples:
    """The files and labels of a torchvision ``DatasetFolder`` (``ImageFolder``), of timm's
    ``ImageDataset`` over a folder, or of a ``Subset`` of one (its indices, in order).

    Raises:
        Untranslatable: a dataset whose samples are not image files (``FakeData``, a user's own
            ``Dataset``), or one that would change them on the way (a ``target_transform``, a
            custom image ``loader``).
    """
    if isinstance(dataset, Subset):
        samples = dataset_samples(dataset.dataset)
        indices = np.asarray(list(dataset.indices), dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(samples)):
            raise Untranslatable(f"dataset: Subset indices outside the {len(samples)} samples of its dataset")
        return Samples(
            tuple(samples.paths[i] for i in indices), samples.offsets[indices], samples.sizes[indices],
            samples.labels[indices], samples.classes,
        )  # fmt: skip
    name = type(dataset).__name__
    if getattr(dataset, "target_transform", None) is not None:
        raise Untranslatable(
            f"dataset: {name}.target_transform={dataset.target_transform!r} changes the labels, which "
            "dalaug reads as the dataset's samples give them; map the labels in your loop instead"
        )
    if isinstance(dataset, datasets.DatasetFolder):
        if dataset.loader not in (datasets.folder.default_loader, datasets.folder.pil_loader):
            raise Untranslatable(
                f"dataset: {name}.loader={dataset.loader!r} is not torchvision's image loader; dalaug "
                "decodes the files itself (JPEG, PNG, ...) in its DALI pipeline"
            )
        pairs, classes = dataset.samples, dataset.classes
    elif hasattr(dataset, "reader") and isinstance(getattr(dataset.reader, "samples", None), list):
        # timm's ImageDataset over a folder: its reader holds (path, label) and class_to_idx.
        if getattr(dataset, "load_bytes", False):
            raise Untranslatable(f"dataset: {name}(load_bytes=True) yields bytes, not images")
        pairs = dataset.reader.samples
        to_index = dataset.reader.class_to_idx
        classes = sorted(to_index, key=to_index.get)
    else:
        raise Untranslatable(f"dataset: {name} has no image files (no .samples of (path, label)); {READABLE}")
    if not pairs:
        raise Untranslatable(f"dataset: {name} holds no samples")
    paths = tuple(os.fspath(path) for path, _ in pairs)
    labels = np.fromiter((label for _, label in pairs), dtype=np.int64, count=len(pairs))
    minus_one = np.full(len(paths), -1, dtype=np.int64)
    return Samples(paths, minus_one, minus_one.copy(), labels, tuple(str(c) for c in classes))


def dataset_transform(dataset: Any) -> Any:
    """The transform a dataset applies to each image (a Subset's is its dataset's)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return getattr(dataset, "transform", None)


# --- the transform --------------------------------------------------------------------------------


@dataclass
class Translation:
    """What a transform means as loader options: ``train`` (a random-resized-crop: True; a resize
    and centre crop: False), the options, and the batch operators it implies (erasing)."""

    train: bool | None = None
    options: dict[str, Any] = field(default_factory=dict)
    operators: list[BatchOp] = field(default_factory=list)
    to_float: bool = False  # the images became float tensors (ToTensor, ToDtype(float, scale=True))
    stage: int = 0
    names: dict[str, str] = field(default_factory=dict)  # option -> the transform that set it

    def set(self, source: str, **options: Any) -> None:
        for name, value in options.items():
            if name in self.options:
                raise Untranslatable(
                    f"transform: {source} and {self.names[name]} both set {name}; dalaug's graph has one"
                )
            self.options[name] = value
            self.names[name] = source


# Where each kind of transform may stand: the graph crops, then jitters / applies the policy /
# flips, then converts to float and normalizes, then erases (on the normalized batch).
CROP, PIXELS, TO_FLOAT, NORMALIZE, ERASE = range(5)


def translate_transform(transform: Any) -> Translation:
    """Loader options from a torchvision (v1 or v2) or timm transform (a ``Compose`` of them).

    Raises:
        Untranslatable: a transform with no entry in the table (a ``Lambda``, a user's class,
            ``AugMix``), parameters the graph cannot follow, or an order it cannot keep.

    Example:
        >>> from torchvision import transforms as T
        >>> t = translate_transform(T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()]))
        >>> t.train, t.options["resize"], t.options["crop"]
        (False, 256, 224)
    """
    result = Translation()
    for step in _flatten(transform):
        entry = TRANSFORMS.get(type(step))
        if entry is None:
            raise Untranslatable(
                f"transform: {_describe(step)} has no DALI translation in dalaug; remove it, or give the "
                f"loader a folder and options (help(dalaug.Loader)). Translated: {_translated_names()}"
            )
        stage, translate = entry
        if stage is not None:
            if stage < result.stage:
                raise Untranslatable(
                    f"transform: {_describe(step)} comes after a transform that dalaug's graph runs later "
                    "(order: crop, colour/policy/flip, to float, normalize, erase)"
                )
            result.stage = stage
        translate(step, result)
    if result.train is None:
        raise Untranslatable(
            "transform: no RandomResizedCrop (training) and no Resize + CenterCrop (evaluation); dalaug's "
            "batches need one image size"
        )
    if not result.to_float:
        raise Untranslatable(
            "transform: no ToTensor (or ToImage/PILToTensor + ToDtype(torch.float32, scale=True)); dalaug "
            "yields float images"
        )
    result.options.setdefault("mean", (0.0, 0.0, 0.0))  # no Normalize: pixels on the 0-1 scale
    result.options.setdefault("std", (1.0, 1.0, 1.0))
    if result.train:
        result.options.setdefault("flip", False)  # the graph flips only when the transform does
    return result


def _flatten(transform: Any) -> list:
    if type(transform) in (v1.Compose, v2.Compose):
        return [step for inner in transform.transforms for step in _flatten(inner)]
    if _delegates(transform):
        return _flatten(transform.transforms)
    return [transform]


def _applies_its_transforms(self, image):  # the whole body of a wrapper dalaug reads through
    return self.transforms(image)


def _delegates(step: Any) -> bool:
    """Whether ``step`` is a wrapper whose call does nothing but apply its ``.transforms``, a
    ``Compose`` (torchvision's reference scripts wrap theirs in ``ClassificationPresetTrain``):
    its ``__call__`` compiles to the same code as :func:`_applies_its_transforms`."""
    code = getattr(type(step).__dict__.get("__call__"), "__code__", None)
    reference = _applies_its_transforms.__code__
    return (
        code is not None
        and type(getattr(step, "transforms", None)) in (v1.Compose, v2.Compose)
        and (code.co_argcount, code.co_code, code.co_names)
        == (reference.co_argcount, reference.co_code, reference.co_names)
    )


def _describe(step: Any) -> str:
    return f"{type(step).__module__}.{type(step).__qualname__}"


def _translated_names() -> str:
    return ", ".join(sorted({cls.__name__ for cls in TRANSFORMS}))


def _square(name: str, size: Any) -> int:
    if isinstance(size, int):
        return size
    values = tuple(size)
    if len(values) == 1 or (len(values) == 2 and values[0] == values[1]):
        return int(values[0])
    raise Untranslatable(f"transform: {name}(size={size!r}); dalaug's crops are square")


def _interpolation(name: str, mode: Any) -> str:
    value = mode.value if isinstance(mode, Enum) else mode
    if not isinstance(value, str):
        raise Untranslatable(f"transform: {name}(interpolation={mode!r}) is not an InterpolationMode")
    return value


def _antialias(name: str, step: Any) -> None:
    if getattr(step, "antialias", True) is False:
        raise Untranslatable(f"transform: {name}(antialias=False); DALI's resize always antialiases")


def _random_resized_crop(step: Any, out: Translation) -> None:
    name = type(step).__name__
    _antialias(name, step)
    if out.train is False:
        raise Untranslatable(f"transform: {name} after a Resize; the training graph crops the image as it is")
    out.train = True
    mode = step.interpolation
    if isinstance(mode, (tuple, list)):  # timm's 'random': bilinear or bicubic, drawn per image
        modes = {_interpolation(name, m) for m in mode}
        if modes != {"bilinear", "bicubic"}:
            raise Untranslatable(f"transform: {name}(interpolation={mode!r}); dalaug draws 'random' from "
                                 "bilinear and bicubic, as timm's")  # fmt: skip
        interpolation = "random"
    else:
        interpolation = _interpolation(name, mode)
    out.set(name, crop=_square(name, step.size), scale=tuple(step.scale), ratio=tuple(step.ratio),
            interpolation=interpolation)  # fmt: skip


def _resize(step: Any, out: Translation) -> None:
    name = type(step).__name__
    _antialias(name, step)
    size = step.size
    if not isinstance(size, int) and len(size) == 1:
        size = size[0]
    if not isinstance(size, int):
        raise Untranslatable(f"transform: {name}(size={step.size!r}); dalaug resizes the shorter side "
                             "(an int size)")  # fmt: skip
    if getattr(step, "max_size", None) is not None:
        raise Untranslatable(f"transform: {name}(max_size={step.max_size}) is not supported")
    out.train = False if out.train is None else out.train
    if out.train:
        raise Untranslatable(f"transform: {name} beside a RandomResizedCrop; the training graph crops the "
                             "image as it is")  # fmt: skip
    out.set(name, resize=size, interpolation=_interpolation(name, step.interpolation))


def _center_crop(step: Any, out: Translation) -> None:
    name = type(step).__name__
    if "resize" not in out.options:
        raise Untranslatable(f"transform: {name} without a Resize before it; dalaug's evaluation graph "
                             "resizes the shorter side, then centre-crops")  # fmt: skip
    out.set(name, crop=_square(name, step.size))


def _flip(step: Any, out: Translation) -> None:
    if step.p != 0.5:
        raise Untranslatable(f"transform: RandomHorizontalFlip(p={step.p}); dalaug flips with p=0.5")
    if out.train is False:
        raise Untranslatable("transform: RandomHorizontalFlip in an evaluation transform (a Resize)")
    out.set("RandomHorizontalFlip", flip=True)


def _fill(name: str, fill: Any) -> int:
    if isinstance(fill, dict):  # v2 keeps {image type: fill}
        fills = {_fill(name, value) for value in fill.values()}
        if len(fills) != 1:
            raise Untranslatable(f"transform: {name}(fill={fill!r}); dalaug fills with one value")
        return fills.pop()
    if fill is None:
        return 0
    values = {float(v) for v in (fill if isinstance(fill, Sequence) else [fill])}
    if len(values) != 1 or not float(next(iter(values))).is_integer():
        raise Untranslatable(f"transform: {name}(fill={fill!r}); dalaug fills warps with one integer value")
    return int(values.pop())


def _policy(make: Callable[[Any], Any]) -> Callable[[Any, Translation], None]:
    def translate(step: Any, out: Translation) -> None:
        name = type(step).__name__
        if out.train is False:
            raise Untranslatable(f"transform: {name} in an evaluation transform (Resize + CenterCrop)")
        try:
            policy = make(step)
        except ValueError as error:
            raise Untranslatable(f"transform: {name}: {error}") from None
        out.set(name, policy=policy)

    return translate


def _warps(step: Any) -> dict:
    """How a torchvision policy's warps sample and fill. DALI's warps sample nearest or bilinear:
    a finer filter (torchvision's references pass --interpolation bicubic to the policy too)
    warps bilinearly, with a warning that says so."""
    name = type(step).__name__
    interpolation = _interpolation(name, step.interpolation)
    if interpolation not in ("nearest", "nearest-exact", "bilinear"):
        warnings.warn(
            f"{name}(interpolation={interpolation!r}): DALI's warps (shear, translate, rotate) sample "
            "bilinearly at most, so this policy's warps are bilinear", UserWarning, stacklevel=2,
        )  # fmt: skip
        interpolation = "bilinear"
    return {"interpolation": interpolation, "fill": _fill(name, step.fill)}


def _auto_augment(step: Any):
    variant = step.policy.value if isinstance(step.policy, Enum) else step.policy
    return AutoAugment(str(variant).lower(), **_warps(step))


def _rand_augment(step: Any):
    bins = step.num_magnitude_bins
    return RandAugment(n=step.num_ops, m=step.magnitude, num_magnitude_bins=bins, **_warps(step))


def _trivial_augment(step: Any):
    return TrivialAugment(num_magnitude_bins=step.num_magnitude_bins, **_warps(step))


# timm's RandAugment op names (timm/data/auto_augment.py): the plain set and the 'inc1' set.
TIMM_RAND_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
    "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)  # fmt: skip
TIMM_INCREASING = {"Posterize", "Solarize", "Color", "Contrast", "Brightness", "Sharpness"}


def _timm_rand_augment(step: Any):
    """timm's ``RandAugment`` object (what ``rand-m9-mstd0.5-inc1`` builds) as :class:`TimmRandAugment`."""
    ops = step.ops
    names = [op.name for op in ops]
    increasing = "PosterizeIncreasing" in names
    expected = [f"{n}Increasing" if increasing and n in TIMM_INCREASING else n for n in TIMM_RAND_OPS]
    if names != expected or step.choice_weights is not None:
        raise ValueError(f"ops {names} (weights {step.choice_weights}) are not timm's standard 'rand' set")
    settings = {(op.prob, op.magnitude, op.magnitude_std, op.magnitude_max) for op in ops}
    if len(settings) != 1:
        raise ValueError("its ops differ in probability or magnitude")
    (p, m, mstd, mmax), = settings
    if mmax not in (None, 10):
        raise ValueError(f"mmax={mmax}; levels above 10 are not supported")
    if ops[0].hparams.get("translate_pct", 0.45) != 0.45:
        raise ValueError(f"translate_pct={ops[0].hparams['translate_pct']}; dalaug translates by up to 0.45")
    fill = ops[0].kwargs.get("fillcolor", (128, 128, 128))
    return TimmRandAugment(n=step.num_layers, m=int(m), mstd=math.inf if mstd > 100 else float(mstd),
                           increasing=increasing, p=float(p), fill=round(float(np.mean(fill))))  # fmt: skip


def _color_jitter(step: Any, out: Translation) -> None:
    ranges = {name: getattr(step, name) for name in ("brightness", "contrast", "saturation")}
    if step.hue is not None or len({tuple(r) if r is not None else None for r in ranges.values()}) != 1:
        raise Untranslatable(f"transform: ColorJitter({ranges}, hue={step.hue}); dalaug jitters brightness, "
                             "contrast and saturation with one strength and no hue")  # fmt: skip
    low, high = ranges["brightness"]
    if not math.isclose(1 - low, high - 1) or low <= 0:
        raise Untranslatable(f"transform: ColorJitter range {(low, high)}; dalaug's is [1 - j, 1 + j]")
    if out.train is False:
        raise Untranslatable("transform: ColorJitter in an evaluation transform (Resize + CenterCrop)")
    out.set("ColorJitter", color_jitter=float(high - 1))


def _to_float(step: Any, out: Translation) -> None:
    out.to_float = True


def _to_dtype(step: Any, out: Translation) -> None:
    name = type(step).__name__
    dtype = step.dtype
    if isinstance(dtype, dict):
        dtypes = {value for key, value in dtype.items() if key is not torch.Tensor or len(dtype) == 1}
        dtype = dtypes.pop() if len(dtypes) == 1 else dtype
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise Untranslatable(f"transform: {name}({step.dtype!r}); dalaug yields float32, float16 or bfloat16")
    if not getattr(step, "scale", True):
        raise Untranslatable(f"transform: {name}(scale=False) keeps the 0-255 scale; dalaug's floats are 0-1 "
                             "before Normalize: use scale=True")  # fmt: skip
    out.to_float = True
    if dtype != torch.float32:
        out.set(name, dtype=dtype)


def _uint8(step: Any, out: Translation) -> None:
    """PILToTensor / ToImage: uint8 tensors, on which v2's transforms act as on PIL images."""


def _normalize(step: Any, out: Translation) -> None:
    if not out.to_float:
        raise Untranslatable("transform: Normalize before the images are float (ToTensor / ToDtype)")
    out.set("Normalize", mean=tuple(float(m) for m in step.mean), std=tuple(float(s) for s in step.std))


def _erasing(step: Any, out: Translation) -> None:
    if out.train is False:
        raise Untranslatable("transform: RandomErasing in an evaluation transform (Resize + CenterCrop)")
    value = step.value
    if isinstance(value, str):
        if value != "random":
            raise Untranslatable(f"transform: RandomErasing(value={value!r})")
    else:
        values = {float(v) for v in (value if isinstance(value, Sequence) else [value])}
        if len(values) != 1:
            raise Untranslatable(f"transform: RandomErasing(value={value!r}); dalaug erases with one value")
        value = values.pop()
    erasing = RandomErasing(p=step.p, scale=tuple(step.scale), ratio=tuple(step.ratio), value=value)
    out.operators.append(erasing)


def _timm_erasing(step: Any, out: Translation) -> None:
    if (step.min_count, step.max_count, step.num_splits) != (1, 1, 0):
        raise Untranslatable(
            f"transform: timm RandomErasing(count=({step.min_count}, {step.max_count}), num_splits="
            f"{step.num_splits}); dalaug erases one box per image"
        )
    values = {"const": 0.0, "pixel": "random"}
    if step.mode not in values:
        raise Untranslatable(f"transform: timm RandomErasing(mode={step.mode!r}); dalaug fills const, pixel")
    ratio = tuple(math.exp(r) for r in step.log_aspect_ratio)
    out.operators.append(RandomErasing(p=step.probability, scale=(step.min_area, step.max_area), ratio=ratio,
                                       value=values[step.mode]))  # fmt: skip


def _timm_transforms() -> dict:
    """timm's transform classes, when timm is installed (it is a test dependency, not a run-time one)."""
    try:
        from timm.data import auto_augment, random_erasing, transforms
    except ImportError:
        return {}
    return {
        transforms.RandomResizedCropAndInterpolation: (CROP, _random_resized_crop),
        transforms.MaybeToTensor: (TO_FLOAT, _to_float),
        transforms.MaybePILToTensor: (None, _uint8),
        auto_augment.RandAugment: (PIXELS, _policy(_timm_rand_augment)),
        random_erasing.RandomErasing: (ERASE, _timm_erasing),
    }


# Each transform class dalaug translates: (where it may stand, how its attributes become options).
TRANSFORMS: dict[type, tuple[int | None, Callable[[Any, Translation], None]]] = {
    v1.RandomResizedCrop: (CROP, _random_resized_crop),
    v2.RandomResizedCrop: (CROP, _random_resized_crop),
    v1.Resize: (CROP, _resize),
    v2.Resize: (CROP, _resize),
    v1.CenterCrop: (CROP, _center_crop),
    v2.CenterCrop: (CROP, _center_crop),
    v1.RandomHorizontalFlip: (PIXELS, _flip),
    v2.RandomHorizontalFlip: (PIXELS, _flip),
    v1.AutoAugment: (PIXELS, _policy(_auto_augment)),
    v2.AutoAugment: (PIXELS, _policy(_auto_augment)),
    v1.RandAugment: (PIXELS, _policy(_rand_augment)),
    v2.RandAugment: (PIXELS, _policy(_rand_augment)),
    v1.TrivialAugmentWide: (PIXELS, _policy(_trivial_augment)),
    v2.TrivialAugmentWide: (PIXELS, _policy(_trivial_augment)),
    v1.ColorJitter: (PIXELS, _color_jitter),
    v2.ColorJitter: (PIXELS, _color_jitter),
    v1.PILToTensor: (None, _uint8),
    v2.PILToTensor: (None, _uint8),
    v2.ToImage: (None, _uint8),
    v1.ToTensor: (TO_FLOAT, _to_float),
    v2.ToTensor: (TO_FLOAT, _to_float),
    v1.ConvertImageDtype: (TO_FLOAT, _to_dtype),
    v2.ConvertImageDtype: (TO_FLOAT, _to_dtype),
    v2.ToDtype: (TO_FLOAT, _to_dtype),
    v1.Normalize: (NORMALIZE, _normalize),
    v2.Normalize: (NORMALIZE, _normalize),
    v1.RandomErasing: (ERASE, _erasing),
    v2.RandomErasing: (ERASE, _erasing),
    v2.ToPureTensor: (None, _uint8),
    **_timm_transforms(),
}


# --- the sampler ----------------------------------------------------------------------------------


def translate_sampler(sampler: Any, dataset_length: int) -> dict[str, Any]:
    """Loader options from a DataLoader ``sampler=``: torch's ``DistributedSampler`` (its rank,
    replicas, shuffle, seed and drop_last), ``RandomSampler`` or ``SequentialSampler``.

    Returns ``shuffle``, and for a DistributedSampler ``seed``, ``lockstep``, ``pad`` and the
    ``sharding`` (rank, world size)."""
    name = type(sampler).__name__
    if type(sampler) is SequentialSampler:
        return {"shuffle": False}
    if type(sampler) is RandomSampler:
        if sampler.replacement or sampler._num_samples is not None:
            raise Untranslatable("sampler: RandomSampler with replacement or num_samples; dalaug's epochs "
                                 "read every sample once")  # fmt: skip
        return {"shuffle": True}
    if type(sampler) is DistributedSampler:
        if len(sampler.dataset) != dataset_length:
            raise Untranslatable(f"sampler: a DistributedSampler over {len(sampler.dataset)} samples, the "
                                 f"dataset has {dataset_length}")  # fmt: skip
        # Equal shards, as the sampler's: padded by wrapping around, or cut (its drop_last).
        return {"shuffle": bool(sampler.shuffle), "seed": int(sampler.seed), "lockstep": True,
                "pad": not sampler.drop_last,
                "sharding": (int(sampler.rank), int(sampler.num_replicas))}  # fmt: skip
    repeats = _repeated_augmentation(sampler)
    if repeats is not None:
        return repeats
    raise Untranslatable(
        f"sampler: {name} has no dalaug translation; dalaug takes DistributedSampler, RandomSampler, "
        "SequentialSampler and the repeated-augmentation samplers (timm's RepeatAugSampler, DeiT's and "
        "torchvision's references' RASampler), and orders the samples itself (shuffle=, seed=, set_epoch)"
    )


def _repeated_augmentation(sampler: Any) -> dict[str, Any] | None:
    """timm's ``RepeatAugSampler`` or the ``RASampler`` of DeiT and torchvision's references (not
    importable: known by name and attributes) as ``repeats=``; None for any other sampler."""
    name = type(sampler).__name__
    if name == "RepeatAugSampler" and type(sampler).__module__.startswith("timm."):
        repeats, seed = sampler.num_repeats, 0
    elif name == "RASampler" and {"repetitions", "num_replicas", "rank", "seed"} <= set(vars(sampler)):
        repeats, seed = sampler.repetitions, sampler.seed
    else:
        return None
    return {"shuffle": bool(sampler.shuffle), "seed": int(seed), "repeats": int(repeats),
            "sharding": (int(sampler.rank), int(sampler.num_replicas))}  # fmt: skip


# --- batch mixing ---------------------------------------------------------------------------------

# What every torch.nn.Module holds in its __dict__ (hooks, parameters, ...).
MODULE_ATTRIBUTES = frozenset(vars(torch.nn.Module()))


def translate_operators(given: Any, num_classes: int | None = None) -> list[BatchOp]:
    """dalaug operators for ``operators=`` as scripts write them: dalaug's own, torchvision v2's
    ``MixUp`` / ``CutMix`` / ``RandomChoice`` of them, timm's ``Mixup`` / ``FastCollateMixup``,
    kornia's 2-D augmentation modules (wrapped by :func:`dalaug.ops.as_operator`).

    torchvision's mix one λ per batch, every batch, sample i with i - 1 (``partner="roll"``), no
    smoothing; timm's as its arguments say (see :func:`timm_mixing`).
    """
    if given is None:
        return []
    if isinstance(given, BatchOp) or is_kornia(given):
        return [as_operator(given)]
    if type(given) in MIXING:
        return [MIXING[type(given)](given)]
    reference = _reference_mixing(given)
    if reference is not None:
        return [reference]
    if isinstance(given, Sequence) and not isinstance(given, (str, bytes)):
        return [op for item in given for op in translate_operators(item, num_classes)]
    raise TypeError(
        f"operators: expected dalaug batch operators, torchvision v2 MixUp / CutMix / RandomChoice, timm's "
        f"Mixup or kornia augmentation modules, got {given!r}"
    )


def is_mixing(given: Any) -> bool:
    """Whether ``given`` is a batch-mixing object :func:`translate_operators` takes (as a script's
    ``collate_fn`` may hold one: timm's ``FastCollateMixup``, or torchvision's references')."""
    return type(given) in MIXING or _reference_mixing(given) is not None


def _tv_mix(make: type) -> Callable[[Any], BatchOp]:
    def translate(step: Any) -> BatchOp:
        return make(float(step.alpha), num_classes=step.num_classes, partner="roll")

    return translate


def _tv_choice(step: Any) -> BatchOp:
    ops = [op for inner in step.transforms for op in translate_operators(inner)]
    return RandomChoice(ops, p=None if step.p is None else list(step.p))


def _reference_mixing(given: Any) -> BatchOp | None:
    """torchvision's reference scripts' own ``RandomMixUp`` / ``RandomCutMix``
    (references/classification/transforms.py, used without ``--use-v2``): not importable, so
    known by class name and attributes; they mix as v2's do, with probability ``p`` per batch."""
    kinds = {"RandomMixUp": Mixup, "RandomCutMix": CutMix}
    name = type(given).__name__
    if name not in kinds or set(vars(given)) - MODULE_ATTRIBUTES != {"num_classes", "p", "alpha", "inplace"}:
        return None
    return kinds[name](float(given.alpha), num_classes=given.num_classes, p=float(given.p), partner="roll")


def timm_mixing(mixup: Any) -> BatchOp | None:
    """timm's ``Mixup`` / ``FastCollateMixup`` settings as one dalaug operator (None: mixes nothing)."""
    settings = vars(mixup)
    if settings.get("cutmix_minmax") is not None:
        raise Untranslatable("collate_fn: timm Mixup(cutmix_minmax=...) is not supported; CutMix draws its "
                             "box from cutmix_alpha")  # fmt: skip
    if not settings.get("correct_lam", True):
        raise Untranslatable("collate_fn: timm Mixup(correct_lam=False); dalaug's CutMix corrects λ always")
    if settings.get("mode", "batch") not in ("batch", "elem"):
        raise Untranslatable(f"collate_fn: timm Mixup(mode={settings['mode']!r}); dalaug mixes per 'batch' "
                             "or per 'elem'")  # fmt: skip
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
        return None
    switch = settings["switch_prob"]
    op = ops[0] if len(ops) == 1 else RandomChoice(ops, p=[1.0 - switch, switch])
    op.enabled = bool(settings.get("mixup_enabled", True))
    return op


def _timm_mixing_classes() -> dict:
    try:
        from timm.data import FastCollateMixup
        from timm.data import Mixup as TimmMixup
    except ImportError:
        return {}

    def translate(mixup: Any) -> BatchOp:
        op = timm_mixing(mixup)
        if op is None:
            raise Untranslatable("operators: timm Mixup with mixup_alpha=0 and cutmix_alpha=0 mixes nothing")
        return op

    return {TimmMixup: translate, FastCollateMixup: translate}


MIXING: dict[type, Callable[[Any], BatchOp]] = {
    v2.MixUp: _tv_mix(Mixup),
    v2.CutMix: _tv_mix(CutMix),
    v1.RandomChoice: _tv_choice,
    v2.RandomChoice: _tv_choice,
    **_timm_mixing_classes(),
}

__all__ = [
    "MIXING",
    "TRANSFORMS",
    "Translation",
    "Untranslatable",
    "dataset_samples",
    "dataset_transform",
    "is_mixing",
    "timm_mixing",
    "translate_operators",
    "translate_sampler",
    "translate_transform",
]

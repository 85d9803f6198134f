"""Augmentation policies run inside the DALI graph: AutoAugment, RandAugment, TrivialAugment.

- AutoAugment: Cubuk et al., "AutoAugment: Learning Augmentation Policies from Data", CVPR 2019.
- RandAugment: Cubuk et al., "RandAugment: Practical automated data augmentation ...", 2020.
- TrivialAugment: Müller & Hutter, "TrivialAugment: Tuning-free Yet State-of-the-Art ...", 2021.

The policies are data: sub-policies name ops from one table (:data:`OPS`), and every op's
magnitude mapping is the one torchvision uses (``torchvision.transforms.AutoAugment`` and friends),
so ``AutoAugment("imagenet")`` means the paper's ImageNet sub-policies exactly as torchvision's
``AutoAugmentPolicy.IMAGENET``. The pixels are moved by DALI's own augmentation primitives
(``nvidia.dali.auto_aug``), which run on the CPU and the GPU. DALI's EfficientNet ("v0") policy,
which DALI calls ``image_net``, is offered as ``AutoAugment("efficientnet")``.

Geometric ops warp with nearest-neighbour sampling and fill with 0 by default, as torchvision does;
nearest is also about 2x cheaper than bilinear for a DALI CPU warp (ANCHORS.md).

timm's RandAugment (``"rand-m9-mstd0.5-inc1"``) is a different algorithm from torchvision's: its own
15 ops (Invert and SolarizeAdd, no Identity), magnitudes on a 0-10 scale, each drawn op applied with
probability 0.5, and optional Gaussian noise on the magnitude; :class:`TimmRandAugment` follows
``timm/data/auto_augment.py``. :func:`resolve_policy` takes the names torchvision's reference scripts
and timm's ``--aa`` pass.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import re
from dataclasses import dataclass
from enum import Enum

import numpy as np
from nvidia.dali import fn, types
from nvidia.dali import math as dali_math
from nvidia.dali.auto_aug import augmentations as aug
from nvidia.dali.auto_aug import auto_augment
from nvidia.dali.auto_aug.core import Policy as DaliPolicy
from nvidia.dali.auto_aug.core import _Augmentation, augmentation, select, signed_bin
from nvidia.dali.pipeline import do_not_convert

from dalaug.geometry import resolve_interpolation

try:  # private in DALI 2.4 (see _untraced); without it, policies build as DALI does by default
    from nvidia.dali._utils import dali_trace as _dali_trace
except ImportError:  # pragma: no cover
    _dali_trace = None

# DALI's warp_affine and rotate, which move the pixels of shear/translate/rotate, sample only
# nearest or bilinear ("Only nearest and linear interpolation is supported" for INTERP_CUBIC).
WARP_INTERPOLATIONS = {types.INTERP_NN: "nearest", types.INTERP_LINEAR: "bilinear"}


@do_not_convert
def _call_unconverted(op: _Augmentation, data, kwargs: dict):
    return _Augmentation.__call__(op, data, **kwargs)


class _PlainAugmentation(_Augmentation):
    """A DALI augmentation whose call runs as plain Python, outside DALI's AutoGraph.

    WHY: a pipeline with conditionals (``enable_conditionals=True``, which ``select`` needs) runs
    every function it calls through AutoGraph, DALI's ``nvidia.dali.auto_aug`` included. When an op
    is called with a per-sample magnitude bin, DALI computes its parameter table by calling
    ``mag_to_param`` once per (signed) bin; under AutoGraph each of those calls is a
    ``converted_call`` that merges the source maps of every converted frame above it (select's
    binary split nests 4 deep, inside the policy's and the pipeline's functions), several ms each.
    timm's RandAugment with ``mstd`` has 12 ops with magnitudes over 1001 bins (2002 for the 5
    signed ones) in each of 2 layers: 34,034 calls, 23-28 s per build on a 2-core CPU (issue 25).
    As plain Python the same tables take ~0.2 s.

    Nothing in an augmentation's call branches on a DataNode (its ``if`` tests magnitudes and
    Python types), so it needs no conversion: the branches stay in ``select``, which AutoGraph
    still converts, and the DALI ops made here are split per branch as before (DALI's own state,
    not AutoGraph's). The graph, its seeds and so its pixels are the same as before.
    """

    def __call__(self, data, **kwargs):
        return _call_unconverted(self, data, kwargs)


def _plain(op: _Augmentation) -> _PlainAugmentation:
    """The same augmentation (op, range, sign, mapping), called outside AutoGraph."""
    return op.augmentation(augmentation_cls=_PlainAugmentation)


@do_not_convert
@contextlib.contextmanager
def _untraced():
    """Turn off DALI's record of where each op was created, while a policy makes its ops.

    WHY: for every op it creates, DALI walks and formats the whole Python stack (for its error
    messages, "the operator was created at ..."); a policy makes hundreds of ops (TimmRandAugment:
    ~730), and that record was ~45% of their time: a TimmRandAugment rebuild 1.4 -> 0.6 CPU-s, the
    first build in a process 2.0 -> 1.5, on a 2-core CPU. These ops are dalaug's and DALI's, not
    the user's, so their origin would name this file anyway; an error still names the operator.
    The switch is DALI 2.4's private ``dali_trace.set_tracing`` (process-wide; restored on exit,
    and left alone when tracing is already off). Pixels are unaffected.
    """
    if _dali_trace is None or not _dali_trace.is_tracing_enabled():
        yield
        return
    _dali_trace.set_tracing(enabled=False)
    try:
        yield
    finally:
        _dali_trace.set_tracing(enabled=True)


# AutoGraph also converts every function that a converted one calls, once per process, at the
# first build: it parses, rewrites and compiles its source, ~0.1-0.5 s a function on a 2-core CPU.
# So a policy's `apply`, which AutoGraph must convert (its branches on DataNodes, and those of
# DALI's `select` that it calls, become conditionals), calls only `select` and do_not_convert
# helpers, which make DALI ops but never branch on a DataNode. In particular it no longer calls
# DALI's apply_auto_augment / apply_rand_augment / apply_trivial_augment, which brought along the
# conversion of their Policy maps, signed_bin, argument checks and, through DALI's own identity op,
# Augmentation's methods: the first AutoAugment build took 5.1 CPU-s on a loaded 2-core CPU, now
# 1.2. The helpers below make the draws those functions make, into the same graph (they use DALI
# 2.4's private Policy maps), so a seed gives the same pixels: tests/test_policies.py compares them.
_IDENTITY = _plain(aug.identity)


@do_not_convert
def _auto_augment_draws(policy: DaliPolicy):
    """Per image, as DALI's ``apply_auto_augment``: (should_run, run_probabilities, magnitude bins,
    op indices, the ops of each stage); stage ``s`` runs op ``stages[s][indices[s]]`` when
    ``should_run[s] < run_probabilities[s]``."""
    max_len = max(len(sub_policy) for sub_policy in policy.sub_policies)
    should_run = fn.random.uniform(range=[0, 1], shape=(max_len,), dtype=types.FLOAT)
    sub_policy_id = fn.random.uniform(values=list(range(len(policy.sub_policies))), dtype=types.INT32)
    run_probabilities = auto_augment._sub_policy_to_probability_map(policy)[sub_policy_id]
    magnitude_bins = auto_augment._sub_policy_to_magnitude_bin_map(policy)[sub_policy_id]
    indices, stages = auto_augment._sub_policy_to_augmentation_map(policy)
    indices = indices[sub_policy_id]
    if any(op.randomly_negate for op in policy.augmentations.values()):
        magnitude_bins = signed_bin(magnitude_bins, shape=(max_len,))
    # DALI ends each stage's ops with its own identity (no magnitude): the plain one instead.
    stages = [[_IDENTITY if op is aug.identity else op for op in ops] for ops in stages]
    return should_run, run_probabilities, magnitude_bins, indices, stages


@do_not_convert
def _stage_runs(draws, stage: int):
    should_run, run_probabilities, *_ = draws
    return should_run[stage] < run_probabilities[stage]


@do_not_convert
def _stage_choice(draws, stage: int):
    """(op index, magnitude bin) of AutoAugment's ``stage``."""
    _, _, magnitude_bins, indices, _ = draws
    return indices[stage], magnitude_bins[stage]


@do_not_convert
def _rand_augment_draws(ops: list, n: int, m: int):
    """Per image, as DALI's ``apply_rand_augment``: ``n`` op indices and signed bins of ``m``."""
    shape = () if n == 1 else (n,)
    indices = fn.random.uniform(values=list(range(len(ops))), shape=shape, dtype=types.INT32)
    signed = any(op.randomly_negate for op in ops)
    magnitude_bins = signed_bin(m, shape=shape) if signed else m
    return indices, magnitude_bins, signed


@do_not_convert
def _layer_choice(draws, layer: int, n: int):
    """(op index, magnitude bin) of RandAugment's ``layer``."""
    indices, magnitude_bins, signed = draws
    if n == 1:
        return indices, magnitude_bins
    return indices[layer], (magnitude_bins[layer] if signed else magnitude_bins)


@do_not_convert
def _trivial_augment_draws(ops: list, num_magnitude_bins: int):
    """Per image, as DALI's ``apply_trivial_augment``: (op index, signed magnitude bin)."""
    magnitude_bin = fn.random.uniform(values=list(range(num_magnitude_bins)), dtype=types.INT32)
    if any(op.randomly_negate for op in ops):
        magnitude_bin = signed_bin(magnitude_bin)
    index = fn.random.uniform(values=list(range(len(ops))), dtype=types.INT32)
    return index, magnitude_bin


# DALI 2.4's own equalize and sharpness still call the deprecated fn.experimental aliases, which
# print a deprecation warning per process; these are the same ops on the stable names.
@augmentation(name="equalize", augmentation_cls=_PlainAugmentation)
def _equalize(data, _):
    return fn.equalize(data)


@augmentation(name="sharpness", param_device="auto", augmentation_cls=_PlainAugmentation)
def _sharpness(data, kernel):
    return fn.filter(data, kernel)


def _ops(wide: bool) -> dict:
    """torchvision's augmentation space as DALI augmentations; ``wide`` is TrivialAugmentWide's."""
    shear, rotate, enhance = (0.99, 135.0, 0.99) if wide else (0.3, 30.0, 0.9)
    # torchvision translates by up to 150/331 of the side (a fraction: DALI's translate_x/_y with
    # the image shape), or by up to 32 px whatever the size in the wide space (the _no_shape ops).
    if wide:
        translate_x = aug.translate_x_no_shape.augmentation((0, 32.0), True)
        translate_y = aug.translate_y_no_shape.augmentation((0, 32.0), True)
    else:
        translate_x = aug.translate_x.augmentation((0, 150.0 / 331.0), True)
        translate_y = aug.translate_y.augmentation((0, 150.0 / 331.0), True)
    poster_bits = (8, 2) if wide else (8, 4)
    ops = {
        "Identity": aug.identity,
        "ShearX": aug.shear_x.augmentation((0, shear), True),
        "ShearY": aug.shear_y.augmentation((0, shear), True),
        "TranslateX": translate_x,
        "TranslateY": translate_y,
        "Rotate": aug.rotate.augmentation((0, rotate), True),
        "Brightness": aug.brightness.augmentation((0, enhance), True, aug.shift_enhance_range),
        "Color": aug.color.augmentation((0, enhance), True, aug.shift_enhance_range),
        "Contrast": aug.contrast.augmentation((0, enhance), True, aug.shift_enhance_range),
        "Sharpness": _sharpness.augmentation((0, enhance), True, aug.sharpness_kernel),
        # Magnitude = bits kept, from 8 (identity) down, as torchvision's posterize bins.
        "Posterize": aug.posterize.augmentation(poster_bits, False, aug.poster_mask_uint8),
        # Pixels >= threshold are inverted; torchvision's thresholds run 255 -> 0.
        "Solarize": aug.solarize.augmentation((255, 0), False),
        "AutoContrast": aug.auto_contrast,
        "Equalize": _equalize,
        "Invert": aug.invert,
    }
    return {name: _plain(op) for name, op in ops.items()}


OPS = _ops(wide=False)
OPS_WIDE = _ops(wide=True)

# (op, probability, magnitude bin of 10) pairs, transcribed from the AutoAugment paper's appendix
# in torchvision's order.
AUTOAUGMENT_POLICIES = {
    "imagenet": [
        (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
        (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
        (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
        (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
        (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
        (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
        (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
        (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
        (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
        (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
        (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
        (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
        (("Color", 0.4, 0), ("Equalize", 0.6, None)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    ],
    "cifar10": [
        (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
        (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
        (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
        (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
        (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
        (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
        (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
        (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
        (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
        (("Color", 0.9, 9), ("Equalize", 0.6, None)),
        (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
        (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
        (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
        (("Equalize", 0.8, None), ("Invert", 0.1, None)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
    ],
    "svhn": [
        (("ShearX", 0.9, 4), ("Invert", 0.2, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.6, None), ("Solarize", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("AutoContrast", 0.8, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.4, None)),
        (("ShearY", 0.9, 5), ("Solarize", 0.2, 6)),
        (("Invert", 0.9, None), ("AutoContrast", 0.8, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("Solarize", 0.3, 3)),
        (("ShearY", 0.8, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.9, None), ("TranslateY", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Contrast", 0.3, 3), ("Rotate", 0.8, 4)),
        (("Invert", 0.8, None), ("TranslateY", 0.0, 2)),
        (("ShearY", 0.7, 6), ("Solarize", 0.4, 8)),
        (("Invert", 0.6, None), ("Rotate", 0.8, 4)),
        (("ShearY", 0.3, 7), ("TranslateX", 0.9, 3)),
        (("ShearX", 0.1, 6), ("Invert", 0.6, None)),
        (("Solarize", 0.7, 2), ("TranslateY", 0.6, 7)),
        (("ShearY", 0.8, 4), ("Invert", 0.8, None)),
        (("ShearX", 0.7, 9), ("TranslateY", 0.8, 3)),
        (("ShearY", 0.8, 5), ("AutoContrast", 0.7, None)),
        (("ShearX", 0.7, 2), ("Invert", 0.1, None)),
    ],
}
AUTOAUGMENT_BINS = 10

# The ops RandAugment and TrivialAugment draw from uniformly (torchvision's list; no Invert).
UNIFORM_OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
    "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)  # fmt: skip
AUTOAUGMENT_VARIANTS = (*AUTOAUGMENT_POLICIES, "efficientnet")


@dataclass(frozen=True, kw_only=True)  # kw_only: each policy's own fields come first positionally
class _DaliPolicyBase:
    """Shared fields: how geometric ops sample and fill, and the op-table lookup."""

    interpolation: str | Enum = "nearest"
    fill: int = 0

    def __post_init__(self) -> None:
        interp = resolve_interpolation(self.interpolation)
        if interp not in WARP_INTERPOLATIONS:
            raise ValueError(
                f"interpolation: DALI's warps (shear, translate, rotate) sample only "
                f"{sorted(WARP_INTERPOLATIONS.values())}; got {self.interpolation!r}"
            )
        # One spelling, so equal policies compare, hash and repr alike (InterpolationMode too).
        object.__setattr__(self, "interpolation", WARP_INTERPOLATIONS[interp])
        if not (isinstance(self.fill, int) and 0 <= self.fill <= 255):
            raise ValueError(f"fill: expected an int in [0, 255], got {self.fill!r}")

    def apply(self, images, crop: int):
        """``images`` (a batch of crop x crop images in the pipeline being defined), augmented."""
        with _untraced():
            return self._apply(images, crop)

    @do_not_convert
    def _kwargs(self, ops, crop: int) -> dict:
        # No `seed`: DALI 2.4's apply_* functions give that one seed to several random ops, so
        # e.g. AutoAugment's sub-policy choice and its apply-probability draws become correlated
        # (the ImageNet policy then warps 12% of images instead of 17%). Left unset, each op gets
        # its own seed from the pipeline's, which keeps runs reproducible.
        kwargs = {"fill_value": self.fill, "interp_type": resolve_interpolation(self.interpolation)}
        if any("shape" in inspect.signature(op.op).parameters for op in ops):
            kwargs["shape"] = (crop, crop)  # images are crop x crop by the time a policy runs
        return kwargs


@dataclass(frozen=True)
class AutoAugment(_DaliPolicyBase):
    """AutoAugment with one of the paper's learned policies.

    Args:
        variant: ``"imagenet"`` (the paper's, as torchvision's ``AutoAugmentPolicy.IMAGENET``),
            ``"cifar10"``, ``"svhn"``, or ``"efficientnet"`` (DALI's ``image_net`` policy, the
            EfficientNet "v0" variant, with DALI's own fill 128 and bilinear warps unless set).
        interpolation: ``"nearest"`` (torchvision's default) or ``"bilinear"`` for warps.
        fill: value of pixels uncovered by a warp.

    Example:
        >>> AutoAugment("cifar10").variant
        'cifar10'
    """

    variant: str = "imagenet"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in AUTOAUGMENT_VARIANTS:
            raise ValueError(f"variant: expected one of {list(AUTOAUGMENT_VARIANTS)}, got {self.variant!r}")

    @property
    def policy(self) -> DaliPolicy:
        """The sub-policies as a DALI ``Policy`` (checked by DALI when built)."""
        if self.variant == "efficientnet":
            dali = auto_augment.get_image_net_policy(use_shape=True)
            # One plain copy per distinct op: DALI's apply groups a policy's ops by identity.
            plain = {op: _plain(op) for op in dali.augmentations.values()}
            sub_policies = [[(plain[op], p, bin_) for op, p, bin_ in sub] for sub in dali.sub_policies]
            return DaliPolicy(dali.name, dali.num_magnitude_bins, sub_policies)
        sub_policies = [
            [(OPS[name], p, bin_) for name, p, bin_ in sub_policy]
            for sub_policy in AUTOAUGMENT_POLICIES[self.variant]
        ]
        return DaliPolicy(f"autoaugment-{self.variant}", AUTOAUGMENT_BINS, sub_policies)

    def _apply(self, images, crop: int):
        """DALI's ``apply_auto_augment``, with its draws made outside AutoGraph."""
        policy = self.policy
        kwargs = self._kwargs(policy.augmentations.values(), crop)
        draws = _auto_augment_draws(policy)
        for stage, ops in enumerate(draws[-1]):
            if _stage_runs(draws, stage):
                index, magnitude_bin = _stage_choice(draws, stage)
                images = select(
                    ops, index, images, magnitude_bin=magnitude_bin,
                    num_magnitude_bins=policy.num_magnitude_bins, **kwargs,
                )  # fmt: skip
        return images


@dataclass(frozen=True)
class RandAugment(_DaliPolicyBase):
    """RandAugment: ``n`` ops drawn uniformly per image, each at magnitude bin ``m`` of 31.

    Example:
        >>> RandAugment(n=2, m=9).m
        9
    """

    n: int = 2
    m: int = 9
    num_magnitude_bins: int = 31

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.n, int) and self.n >= 1):
            raise ValueError(f"n: expected an int >= 1, got {self.n!r}")
        if not (isinstance(self.m, int) and 0 <= self.m < self.num_magnitude_bins):
            raise ValueError(f"m: expected an int in [0, {self.num_magnitude_bins - 1}], got {self.m!r}")

    @property
    def ops(self) -> list:
        return [OPS[name] for name in UNIFORM_OPS]

    def _apply(self, images, crop: int):
        """DALI's ``apply_rand_augment``, with its draws made outside AutoGraph."""
        ops = self.ops
        kwargs = self._kwargs(ops, crop)
        draws = _rand_augment_draws(ops, self.n, self.m)
        for layer in range(self.n):
            index, magnitude_bin = _layer_choice(draws, layer, self.n)
            images = select(
                ops, index, images, magnitude_bin=magnitude_bin,
                num_magnitude_bins=self.num_magnitude_bins, **kwargs,
            )  # fmt: skip
        return images


@dataclass(frozen=True)
class TrivialAugment(_DaliPolicyBase):
    """TrivialAugmentWide: one op per image at a uniformly drawn magnitude bin of 31.

    Example:
        >>> TrivialAugment().num_magnitude_bins
        31
    """

    num_magnitude_bins: int = 31

    @property
    def ops(self) -> list:
        return [OPS_WIDE[name] for name in UNIFORM_OPS]

    def _apply(self, images, crop: int):
        """DALI's ``apply_trivial_augment``, with its draws made outside AutoGraph."""
        ops = self.ops
        kwargs = self._kwargs(ops, crop)
        index, magnitude_bin = _trivial_augment_draws(ops, self.num_magnitude_bins)
        return select(
            ops, index, images, magnitude_bin=magnitude_bin,
            num_magnitude_bins=self.num_magnitude_bins, **kwargs,
        )  # fmt: skip


# timm's RandAugment (timm/data/auto_augment.py). Its levels run 0-10 (`_LEVEL_DENOM`); each op maps
# a level to its argument with timm's own formula (incl. its int() truncations). DALI looks the
# argument up in a table over magnitude bins, so levels are kept at 1/100 resolution: bin = level *
# 100. An integer `m` is then exact, and a noisy level (mstd) is rounded to the nearest 0.01.
# The tables (2 x 1001 signed bins per op) are built once per layer when the pipeline is built;
# that is cheap (~0.2 s for both layers) only because the ops are _PlainAugmentation, called
# outside AutoGraph: under AutoGraph the same tables took 23-28 s (issue 25).
TIMM_MAX_LEVEL = 10
TIMM_BINS_PER_LEVEL = 100
TIMM_NUM_BINS = TIMM_MAX_LEVEL * TIMM_BINS_PER_LEVEL + 1


@do_not_convert
def _timm_bin(level):
    """The magnitude bin of a level: ``level * 100`` for an int, a per-sample level (a float
    DataNode) rounded to the nearest 0.01 (DALI's cast to int rounds to nearest), bins 0-1000."""
    if isinstance(level, int):
        return level * TIMM_BINS_PER_LEVEL
    return fn.cast(level * TIMM_BINS_PER_LEVEL, dtype=types.INT32)


def _timm_level(magnitude) -> float:
    return float(magnitude) / TIMM_MAX_LEVEL  # the level as a fraction of the maximum


def _timm_enhance(magnitude) -> np.ndarray:
    return np.float32(_timm_level(magnitude) * 1.8 + 0.1)  # 0.1 (level 0) .. 1.9, unsigned


def _timm_enhance_increasing(magnitude) -> np.ndarray:
    return np.float32(max(0.1, 1.0 + _timm_level(magnitude) * 0.9))  # signed: 1 -/+ 0.9 * level


def _timm_sharpness(factor_fn):
    return lambda magnitude: aug.sharpness_kernel(factor_fn(magnitude) - 1.0)


def _timm_posterize_mask(bits: int) -> np.ndarray:
    # timm keeps `bits` high bits; 0 bits gives a black image, as PIL's posterize does.
    return np.uint8(0xFF ^ ((1 << (8 - bits)) - 1))


def _timm_ops(increasing: bool) -> dict:
    """timm's `_RAND_TRANSFORMS` (or `_RAND_INCREASING_TRANSFORMS`) as DALI augmentations."""
    level_range = (0, TIMM_MAX_LEVEL)

    def timed(op, to_param, signed):
        return op.augmentation(level_range, signed, to_param)

    if increasing:
        enhance, enhance_signed = _timm_enhance_increasing, True
        posterize = lambda m: _timm_posterize_mask(4 - int(_timm_level(m) * 4))  # noqa: E731
        solarize = lambda m: np.float32(256 - int(_timm_level(m) * 256))  # noqa: E731
    else:
        enhance, enhance_signed = _timm_enhance, False
        posterize = lambda m: _timm_posterize_mask(int(_timm_level(m) * 4))  # noqa: E731
        solarize = lambda m: np.float32(int(_timm_level(m) * 256))  # noqa: E731
    ops = {
        "AutoContrast": aug.auto_contrast,
        "Equalize": _equalize,
        "Invert": aug.invert,
        "Rotate": timed(aug.rotate, lambda m: np.float32(_timm_level(m) * 30.0), True),
        "Posterize": timed(aug.posterize, posterize, False),
        # Pixels >= threshold are inverted, as PIL's solarize (timm's op).
        "Solarize": timed(aug.solarize, solarize, False),
        "SolarizeAdd": timed(aug.solarize_add, lambda m: np.uint8(int(_timm_level(m) * 110)), False),
        "Color": timed(aug.color, enhance, enhance_signed),
        "Contrast": timed(aug.contrast, enhance, enhance_signed),
        "Brightness": timed(aug.brightness, enhance, enhance_signed),
        "Sharpness": timed(_sharpness, _timm_sharpness(enhance), enhance_signed),
        "ShearX": timed(aug.shear_x, lambda m: np.float32([_timm_level(m) * 0.3, 0]), True),
        "ShearY": timed(aug.shear_y, lambda m: np.float32([0, _timm_level(m) * 0.3]), True),
        # timm's TranslateXRel/YRel: up to 0.45 of the side (its default translate_pct).
        "TranslateX": timed(aug.translate_x, lambda m: np.float32([_timm_level(m) * 0.45, 0]), True),
        "TranslateY": timed(aug.translate_y, lambda m: np.float32([0, _timm_level(m) * 0.45]), True),
    }
    return {name: _plain(op) for name, op in ops.items()}


@dataclass(frozen=True)
class TimmRandAugment(_DaliPolicyBase):
    """timm's RandAugment, as ``--aa rand-m9-mstd0.5-inc1`` builds it.

    Per image, ``n`` ops are drawn uniformly (with replacement) from timm's 15; each is applied
    with probability ``p`` at level ``m`` of 10, or, with ``mstd > 0``, at a level drawn per op
    from N(m, mstd) (``mstd=inf``: uniform in [0, m]), clipped to [0, 10] as timm does.

    Resolution: an integer ``m`` with ``mstd=0`` is exact. A drawn level is rounded to the nearest
    0.01 (magnitude bin ``round(level * 100)`` of 1001) before timm's level-to-argument formulas
    are applied, where timm applies them to the float itself; e.g. a drawn 8.734 rotates by
    timm's angle at 8.73 (26.19 degrees, not 26.202), and the steps of timm's ``int()``
    truncations (Posterize, Solarize, SolarizeAdd) move by less than 0.005 of a level.

    Args:
        n: ops per image (timm's ``n``, default 2).
        m: level, 0-10 (timm's ``m``, default 10; timm clips larger values to 10).
        mstd: standard deviation of the per-op level noise (timm's ``mstd``); ``inf`` for uniform.
        increasing: timm's ``inc1`` op set, whose strength grows with the level.
        p: probability of applying each drawn op (timm's ``p``, default 0.5).
        interpolation: ``"bilinear"`` (default; timm draws bilinear or bicubic, DALI warps offer
            no bicubic) or ``"nearest"``.
        fill: value of pixels uncovered by a warp. timm fills with the mean colour (124, 116, 104
            for ImageNet); DALI's warps take one value, so the default is timm's grey, 128.

    Example:
        >>> TimmRandAugment.from_string("rand-m9-mstd0.5-inc1").mstd
        0.5
    """

    n: int = 2
    m: int = TIMM_MAX_LEVEL
    mstd: float = 0.0
    increasing: bool = False
    p: float = 0.5
    interpolation: str | Enum = "bilinear"
    fill: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.n, int) and self.n >= 1):
            raise ValueError(f"n: expected an int >= 1, got {self.n!r}")
        if not (isinstance(self.m, int) and self.m >= 0):
            raise ValueError(f"m: expected an int >= 0, got {self.m!r}")
        if not (isinstance(self.mstd, (int, float)) and self.mstd >= 0):
            raise ValueError(f"mstd: expected a float >= 0 (or inf), got {self.mstd!r}")
        if not (isinstance(self.p, (int, float)) and 0 < self.p <= 1):
            raise ValueError(f"p: expected a probability in (0, 1], got {self.p!r}")

    @classmethod
    def from_string(cls, config: str, **kwargs) -> TimmRandAugment:
        """Parse timm's ``rand-...`` string: sections ``m``, ``n``, ``mstd``, ``inc``, ``p``.

        timm's ``mmax`` (levels above 10), ``w`` (weighted op choice) and ``t`` (other op sets)
        are refused with a ValueError rather than ignored. timm reads ``inc0`` as on (it tests
        ``bool("0")``); here ``inc0`` means off, as written.
        """
        sections = config.lower().split("-")
        if sections[0] != "rand":
            raise ValueError(f"policy: a timm RandAugment string starts with 'rand-', got {config!r}")
        fields: dict = {}
        for section in sections[1:]:
            match = re.fullmatch(r"([a-z]+)(\d.*|inf)", section)
            if match is None:
                raise ValueError(f"policy: cannot read section {section!r} of {config!r}")
            key, value = match.groups()
            try:
                if key in ("m", "n"):
                    fields[key] = int(value)
                elif key == "mstd":
                    # timm: a std above 100 means uniform sampling in [0, m].
                    fields["mstd"] = math.inf if float(value) > 100 else float(value)
                elif key == "inc":
                    fields["increasing"] = bool(int(value))
                elif key == "p":
                    fields["p"] = float(value)
                else:
                    raise ValueError(
                        f"policy: timm's RandAugment section {section!r} of {config!r} is not "
                        f"supported (supported: m, n, mstd, inc, p)"
                    )
            except ValueError as error:
                if str(error).startswith("policy:"):
                    raise
                raise ValueError(f"policy: cannot read section {section!r} of {config!r}") from error
        return cls(**fields, **kwargs)

    @property
    def ops(self) -> list:
        return list(_timm_ops(self.increasing).values())

    @do_not_convert
    def _level(self):
        """This layer's level: the int ``m`` (clipped to 10), or a per-sample float draw (a
        DataNode) when ``mstd > 0``, distributed as timm draws it."""
        m = min(self.m, TIMM_MAX_LEVEL)
        if self.mstd == 0:
            return m
        if math.isinf(self.mstd):
            return fn.random.uniform(range=[0.0, float(m)])
        return dali_math.clamp(
            fn.random.normal(mean=float(m), stddev=float(self.mstd)), 0.0, float(TIMM_MAX_LEVEL)
        )

    @do_not_convert
    def _level_bin(self):
        """This layer's magnitude bin: ``m * 100`` (exact), or the drawn level rounded to 0.01."""
        return _timm_bin(self._level())

    @do_not_convert
    def _signed_level_bin(self):
        """This layer's bin with a per-sample random sign, drawn before ``select`` splits the batch."""
        return signed_bin(self._level_bin())

    def _apply(self, images, crop: int):
        ops = [*self.ops, _IDENTITY]  # identity: the drawn op was skipped (probability 1 - p)
        kwargs = self._kwargs(ops, crop)
        skip_index = len(ops) - 1
        for _ in range(self.n):
            index = fn.random.uniform(values=list(range(skip_index)), dtype=types.INT32)
            if self.p < 1:
                applied = fn.random.coin_flip(probability=self.p, dtype=types.INT32)
                index = index * applied + skip_index * (1 - applied)
            images = select(
                ops, index, images, magnitude_bin=self._signed_level_bin(),
                num_magnitude_bins=TIMM_NUM_BINS, **kwargs,
            )  # fmt: skip
        return images


PolicyLike = AutoAugment | RandAugment | TrivialAugment | TimmRandAugment
# Every spelling users type: dalaug's names, torchvision's reference scripts' --auto-augment.
POLICY_NAMES = {
    "autoaugment": AutoAugment,
    "randaugment": RandAugment,
    "trivialaugment": TrivialAugment,
    "ra": RandAugment,
    "ta_wide": TrivialAugment,
    **{variant: (lambda v=variant: AutoAugment(v)) for variant in AUTOAUGMENT_POLICIES},
}
UNSUPPORTED_POLICIES = ("augmix",)  # torchvision's "augmix" and timm's "augmix-m5-w4-d2"
ACCEPTED_FORMS = (
    f"{sorted(POLICY_NAMES)}, timm's 'rand-m<M>[-n<N>][-mstd<S>][-inc1][-p<P>]' "
    f"(e.g. 'rand-m9-mstd0.5-inc1'), None, or a policy object"
)


def resolve_policy(policy: str | PolicyLike | None) -> PolicyLike | None:
    """The policy object for a name as users type it, None, or a policy object as is.

    Accepts ``"autoaugment"``/``"randaugment"``/``"trivialaugment"``; torchvision's reference
    names ``"ra"``, ``"ta_wide"``, ``"imagenet"``, ``"cifar10"``, ``"svhn"``; and timm's
    ``"rand-m9-mstd0.5"``-style strings (:meth:`TimmRandAugment.from_string`). AugMix is refused.

    Example:
        >>> resolve_policy("ta_wide")
        TrivialAugment(interpolation='nearest', fill=0, num_magnitude_bins=31)
    """
    if policy is None or isinstance(policy, (AutoAugment, RandAugment, TrivialAugment, TimmRandAugment)):
        return policy
    if isinstance(policy, str):
        name = policy.lower()
        if name in POLICY_NAMES:
            return POLICY_NAMES[name]()
        if name.split("-")[0] in UNSUPPORTED_POLICIES:
            raise ValueError(
                f"policy: AugMix ({policy!r}) is not supported: it blends several augmented "
                f"copies of each image, which dalaug's DALI graphs do not build"
            )
        if name.startswith("rand-") or name == "rand":
            return TimmRandAugment.from_string(name)
    raise ValueError(f"policy: expected one of {ACCEPTED_FORMS}; got {policy!r}")

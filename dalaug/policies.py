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
"""

from __future__ import annotations

from dataclasses import dataclass

from nvidia.dali import fn, types
from nvidia.dali.auto_aug import augmentations as aug
from nvidia.dali.auto_aug import auto_augment, rand_augment, trivial_augment
from nvidia.dali.auto_aug.core import Policy as DaliPolicy
from nvidia.dali.auto_aug.core import augmentation

INTERPOLATIONS = {"nearest": types.INTERP_NN, "bilinear": types.INTERP_LINEAR}


# DALI 2.4's own equalize and sharpness still call the deprecated fn.experimental aliases, which
# print a deprecation warning per process; these are the same ops on the stable names.
@augmentation(name="equalize")
def _equalize(data, _):
    return fn.equalize(data)


@augmentation(name="sharpness", param_device="auto")
def _sharpness(data, kernel):
    return fn.filter(data, kernel)


def _ops(wide: bool) -> dict:
    """torchvision's augmentation space as DALI augmentations; ``wide`` is TrivialAugmentWide's."""
    shear, rotate, enhance = (0.99, 135.0, 0.99) if wide else (0.3, 30.0, 0.9)
    # torchvision translates by up to 150/331 of the side (32 px absolute in the wide space);
    # DALI's translate ops take the fraction and the image shape.
    translate = 32.0 / 224.0 if wide else 150.0 / 331.0
    poster_bits = (8, 2) if wide else (8, 4)
    low = 0.01 if wide else 0.0
    return {
        "Identity": aug.identity,
        "ShearX": aug.shear_x.augmentation((0, shear), True),
        "ShearY": aug.shear_y.augmentation((0, shear), True),
        "TranslateX": aug.translate_x.augmentation((0, translate), True),
        "TranslateY": aug.translate_y.augmentation((0, translate), True),
        "Rotate": aug.rotate.augmentation((0, rotate), True),
        "Brightness": aug.brightness.augmentation((low, enhance), True, aug.shift_enhance_range),
        "Color": aug.color.augmentation((low, enhance), True, aug.shift_enhance_range),
        "Contrast": aug.contrast.augmentation((low, enhance), True, aug.shift_enhance_range),
        "Sharpness": _sharpness.augmentation((low, enhance), True, aug.sharpness_kernel),
        # Magnitude = bits kept, from 8 (identity) down, as torchvision's posterize bins.
        "Posterize": aug.posterize.augmentation(poster_bits, False, aug.poster_mask_uint8),
        # Pixels >= threshold are inverted; torchvision's thresholds run 255 -> 0.
        "Solarize": aug.solarize.augmentation((255, 0), False),
        "AutoContrast": aug.auto_contrast,
        "Equalize": _equalize,
        "Invert": aug.invert,
    }


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

    interpolation: str = "nearest"
    fill: int = 0

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation: expected one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        if not (isinstance(self.fill, int) and 0 <= self.fill <= 255):
            raise ValueError(f"fill: expected an int in [0, 255], got {self.fill!r}")

    def _kwargs(self, ops, crop: int) -> dict:
        # No `seed`: DALI 2.4's apply_* functions give that one seed to several random ops, so
        # e.g. AutoAugment's sub-policy choice and its apply-probability draws become correlated
        # (the ImageNet policy then warps 12% of images instead of 17%). Left unset, each op gets
        # its own seed from the pipeline's, which keeps runs reproducible.
        kwargs = {"fill_value": self.fill, "interp_type": INTERPOLATIONS[self.interpolation]}
        if any(op.name.startswith("translate") for op in ops):
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
            raise ValueError(
                f"variant: expected one of {list(AUTOAUGMENT_VARIANTS)}, got {self.variant!r}"
            )

    @property
    def policy(self) -> DaliPolicy:
        """The sub-policies as a DALI ``Policy`` (checked by DALI when built)."""
        if self.variant == "efficientnet":
            return auto_augment.get_image_net_policy(use_shape=True)
        sub_policies = [
            [(OPS[name], p, bin_) for name, p, bin_ in sub_policy]
            for sub_policy in AUTOAUGMENT_POLICIES[self.variant]
        ]
        return DaliPolicy(f"autoaugment-{self.variant}", AUTOAUGMENT_BINS, sub_policies)

    def apply(self, images, crop: int):
        policy = self.policy
        return auto_augment.apply_auto_augment(
            policy, images, **self._kwargs(policy.augmentations.values(), crop)
        )


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
            raise ValueError(
                f"m: expected an int in [0, {self.num_magnitude_bins - 1}], got {self.m!r}"
            )

    @property
    def ops(self) -> list:
        return [OPS[name] for name in UNIFORM_OPS]

    def apply(self, images, crop: int):
        ops = self.ops
        return rand_augment.apply_rand_augment(
            ops, images, n=self.n, m=self.m, num_magnitude_bins=self.num_magnitude_bins,
            **self._kwargs(ops, crop),
        )  # fmt: skip


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

    def apply(self, images, crop: int):
        ops = self.ops
        return trivial_augment.apply_trivial_augment(
            ops, images, num_magnitude_bins=self.num_magnitude_bins,
            **self._kwargs(ops, crop),
        )  # fmt: skip


PolicyLike = AutoAugment | RandAugment | TrivialAugment
POLICY_NAMES = {
    "autoaugment": AutoAugment,
    "randaugment": RandAugment,
    "trivialaugment": TrivialAugment,
}


def resolve_policy(policy: str | PolicyLike | None) -> PolicyLike | None:
    """``"autoaugment"`` / ``"randaugment"`` / ``"trivialaugment"`` / None / a policy object."""
    if policy is None or isinstance(policy, (AutoAugment, RandAugment, TrivialAugment)):
        return policy
    if isinstance(policy, str) and policy.lower() in POLICY_NAMES:
        return POLICY_NAMES[policy.lower()]()
    raise ValueError(
        f"policy: expected one of {sorted(POLICY_NAMES)}, None, or an AutoAugment/RandAugment/"
        f"TrivialAugment object; got {policy!r}"
    )

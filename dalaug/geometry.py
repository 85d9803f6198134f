"""Resampling choices and the evaluation resize + centre crop, placed exactly as torchvision's.

torchvision's ``Resize(R)`` scales the shorter side to R and the longer to ``int(R * long / short)``
(truncated); ``CenterCrop(C)`` then starts at ``int(round((H - C) / 2))`` (Python's round: half to
even). DALI's ``resize(resize_shorter=R)`` rounds the longer side and ``crop_mirror_normalize``
centres its window with half-pixel offsets, so a plain DALI eval graph sits 0.5-1 px off
torchvision's on most photos. :func:`eval_resize_crop` computes torchvision's sizes and offsets per
sample inside the DALI graph.
"""

from __future__ import annotations

from enum import Enum

from nvidia.dali import fn, types
from nvidia.dali.data_node import DataNode

# torchvision's InterpolationMode values and timm's names. torchvision's "nearest" (a floor-based
# lookup) and "nearest-exact" (pixel centres) both map to DALI's one nearest mode, which samples at
# pixel centres like "nearest-exact".
_INTERPOLATIONS = {
    "nearest": types.INTERP_NN,
    "nearest-exact": types.INTERP_NN,
    "bilinear": types.INTERP_LINEAR,
    "bicubic": types.INTERP_CUBIC,
    "lanczos": types.INTERP_LANCZOS3,
}
# Filters that have no DALI counterpart: refused rather than silently swapped for another.
_UNSUPPORTED = {"box", "hamming"}
# timm's "random" (its RandomResizedCropAndInterpolation default): bilinear or bicubic, per image.
RANDOM_INTERPOLATION = (types.INTERP_LINEAR, types.INTERP_CUBIC)


def resolve_interpolation(
    value: str | Enum | types.DALIInterpType, *, random: bool = False
) -> types.DALIInterpType | tuple[types.DALIInterpType, ...]:
    """The DALI interpolation type for a name as torchvision's and timm's scripts pass it.

    Args:
        value: ``"nearest"``, ``"nearest-exact"``, ``"bilinear"``, ``"bicubic"`` or ``"lanczos"``
            (any case), a ``torchvision.transforms.InterpolationMode``, or a DALI interp type;
            with ``random``, also timm's ``"random"``.
        random: accept ``"random"``, returned as :data:`RANDOM_INTERPOLATION` (the choices).

    Returns:
        The ``nvidia.dali.types.DALIInterpType`` for ``fn.resize(interp_type=...)``, or a tuple of
        them to draw from per image (:func:`interpolation_node`).

    Example:
        >>> resolve_interpolation("bicubic") == types.INTERP_CUBIC
        True
    """
    if isinstance(value, types.DALIInterpType):
        return value
    # InterpolationMode is a str-valued Enum; its .value is the name torchvision's scripts use.
    name = value.value if isinstance(value, Enum) else value
    if random and isinstance(name, str) and name.lower() == "random":
        return RANDOM_INTERPOLATION
    if isinstance(name, str) and name.lower() == "random":
        raise ValueError(
            f"interpolation: {value!r} (timm's bilinear-or-bicubic per image) applies to a training "
            "loader's crop only"
        )
    if isinstance(name, str) and name.lower() in _INTERPOLATIONS:
        return _INTERPOLATIONS[name.lower()]
    if isinstance(name, str) and name.lower() in _UNSUPPORTED:
        raise ValueError(
            f"interpolation: {value!r} has no DALI equivalent; use one of {sorted(_INTERPOLATIONS)}"
        )
    raise ValueError(
        f"interpolation: expected one of {sorted(_INTERPOLATIONS)}, a torchvision InterpolationMode "
        f"or a DALI interp type; got {value!r}"
    )


def interpolation_node(interp: types.DALIInterpType | tuple[types.DALIInterpType, ...]):
    """``interp_type`` for a DALI resize: the type itself, or one drawn per image from a tuple."""
    if not isinstance(interp, tuple):
        return interp
    choice = fn.random.choice([int(i) for i in interp])
    return fn.cast(choice, dtype=types.DALIDataType.INTERP_TYPE)


def _round_half_even_half(diff: DataNode) -> DataNode:
    """``int(round(diff / 2))`` for non-negative integer ``diff``, as Python rounds (half to even)."""
    half = diff // 2
    # An odd diff ends in .5: Python rounds it up only when that makes the result even.
    return half + (diff & 1) * (half & 1)


def eval_resize_crop(
    images: DataNode,
    resize: int,
    crop: int,
    interp: str | Enum | types.DALIInterpType = "bilinear",
) -> DataNode:
    """torchvision's ``Resize(resize) + CenterCrop(crop)`` inside a DALI pipeline definition.

    Sizes and offsets are computed per sample from the images' run-time shapes, so the window
    starts at the pixel torchvision's starts at; the resampling filter is DALI's (antialiased when
    downscaling, as torchvision's ``antialias=True``), so pixels differ slightly, geometry does not.

    Args:
        images: decoded HWC uint8 images (CPU or GPU DataNode).
        resize: the shorter side after resizing (torchvision's ``Resize(int)``).
        crop: the side of the square centre crop; at most ``resize``.
        interp: anything :func:`resolve_interpolation` accepts.

    Returns:
        HWC uint8 images of ``crop x crop``, on the device of ``images``.

    Example (inside a ``@pipeline_def``)::

        images = fn.decoders.image(encoded, device="mixed", output_type=types.RGB)
        images = eval_resize_crop(images, 256, 224, "bilinear")
    """
    for name, value in (("resize", resize), ("crop", crop)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if crop > resize:
        # torchvision would pad; an eval crop larger than the resized image is almost surely a typo.
        raise ValueError(f"crop: expected at most resize ({resize}), got {crop}")
    interp_type = resolve_interpolation(interp)
    # CPU shapes even for GPU images (the dynamic executor, DALI's default, allows the transfer).
    shape = images.shape(dtype=types.INT32)
    height, width = shape[0], shape[1]
    # torchvision's branch: the width is the short side when width <= height. The per-sample
    # selects are arithmetic on the 0/1 masks.
    narrow = width <= height
    wide = narrow ^ True
    short, long_ = width * narrow + height * wide, height * narrow + width * wide
    # Exact integer floor division equals int(R * long / short) for positive ints.
    new_long = (long_ * resize) // short
    new_height = new_long * narrow + resize * wide
    new_width = resize * narrow + new_long * wide
    images = fn.resize(
        images,
        size=fn.cast(fn.stack(new_height, new_width), dtype=types.FLOAT),
        interp_type=interp_type,
        antialias=True,
    )
    anchor = fn.stack(_round_half_even_half(new_height - crop), _round_half_even_half(new_width - crop))
    return fn.slice(images, anchor, types.Constant([crop, crop], dtype=types.INT32), axis_names="HW")

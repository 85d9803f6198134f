"""Cutout: erase random rectangles of each image.

DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout", 2017.
Each hole's centre is uniform over the image and the hole is clipped at the borders, as in the
paper, so a hole near an edge erases less than its nominal size. Labels are not changed; they only
become soft targets so that Cutout composes with the mixing operators.

The holes are drawn on the host (see ``dalaug.ops.sampling``), reach the device in one copy and are
erased through one broadcast mask, so a call is a handful of kernels whatever the batch size and
never waits for the device. Noise fill is drawn on the device from a generator seeded on the host.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from numbers import Integral

import numpy as np
import torch
from torch import Tensor

from dalaug.ops.base import Augmentation, Params, check_count, check_range, check_real
from dalaug.ops.boxes import box_mask, boxes_around, sides_for_area
from dalaug.ops.fused import fill_holes
from dalaug.ops.pairing import into
from dalaug.ops.sampling import to_device


@dataclasses.dataclass(frozen=True)
class CutoutParams(Params):
    """Cutout's parameters for one batch of N images.

    Attributes:
        holes: int64 (N, num_holes, 4) on the batch's device, rows (top, bottom, left, right),
            bottom/right exclusive, clipped; empty where the sample was not erased.
        noise: the fill values (N, C, H, W) in the image dtype when the fill is noise, else None.
    """

    holes: Tensor
    noise: Tensor | None


class Cutout(Augmentation):
    """Erase ``num_holes`` rectangles per image, filled with a constant or with noise.

    Give the hole size either as ``size`` (fixed, as in the paper) or as ``scale`` and ``ratio``
    (area fraction and aspect ratio drawn per hole, as in random erasing).

    Args:
        size: hole side in pixels, an int or (height, width). Must fit in the image.
        scale: (min, max) share of the image area per hole, drawn uniformly, in (0, 1].
        ratio: (min, max) aspect ratio height / width, drawn log-uniformly; only with ``scale``
            (None: (0.3, 1 / 0.3)). Refused with ``size``, which fixes the shape.
        num_holes: holes per image (they may overlap).
        fill: a number (0, the default, is the mean of normalised images) or "noise" for standard
            normal values drawn from the generator.
        p: probability of erasing, per image.
        num_classes: number of classes; required when targets are class indices.
        label_smoothing: s in [0, 1) for the soft targets.
        inplace: erase in ``images`` instead of returning a new tensor.
        seed: seeds the operator's CPU generator (see ``BatchOp``).

    ``sample`` returns ``CutoutParams``.

    Example:
        >>> import torch
        >>> from dalaug.ops import Cutout
        >>> cutout = Cutout(size=8, num_classes=10, seed=0)
        >>> images, soft = cutout(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        >>> bool((images == 0).any())
        True
    """

    mixes = False  # each image keeps its own label

    def __init__(
        self,
        size: int | Sequence[int] | None = None,
        *,
        scale: Sequence[float] | None = None,
        ratio: Sequence[float] | None = None,
        num_holes: int = 1,
        fill: float | str = 0.0,
        p: float = 1.0,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        inplace: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            p=p,
            num_classes=num_classes,
            label_smoothing=label_smoothing,
            inplace=inplace,
            seed=seed,
        )
        if (size is None) == (scale is None):
            raise ValueError("give exactly one of size and scale")
        self.size: tuple[int, int] | None = None
        self.scale: tuple[float, float] | None = None
        self.ratio: tuple[float, float] | None = None
        if size is not None:
            if ratio is not None:
                raise ValueError("ratio applies only with scale: size fixes the holes' shape")
            self.size = _sides(size)
        else:
            self.scale = check_range("scale", scale, 0.0, 1.0)
            self.ratio = check_range("ratio", (0.3, 1 / 0.3) if ratio is None else ratio, 0.0, math.inf)
        self.num_holes = check_count("num_holes", num_holes)
        if isinstance(fill, str):
            if fill != "noise":
                raise ValueError(f"fill must be a number or 'noise', got {fill!r}")
            self.fill: float | str = fill
        else:
            self.fill = check_real("fill", fill)

    def _sample(self, images: Tensor, rng: np.random.Generator) -> CutoutParams:
        batch, _, height, width = images.shape
        shape = (batch, self.num_holes)
        if self.size is not None:
            if self.size[0] > height or self.size[1] > width:
                raise ValueError(f"size {self.size} is larger than the images ({height}, {width})")
            box_h, box_w = np.full(shape, self.size[0]), np.full(shape, self.size[1])
        else:
            box_h, box_w = sides_for_area(rng, self.scale, self.ratio, shape, height, width)
            # At least one pixel, so a hole never vanishes on a small image; at most the image.
            box_h = np.clip(box_h, 1, height).astype(np.int64)
            box_w = np.clip(box_w, 1, width).astype(np.int64)
        applied = (rng.random(batch) < self.p)[:, None]
        centre_y, centre_x = rng.integers(0, height, shape), rng.integers(0, width, shape)
        holes = boxes_around(centre_y, centre_x, box_h * applied, box_w * applied, height, width)
        noise = draw_noise(images, rng) if self.fill == "noise" else None
        return CutoutParams(to_device([holes], images.device)[0], noise)

    def _apply_images(self, images: Tensor, params: CutoutParams) -> Tensor:
        fill = self.fill if params.noise is None else params.noise
        return erase(images, params.holes, fill, inplace=self.inplace)


def _sides(size: object) -> tuple[int, int]:
    """``size`` (an int or a pair) as (height, width), each >= 1, or raise naming ``size``."""
    if isinstance(size, Integral):
        size = (size, size)
    if not isinstance(size, Sequence):
        raise TypeError(f"size must be an int or (height, width), got {size!r}")
    if len(size) != 2:
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    return check_count("size", size[0]), check_count("size", size[1])


def draw_noise(images: Tensor, rng: np.random.Generator) -> Tensor:
    """Standard normal values shaped like ``images`` (its dtype), on its device.

    Drawn on the device, from a device generator seeded by one host draw: a batch of noise is
    too large to ship, and the seed keeps it reproducible from the operator's CPU generator.
    """
    generator = torch.Generator(device=images.device)
    generator.manual_seed(int(rng.integers(0, 2**63 - 1)))
    # Drawn in NCHW order whatever the images' memory format, so the values do not depend on it.
    return torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)


def erase(images: Tensor, holes: Tensor, fill: float | Tensor, *, inplace: bool) -> Tensor:
    """Fill each hole through one broadcast mask, without reading the holes on the host.

    Args:
        images: (N, C, H, W).
        holes: int64 (N, K, 4) rows (top, bottom, left, right) on the images' device.
        fill: a number, or a tensor shaped like ``images`` to copy the hole pixels from.
        inplace: write into ``images``.

    Returns:
        The erased batch in the input's memory format (``images`` itself when ``inplace``).
    """
    erased = fill_holes(images, holes, fill, inplace=inplace)  # on CUDA, one kernel (ops.fused)
    if erased is not None:
        return erased
    mask = box_mask(holes, *images.shape[-2:])  # (N, K, H, W): with one hole, already (N, 1, H, W)
    if mask.shape[1] > 1:
        mask = mask.any(dim=1, keepdim=True)
    if isinstance(fill, float):
        # clone keeps the memory format; masked_fill out of place returns contiguous NCHW.
        return (images if inplace else images.clone()).masked_fill_(mask, fill)
    return into(images if inplace else torch.empty_like(images), torch.where, mask, fill, images)

"""Cutout: erase random rectangles of each image.

DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout", 2017.
Each hole's centre is uniform over the image and the hole is clipped at the borders, as in the
paper, so a hole near an edge erases less than its nominal size. Labels are not changed; they only
become soft targets so that Cutout composes with the mixing operators.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from dalaug.ops.base import Augmentation, Params, check_count, check_range, check_real
from dalaug.ops.boxes import box_mask, boxes_around


@dataclasses.dataclass(frozen=True)
class CutoutParams(Params):
    """Cutout's parameters for one batch of N images.

    Attributes:
        holes: int64 (N, num_holes, 4) rows (top, bottom, left, right), bottom/right exclusive,
            clipped; empty where the sample was not erased.
        noise: the fill values (N, C, H, W) in the image dtype when ``fill="noise"``, else None.
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
        ratio: (min, max) aspect ratio height / width, drawn log-uniformly; only with ``scale``.
        num_holes: holes per image (they may overlap).
        fill: a number (0, the default, is the mean of normalised images) or "noise" for standard
            normal values drawn from the generator.
        p: probability of erasing, per image.
        num_classes: number of classes; required when targets are class indices.
        label_smoothing: s in [0, 1) for the soft targets.
        inplace: erase in ``images`` instead of returning a new tensor.
        seed: seeds the operator's generators (see ``BatchOp``).

    ``sample`` returns ``CutoutParams``.

    Example:
        >>> import torch
        >>> from dalaug.ops import Cutout
        >>> cutout = Cutout(size=8, num_classes=10, seed=0)
        >>> images, soft = cutout(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        >>> bool((images == 0).any())
        True
    """

    def __init__(
        self,
        size: int | Sequence[int] | None = None,
        *,
        scale: Sequence[float] | None = None,
        ratio: Sequence[float] = (0.3, 1 / 0.3),
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
        if size is not None:
            sides = (size, size) if isinstance(size, int) else tuple(size)
            if len(sides) != 2:
                raise ValueError(f"size must be an int or (height, width), got {size!r}")
            self.size = (check_count("size", sides[0]), check_count("size", sides[1]))
        else:
            self.scale = check_range("scale", scale, 0.0, 1.0)
        self.ratio = check_range("ratio", ratio, 0.0, math.inf)
        self.num_holes = check_count("num_holes", num_holes)
        if isinstance(fill, str):
            if fill != "noise":
                raise ValueError(f"fill must be a number or 'noise', got {fill!r}")
            self.fill: float | str = fill
        else:
            self.fill = check_real("fill", fill)

    def _sample(self, images: Tensor, generator: torch.Generator | None) -> CutoutParams:
        batch, _, height, width = images.shape
        device = images.device
        shape = (batch, self.num_holes)
        if self.size is not None:
            if self.size[0] > height or self.size[1] > width:
                raise ValueError(f"size {self.size} is larger than the images ({height}, {width})")
            box_h = torch.full(shape, self.size[0], device=device)
            box_w = torch.full(shape, self.size[1], device=device)
        else:
            low, high = self.scale
            area = torch.empty(shape, device=device).uniform_(low, high, generator=generator)
            area = area * (height * width)
            log_ratio = torch.empty(shape, device=device).uniform_(
                math.log(self.ratio[0]), math.log(self.ratio[1]), generator=generator
            )
            ratio = log_ratio.exp()
            # At least one pixel, so a hole never vanishes on a small image; at most the image.
            box_h = (area * ratio).sqrt().round().long().clamp(1, height)
            box_w = (area / ratio).sqrt().round().long().clamp(1, width)
        applied = self._applied(batch, device, generator)[:, None]
        centre_y = torch.randint(0, height, shape, generator=generator, device=device)
        centre_x = torch.randint(0, width, shape, generator=generator, device=device)
        holes = boxes_around(centre_y, centre_x, box_h * applied, box_w * applied, height, width)
        noise = None
        if self.fill == "noise":
            noise = torch.randn(images.shape, generator=generator, device=device, dtype=images.dtype)
        return CutoutParams(holes, noise)

    def _apply_images(self, images: Tensor, params: CutoutParams) -> Tensor:
        fill = self.fill if params.noise is None else params.noise
        if images.device.type == "cpu":
            return erase_sliced(images, params.holes, fill, inplace=self.inplace)
        return erase_masked(images, params.holes, fill, inplace=self.inplace)


def erase_sliced(images: Tensor, holes: Tensor, fill: float | Tensor, *, inplace: bool) -> Tensor:
    """Fill each hole by slicing, one hole at a time: the CPU path.

    On the CPU the holes are already on the host, and writing only the hole pixels beats any
    full-batch masked pass (the loop costs microseconds per hole). On CUDA reading the holes
    back would wait for the device, hence ``erase_masked`` there.

    Args:
        images: (N, C, H, W).
        holes: int64 (N, K, 4) rows (top, bottom, left, right).
        fill: a number, or a tensor shaped like ``images`` to copy the hole pixels from.
        inplace: write into ``images``.

    Returns:
        The erased batch (``images`` itself when ``inplace``).
    """
    out = images if inplace else images.clone()
    for index, sample_holes in enumerate(holes.tolist()):
        for top, bottom, left, right in sample_holes:
            region = (index, slice(None), slice(top, bottom), slice(left, right))
            out[region] = fill if isinstance(fill, float) else fill[region]
    return out


def erase_masked(images: Tensor, holes: Tensor, fill: float | Tensor, *, inplace: bool) -> Tensor:
    """Fill each hole through a broadcast mask, without reading the holes on the host.

    Arguments and result as for ``erase_sliced``.
    """
    height, width = images.shape[-2:]
    mask = box_mask(holes, height, width).any(dim=1, keepdim=True)
    if isinstance(fill, float):
        return images.masked_fill_(mask, fill) if inplace else images.masked_fill(mask, fill)
    if inplace:
        return torch.where(mask, fill, images, out=images)
    return torch.where(mask, fill, images)

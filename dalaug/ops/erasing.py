"""Random erasing with torchvision's and timm's semantics, batched and drawn on the host.

Zhong, Zheng, Kang, Li, Yang, "Random Erasing Data Augmentation", AAAI 2020. As torchvision's
``RandomErasing`` (and timm's ``--reprob``): each image, with probability p, gets one rectangle of
area ``uniform(scale)`` x H x W and aspect ratio log-uniform in ``ratio``, placed wholly inside the
image; up to 10 draws are tried and an image whose draws all overflow is left alone. The fill is a
constant or, with ``value="random"`` (timm's mode "pixel"), per-pixel standard normal noise.

Unlike ``Cutout``, whose holes are centred anywhere and clipped, a rectangle here always has its
drawn size. Labels are unchanged; they become soft targets so the operator composes with mixing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from torch import Tensor

from dalaug.ops.base import Augmentation, check_range, check_real
from dalaug.ops.boxes import sides_for_area
from dalaug.ops.cutout import CutoutParams, draw_noise, erase
from dalaug.ops.sampling import to_device

ATTEMPTS = 10


class RandomErasing(Augmentation):
    """Erase one random rectangle per image, as torchvision's ``RandomErasing``, for a batch.

    Args:
        p: probability of erasing, per image (timm's ``--reprob``).
        scale: (min, max) share of the image area erased, in (0, 1].
        ratio: (min, max) aspect ratio height / width, drawn log-uniformly.
        value: a number, or "random" for per-pixel standard normal noise (timm's mode "pixel").
        num_classes: number of classes; required when targets are class indices.
        label_smoothing: s in [0, 1) for the soft targets.
        inplace: erase in ``images`` instead of returning a new tensor.
        seed: seeds the operator's CPU generator (see ``BatchOp``).

    ``sample`` returns ``CutoutParams`` with one hole per image (empty where not erased).

    Example:
        >>> import torch
        >>> from dalaug.ops import RandomErasing
        >>> erasing = RandomErasing(p=1.0, num_classes=10, seed=0)
        >>> images, soft = erasing(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        >>> bool((images == 0).any()), soft.shape
        (True, torch.Size([8, 10]))
    """

    mixes = False  # each image keeps its own label

    def __init__(
        self,
        p: float = 0.5,
        scale: Sequence[float] = (0.02, 0.33),
        ratio: Sequence[float] = (0.3, 3.3),
        value: float | str = 0.0,
        *,
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
        self.scale = check_range("scale", scale, 0.0, 1.0)
        self.ratio = check_range("ratio", ratio, 0.0, math.inf)
        if isinstance(value, str):
            if value != "random":
                raise ValueError(f"value must be a number or 'random', got {value!r}")
            self.value: float | str = value
        else:
            self.value = check_real("value", value)

    def _sample(self, images: Tensor, rng: np.random.Generator) -> CutoutParams:
        batch, _, height, width = images.shape
        shape = (batch, ATTEMPTS)
        box_h, box_w = sides_for_area(rng, self.scale, self.ratio, shape, height, width)
        box_h, box_w = box_h.astype(np.int64), box_w.astype(np.int64)
        fits = (box_h < height) & (box_w < width)
        first = fits.argmax(1)  # the first attempt that fits (0 if none does: then not applied)
        rows = np.arange(batch)
        applied = (rng.random(batch) < self.p) & fits.any(1)
        box_h, box_w = box_h[rows, first] * applied, box_w[rows, first] * applied
        # Top-left uniform over the positions that keep the whole rectangle inside the image.
        top = rng.integers(0, height - box_h + 1)
        left = rng.integers(0, width - box_w + 1)
        holes = np.stack([top, top + box_h, left, left + box_w], -1)[:, None]
        noise = draw_noise(images, rng) if self.value == "random" else None
        return CutoutParams(to_device([holes], images.device)[0], noise)

    def _apply_images(self, images: Tensor, params: CutoutParams) -> Tensor:
        fill = self.value if params.noise is None else params.noise
        return erase(images, params.holes, fill, inplace=self.inplace)

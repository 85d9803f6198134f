"""Box geometry shared by CutMix, SaliencyMix, Cutout and RandomErasing, and the two ways to paste.

A box is a row ``(top, bottom, left, right)`` of integer pixel indices, bottom and right exclusive,
already clipped to the image. Boxes drawn on the host are numpy arrays (or, one per batch, a tuple
of ints); SaliencyMix centres its boxes on the device, so the geometry works on torch tensors too.
A host box is pasted by slicing, so only the patch is read and written; per-sample boxes become one
broadcast mask and one ``where`` over the batch, without reading anything back on the host.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dalaug.ops.pairing import into, partner_images

# One box for a whole batch, on the host: (top, bottom, left, right).
HostBox = tuple[int, int, int, int]


def cut_sizes(lam: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Side lengths ``floor(sqrt(1 - λ) * H)`` and ``floor(sqrt(1 - λ) * W)`` as int64 arrays.

    This is CutMix's box: its area is 1 - λ of the image before clipping (Yun et al. 2019).
    """
    ratio = np.sqrt(np.minimum(np.maximum(1.0 - lam, 0.0), 1.0))
    return np.floor(ratio * height).astype(np.int64), np.floor(ratio * width).astype(np.int64)


def sides_for_area(
    rng: np.random.Generator, scale: tuple[float, float], ratio: tuple[float, float], shape: tuple,
    height: int, width: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Box sides (rounded, not clipped) of an area uniform in ``scale`` of the image and an aspect
    ratio log-uniform in ``ratio``: the rectangle of torchvision's RandomErasing (and Cutout's ``scale``)."""
    area = rng.uniform(*scale, shape) * (height * width)
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), shape))
    return np.rint(np.sqrt(area * aspect)), np.rint(np.sqrt(area / aspect))


def boxes_around(centre_y: Any, centre_x: Any, box_h: Any, box_w: Any, height: int, width: int) -> Any:
    """Boxes of the given sides centred on the given pixels, clipped to an H x W image.

    Works on numpy arrays (host) and torch tensors (device) alike.

    Args:
        centre_y, centre_x: integer arrays of any (same) shape S: the centre pixels.
        box_h, box_w: integer side lengths, broadcastable to S; 0 gives an empty box.
        height, width: the image size.

    Returns:
        Integer array S + (4,) of rows (top, bottom, left, right), bottom/right exclusive, of the
        same kind as ``centre_y``. A box of side >= 1 always contains its centre.

    Example:
        >>> boxes_around(np.array([0]), np.array([5]), 4, 4, 8, 8)
        array([[0, 2, 3, 7]])
    """
    top = centre_y - box_h // 2
    left = centre_x - box_w // 2
    edges = [
        _clip(top, height),
        _clip(top + box_h, height),
        _clip(left, width),
        _clip(left + box_w, width),
    ]
    return torch.stack(edges, -1) if isinstance(centre_y, Tensor) else np.stack(edges, -1)


def _clip(values: Any, high: int) -> Any:
    """``values`` clipped to [0, high]: np.clip's Python wrapper costs more than the work here."""
    if isinstance(values, Tensor):
        return values.clamp(0, high)
    return np.minimum(np.maximum(values, 0), high)


def kept_fraction(boxes: Any, height: int, width: int) -> Any:
    """float32 share of an H x W image outside each box: CutMix's λ after clipping.

    timm calls this ``correct_lam``: λ is the area actually kept, not the one drawn. One correctly
    rounded division of two exact integers, on the host or the device alike.
    """
    area = (boxes[..., 1] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 2])
    total = height * width
    if isinstance(boxes, Tensor):
        return (total - area).to(torch.float32) / total
    return (total - area).astype(np.float32) / np.float32(total)


def box_mask(boxes: Tensor, height: int, width: int) -> Tensor:
    """Boolean masks S + (H, W), True inside each box of ``boxes`` (S + (4,)), by broadcasting."""
    rows = torch.arange(height, device=boxes.device)
    cols = rows if width == height else torch.arange(width, device=boxes.device)
    top, bottom, left, right = boxes[..., None].unbind(-2)
    # torch.bitwise_and, not `&`: the operator form costs a second dispatch per call.
    in_rows = torch.bitwise_and(rows >= top, rows < bottom)
    in_cols = torch.bitwise_and(cols >= left, cols < right)
    return torch.bitwise_and(in_rows[..., :, None], in_cols[..., None, :])


def paste_box(images: Tensor, box: HostBox, partner: Tensor, mirrored: bool, *, inplace: bool) -> Tensor:
    """CutMix's pixel move for one host box shared by the batch: copy only the patch.

    Args:
        images: (N, C, H, W).
        box: (top, bottom, left, right) as ints.
        partner: int64 (N,): sample i receives the patch of image ``partner[i]``.
        mirrored: ``partner`` is the mirror pairing i <-> N - 1 - i.
        inplace: write into ``images``.

    Returns:
        The mixed batch (``images`` itself when ``inplace``, or when the box is empty).
    """
    top, bottom, left, right = box
    if top == bottom or left == right:
        return images
    out = images if inplace else images.clone()
    patch = out[:, :, top:bottom, left:right]
    patch.copy_(partner_images(patch, partner, mirrored))
    return out


def paste_masked(images: Tensor, mask: Tensor, partner: Tensor, mirrored: bool, *, inplace: bool) -> Tensor:
    """Take each sample's partner pixels where ``mask`` (N or 1, 1, H, W) is True: one ``where``.

    Returns:
        The mixed batch in the input's memory format (``images`` itself when ``inplace``).
    """
    donors = partner_images(images, partner, mirrored)
    out = images if inplace else donors  # donors is a fresh batch: blend into it
    return into(out, torch.where, mask, donors, images)

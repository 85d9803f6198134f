"""Box geometry shared by CutMix, SaliencyMix and Cutout, as batched integer tensors.

A box is a row ``(top, bottom, left, right)`` of int64 pixel indices, bottom and right exclusive,
already clipped to the image. Boxes are built and turned into masks with broadcast comparisons
against ``arange`` so that nothing here waits for the device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dalaug.ops.pairing import mix_with_mirror_, take_partner


def cut_sizes(lam: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Side lengths ``floor(sqrt(1 - λ) * H)`` and ``floor(sqrt(1 - λ) * W)`` as int64 tensors.

    This is CutMix's box: its area is 1 - λ of the image before clipping (Yun et al. 2019).
    """
    ratio = (1.0 - lam).clamp(0.0, 1.0).sqrt()
    return (ratio * height).floor().long(), (ratio * width).floor().long()


def boxes_around(
    centre_y: Tensor, centre_x: Tensor, box_h: Tensor, box_w: Tensor, height: int, width: int
) -> Tensor:
    """Boxes of the given sides centred on the given pixels, clipped to an H x W image.

    Args:
        centre_y, centre_x: int64 tensors of any (same) shape S: the centre pixels.
        box_h, box_w: int64 side lengths, broadcastable to S; 0 gives an empty box.
        height, width: the image size.

    Returns:
        int64 tensor S + (4,) of rows (top, bottom, left, right), bottom/right exclusive.
        A box of side >= 1 always contains its centre.

    Example:
        >>> four = torch.tensor([4])
        >>> boxes_around(torch.tensor([0]), torch.tensor([5]), four, four, 8, 8)
        tensor([[0, 2, 3, 7]])
    """
    top = centre_y - box_h // 2
    left = centre_x - box_w // 2
    return torch.stack(
        [
            top.clamp(0, height),
            (top + box_h).clamp(0, height),
            left.clamp(0, width),
            (left + box_w).clamp(0, width),
        ],
        dim=-1,
    )


def box_mask(boxes: Tensor, height: int, width: int) -> Tensor:
    """Boolean masks S + (H, W), True inside each box of ``boxes`` (S + (4,))."""
    rows = torch.arange(height, device=boxes.device)
    cols = torch.arange(width, device=boxes.device)
    top, bottom, left, right = (edge[..., None] for edge in boxes.unbind(-1))
    in_rows = (rows >= top) & (rows < bottom)
    in_cols = (cols >= left) & (cols < right)
    return in_rows[..., :, None] & in_cols[..., None, :]


def kept_fraction(boxes: Tensor, height: int, width: int) -> Tensor:
    """float32 share of an H x W image outside each box: CutMix's λ after clipping.

    timm calls this ``correct_lam``: λ is the area actually kept, not the one drawn.
    """
    area = (boxes[..., 1] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 2])
    total = height * width
    # One correctly rounded division of two exact integers, so tests can reproduce λ bit for bit.
    return (total - area).to(torch.float32) / total


def paste_boxes(
    images: Tensor, partner: Tensor, boxes: Tensor, *, inplace: bool, mirrored: bool = False
) -> Tensor:
    """Copy each partner image's box region onto the image: the pixel move of CutMix.

    Args:
        images: (N, C, H, W).
        partner: int64 (N,): sample i receives the patch of image ``partner[i]``.
        boxes: int64 (1, 4), one box for the whole batch, or (N, 4), one per sample.
        inplace: write into ``images``.
        mirrored: ``partner`` is the mirror pairing i <-> N - 1 - i, so one shared box can be
            pasted by swapping the patches of the two batch halves.

    Returns:
        The mixed batch (``images`` itself when ``inplace``).
    """
    height, width = images.shape[-2:]
    if boxes.shape[0] == 1 and boxes.device.type == "cpu":
        # One box on the host: slice it, so only the patch is read and written. On CUDA the box
        # would have to come back to the host (a sync), so CUDA takes the mask path below.
        top, bottom, left, right = boxes[0].tolist()
        out = images if inplace else images.clone()
        patch = out[:, :, top:bottom, left:right]
        if mirrored:
            mix_with_mirror_(patch, take_partner)
        else:
            patch.copy_(patch.index_select(0, partner))
        return out
    mask = box_mask(boxes, height, width)[:, None].expand(images.shape[0], 1, height, width)
    if mirrored:

        def select(own: Tensor, other: Tensor, index: Tensor, out: Tensor | None) -> Tensor:
            return torch.where(mask.index_select(0, index), other, own, out=out)

        return mix_with_mirror_(images if inplace else images.clone(), select)
    donors = images.index_select(0, partner)
    if inplace:
        return torch.where(mask, donors, images, out=images)
    return torch.where(mask, donors, images)

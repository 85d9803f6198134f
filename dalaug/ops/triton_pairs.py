"""The Triton kernel behind :mod:`dalaug.ops.fused`, in a module of its own so that importing
dalaug never imports Triton: it loads on a CUDA batch's first fused blend."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def lerp(start, end, weight):
    # torch.lerp (ATen Lerp.h): the branch keeps it exact at weight 0 and at weight 1.
    return tl.where(weight < 0.5, start + weight * (end - start), end - (end - start) * (1.0 - weight))


# Neither the batch (the last one of an epoch is short) nor the box (new every call) is specialised
# on: one compiled kernel per dtype and mode. The sample stride is, so whole-sample loads vectorise.
@triton.jit(do_not_specialize=["batch", "rows_per_channel", "cols", "start"])
def blend_pairs(
    src, dst, lam, weight, batch, stride_n, rows_per_channel, cols, start, stride_c, stride_h, stride_w,
    PER_SAMPLE: tl.constexpr, BOX: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Program (pair, row, column block): blend a stretch of sample ``pair`` and the same stretch
    of its mirror ``batch - 1 - pair`` into each other, at weight ``1 - lam[i]`` (PER_SAMPLE) or
    ``weight``. Without BOX a sample is one row of ``stride_n`` elements; with it a row holds ``cols``
    elements ``stride_w`` apart from ``start``, and rows go ``rows_per_channel`` to a channel."""
    pair = tl.program_id(0).to(tl.int64)
    col = tl.program_id(2).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    if BOX:
        inside = col < cols
        row = tl.program_id(1).to(tl.int64)
        channel = row // rows_per_channel
        offset = start + channel * stride_c + (row - channel * rows_per_channel) * stride_h + col * stride_w
    else:  # bounded by the sample stride, whose divisibility Triton knows: the loads vectorise
        inside = col < stride_n
        offset = col
    mirror = batch - 1 - pair
    at_own = pair * stride_n + offset
    at_mirror = mirror * stride_n + offset
    own = tl.load(src + at_own, mask=inside).to(tl.float32)
    other = tl.load(src + at_mirror, mask=inside).to(tl.float32)
    if PER_SAMPLE:
        weight_own = 1.0 - tl.load(lam + pair)
        weight_mirror = 1.0 - tl.load(lam + mirror)
    else:
        weight_own = weight
        weight_mirror = weight
    tl.store(dst + at_own, lerp(own, other, weight_own).to(dst.dtype.element_ty), mask=inside)
    tl.store(dst + at_mirror, lerp(other, own, weight_mirror).to(dst.dtype.element_ty), mask=inside)


@triton.jit(do_not_specialize=["batch"])
def exchange_boxes(
    src, dst, boxes, box_stride, batch, stride_n, channels, height, width,
    CHANNELS_LAST: tl.constexpr, INPLACE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Program (pair, block of a sample): inside its own box (``boxes``: int64 rows (top, bottom,
    left, right), ``box_stride`` apart, 0 for one box shared by the batch) each image of a mirrored
    pair takes the other's pixels; outside it keeps its own. A sample is ``stride_n`` elements, NCHW
    or (CHANNELS_LAST) NHWC inside. In place only the boxes are written."""
    pair = tl.program_id(0).to(tl.int64)
    offset = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offset < stride_n
    if CHANNELS_LAST:
        col = (offset // channels) % width
        row = offset // (channels * width)
    else:
        col = offset % width
        row = (offset // width) % height
    mirror = batch - 1 - pair
    own_box = boxes + pair * box_stride
    mirror_box = boxes + mirror * box_stride
    in_own = (row >= tl.load(own_box)) & (row < tl.load(own_box + 1))
    in_own = in_own & (col >= tl.load(own_box + 2)) & (col < tl.load(own_box + 3))
    in_mirror = (row >= tl.load(mirror_box)) & (row < tl.load(mirror_box + 1))
    in_mirror = in_mirror & (col >= tl.load(mirror_box + 2)) & (col < tl.load(mirror_box + 3))
    at_own = pair * stride_n + offset
    at_mirror = mirror * stride_n + offset
    if INPLACE:  # read what crosses over, write only the boxes
        own = tl.load(src + at_own, mask=inside & in_mirror)
        other = tl.load(src + at_mirror, mask=inside & in_own)
        tl.store(dst + at_own, other, mask=inside & in_own)
        tl.store(dst + at_mirror, own, mask=inside & in_mirror)
    else:
        own = tl.load(src + at_own, mask=inside)
        other = tl.load(src + at_mirror, mask=inside)
        tl.store(dst + at_own, tl.where(in_own, other, own), mask=inside)
        tl.store(dst + at_mirror, tl.where(in_mirror, own, other), mask=inside)

"""The Triton kernels behind :mod:`dalaug.ops.fused`, in a module of their own so that importing
dalaug never imports Triton: it loads on a CUDA batch's first fused operator.

The pair kernels give each program one mirrored pair (image ``pair`` and ``batch - 1 - pair``)
over a stretch of their memory: it loads both, and stores both results. ``sample`` is the number of
elements of one image (C*H*W; dense batches only, so image i starts at ``i * sample``).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def lerp(start, end, weight):
    # torch.lerp's formula (ATen Lerp.h), up to the rounding of fused multiply-adds; the branch
    # keeps it exact at weight 0.
    small = tl.abs(weight) < 0.5
    return tl.where(small, start + weight * (end - start), end - (end - start) * (1.0 - weight))


@triton.jit
def pixel_of(offset, channels, height, width, CHANNELS_LAST: tl.constexpr):
    """(row, column) of the elements at ``offset`` within an NCHW or (CHANNELS_LAST) NHWC image."""
    if CHANNELS_LAST:
        return offset // (channels * width), (offset // channels) % width
    return (offset // width) % height, offset % width


@triton.jit
def in_box(row, col, box):
    """Whether (row, col) lies inside the box at ``box``: int64 (top, bottom, left, right)."""
    rows = (row >= tl.load(box)) & (row < tl.load(box + 1))
    return rows & (col >= tl.load(box + 2)) & (col < tl.load(box + 3))


# The batch is not specialised on (an epoch's last batch is short): one compiled kernel per dtype
# and mode. The sample size is, so Triton knows its divisibility and the loads vectorise.
@triton.jit(do_not_specialize=["batch"])
def blend_pairs(src, dst, lam, weight, batch, sample, PER_SAMPLE: tl.constexpr, BLOCK: tl.constexpr):
    """Program (pair, block): Mixup's blend of both images of a pair, at weight ``1 - lam[i]``
    (PER_SAMPLE: float32 per image) or ``weight`` (the batch's)."""
    pair = tl.program_id(0).to(tl.int64)
    offset = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offset < sample
    mirror = batch - 1 - pair
    at_own = pair * sample + offset
    at_mirror = mirror * sample + offset
    own = tl.load(src + at_own, mask=inside).to(tl.float32)
    other = tl.load(src + at_mirror, mask=inside).to(tl.float32)
    if PER_SAMPLE:  # each weight rounded to the image dtype first, as the torch ops do
        weight_own = (1.0 - tl.load(lam + pair)).to(dst.dtype.element_ty).to(tl.float32)
        weight_mirror = (1.0 - tl.load(lam + mirror)).to(dst.dtype.element_ty).to(tl.float32)
    else:
        weight_own = weight
        weight_mirror = weight
    tl.store(dst + at_own, lerp(own, other, weight_own).to(dst.dtype.element_ty), mask=inside)
    tl.store(dst + at_mirror, lerp(other, own, weight_mirror).to(dst.dtype.element_ty), mask=inside)


# The box is new every call: not specialised on, so it never recompiles.
@triton.jit(do_not_specialize=["batch", "rows_per_channel", "cols", "start"])
def exchange_patch(
    images, batch, sample, rows_per_channel, cols, start, stride_c, stride_h, BLOCK: tl.constexpr,
):  # fmt: skip
    """Program (pair, row, block of the row): swap a row of the patch between the images of a pair,
    in place, bytes as they are. A row holds ``cols`` consecutive elements; rows start ``stride_h``
    apart from ``start``, ``rows_per_channel`` to a channel, channels ``stride_c`` apart."""
    pair = tl.program_id(0).to(tl.int64)
    row = tl.program_id(1).to(tl.int64)
    col = tl.program_id(2).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = col < cols
    channel = row // rows_per_channel
    offset = start + channel * stride_c + (row - channel * rows_per_channel) * stride_h + col
    at_own = pair * sample + offset
    at_mirror = (batch - 1 - pair) * sample + offset
    own = tl.load(images + at_own, mask=inside)
    other = tl.load(images + at_mirror, mask=inside)
    tl.store(images + at_own, other, mask=inside)
    tl.store(images + at_mirror, own, mask=inside)


@triton.jit(do_not_specialize=["batch"])
def exchange_boxes(
    src, dst, boxes, box_stride, batch, sample, channels, height, width,
    CHANNELS_LAST: tl.constexpr, INPLACE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Program (pair, block): inside its own box (``boxes``: int64 rows (top, bottom, left, right),
    ``box_stride`` apart, 0 for one box shared by the batch) each image of a pair takes the other's
    pixels; outside it keeps its own. Images are NCHW or (CHANNELS_LAST) NHWC inside. In place only
    the boxes are read across and written."""
    pair = tl.program_id(0).to(tl.int64)
    offset = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offset < sample
    row, col = pixel_of(offset, channels, height, width, CHANNELS_LAST)
    mirror = batch - 1 - pair
    in_own = in_box(row, col, boxes + pair * box_stride)
    in_mirror = in_box(row, col, boxes + mirror * box_stride)
    at_own = pair * sample + offset
    at_mirror = mirror * sample + offset
    if INPLACE:
        own = tl.load(src + at_own, mask=inside & in_mirror)
        other = tl.load(src + at_mirror, mask=inside & in_own)
        tl.store(dst + at_own, other, mask=inside & in_own)
        tl.store(dst + at_mirror, own, mask=inside & in_mirror)
    else:
        own = tl.load(src + at_own, mask=inside)
        other = tl.load(src + at_mirror, mask=inside)
        tl.store(dst + at_own, tl.where(in_own, other, own), mask=inside)
        tl.store(dst + at_mirror, tl.where(in_mirror, own, other), mask=inside)


@triton.jit(do_not_specialize=["batch"])
def mixed_one_hot(
    targets, partner, lam, out, weight, batch, classes, on, off,
    MIRRORED: tl.constexpr, PER_SAMPLE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Program (row, block of classes): row i of the soft targets, the smoothed one-hot rows of
    sample i and of its partner (``batch - 1 - i``, or ``partner[i]``) blended at weight
    ``1 - lam[i]`` (PER_SAMPLE) or ``weight``: ``on`` at the class, ``off`` elsewhere, NaN in
    the row of a class index outside [0, classes), as ``dalaug.ops.base.smoothed_one_hot``."""
    row = tl.program_id(0).to(tl.int64)
    col = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = col < classes
    if MIRRORED:
        other_row = batch - 1 - row
    else:
        other_row = tl.load(partner + row)
    own_class = tl.load(targets + row).to(tl.int64)
    other_class = tl.load(targets + other_row).to(tl.int64)
    own = tl.where(col == own_class, on, off)
    own = tl.where((own_class >= 0) & (own_class < classes), own, float("nan"))
    other = tl.where(col == other_class, on, off)
    other = tl.where((other_class >= 0) & (other_class < classes), other, float("nan"))
    if PER_SAMPLE:
        row_weight = 1.0 - tl.load(lam + row)
    else:
        row_weight = weight
    tl.store(out + row * classes + col, lerp(own, other, row_weight), mask=inside)


@triton.jit(do_not_specialize=["holes"])
def fill_holes(
    src, dst, noise, boxes, holes, fill, sample, channels, height, width,
    NOISE: tl.constexpr, CHANNELS_LAST: tl.constexpr, INPLACE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Program (image, block): pixels inside any of the image's ``holes`` boxes (``boxes``: int64
    (N, holes, 4) rows (top, bottom, left, right)) become ``fill``, or (NOISE) the same pixel of
    ``noise`` (a contiguous NCHW batch of the images' shape); the rest stay. Not a pair kernel:
    Cutout and RandomErasing erase each image on its own. In place only the holes are written (and
    the noise read)."""
    image = tl.program_id(0).to(tl.int64)
    offset = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offset < sample
    row, col = pixel_of(offset, channels, height, width, CHANNELS_LAST)
    erased = offset < 0  # all False, of the block's shape
    for hole in range(holes):
        erased = erased | in_box(row, col, boxes + (image * holes + hole) * 4)
    at = image * sample + offset
    if NOISE:  # the noise is NCHW whatever the images' layout (its values do not depend on it)
        if CHANNELS_LAST:
            noise_at = image * sample + (offset % channels) * (height * width) + row * width + col
        else:
            noise_at = at
        value = tl.load(noise + noise_at, mask=inside & erased)
    else:
        value = tl.full([BLOCK], fill, tl.float32).to(dst.dtype.element_ty)  # exact: rounded on the host
    if INPLACE:
        tl.store(dst + at, value, mask=inside & erased)
    else:
        tl.store(dst + at, tl.where(erased, value, tl.load(src + at, mask=inside)), mask=inside)

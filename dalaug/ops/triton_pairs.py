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

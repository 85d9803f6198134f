"""Blend each mirrored pair of samples in one pass: read images i and N - 1 - i once, write both.

The mirror pairing (timm's ``flip``) makes the mix an exchange within pairs. With torch ops an
in-place Mixup takes a flipped copy of the batch and then blends into it: five batch-sized memory
passes (read and write the copy; read two batches and write one) where a pair needs one read and
one write, so it can move at most 40% of a copy's bandwidth. A CUDA batch of float32, float16 or
bfloat16 is blended here by one Triton kernel (Triton comes with torch's CUDA builds): each program
loads a stretch of sample i and the same stretch of its mirror, and stores both blends. A box
restricts the blend to a patch, and weight 1 inside it exchanges the patches: CutMix with one box
for the batch.

The arithmetic is ``torch.lerp``'s (ATen's ``Lerp.h``), in float32 as torch's opmath: exact at
weight 0 (a sample that is not mixed keeps its pixels bit for bit) and at weight 1 (a patch comes
over unchanged). Anywhere else (the CPU, float64, no Triton) :func:`blend_mirrored` returns None and
the operator does the same with torch ops. If a launch fails (an unsupported GPU or Triton version)
the reason is logged once and the torch ops take over for the rest of the process.

Tested on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``, tests/ops/test_ops_fused.py).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

# One box for a whole batch, on the host: (top, bottom, left, right), bottom and right exclusive.
HostBox = tuple[int, int, int, int]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_FLAT_BLOCK = 1024  # elements per program over a whole dense sample
_ROW_BLOCK = 128  # elements per program along a box's rows (a row of a 224 px crop: two programs)
_MAX_GRID_YZ = 65535  # CUDA's limit on the second and third grid dimensions


def blend_mirrored(
    images: Tensor, lam: float | Tensor, *, inplace: bool, box: HostBox | None = None
) -> Tensor | None:
    """``lerp(x_i, x_{N-1-i}, 1 - λ_i)`` for every sample i, in one kernel on CUDA.

    Args:
        images: (N, C, H, W) float32, float16 or bfloat16 on a CUDA device, contiguous or
            channels_last.
        lam: each image's weight of its own pixels: a float for the batch, or float32 (N,) on the
            images' device.
        inplace: write into ``images``; otherwise into a new batch in the same memory format (with
            a box, a copy of ``images`` whose patch is blended).
        box: blend only inside this non-empty patch (host ints); None blends the whole image.

    Returns:
        The blended batch, or None where the kernel does not run (the caller then uses torch ops).
    """
    if images.device.type != _device_type() or images.dtype not in _DTYPES:
        return None
    if images.ndim != 4 or images.shape[0] == 0 or not _dense(images):
        return None  # a view with holes or overlaps (an expanded batch) is left to torch's checks
    if isinstance(lam, Tensor) and (
        lam.shape != images.shape[:1] or lam.dtype != torch.float32 or lam.device != images.device
    ):
        return None
    grid, region, block = _region(images, box)  # a new batch gets the same strides
    kernel = _kernel()
    if kernel is None or max(grid[1:]) > _MAX_GRID_YZ:
        return None
    if box is None:
        src, dst = images, images if inplace else torch.empty_like(images)
    else:  # out of place, the patch is exchanged within a copy
        src = dst = images if inplace else images.clone()
    per_sample = isinstance(lam, Tensor)
    try:
        with torch.cuda.device(src.device) if src.is_cuda else contextlib.nullcontext():
            kernel[grid](
                src, dst, lam if per_sample else src, 0.0 if per_sample else 1.0 - float(lam),
                src.shape[0], src.stride(0), *region, PER_SAMPLE=per_sample, BOX=box is not None,
                BLOCK=block,
            )  # fmt: skip
    except Exception as error:  # a compile or launch failure: torch ops take over for good
        log.warning("the fused mirrored-pair kernel failed; torch ops take over: %s", error)
        _disabled.append(error)
        _kernel.cache_clear()
        return None
    return dst


_disabled: list[BaseException] = []  # the failure that turned the kernel off, if one did


def _region(images: Tensor, box: HostBox | None) -> tuple[tuple[int, int, int], tuple[int, ...], int]:
    """The launch grid (pairs, rows, column blocks), the region's addressing within a sample (rows
    per channel, columns, start, channel / row / column strides) and the columns per program. A
    whole sample is one row of C*H*W elements, whatever its layout inside; a box is walked through
    the strides."""
    batch, channels, height, width = images.shape
    if box is None:
        rows, region, block = 1, (1, channels * height * width, 0, 0, 0, 1), _FLAT_BLOCK
    else:
        top, bottom, left, right = box
        _, stride_c, stride_h, stride_w = images.stride()
        start = top * stride_h + left * stride_w
        rows, block = channels * (bottom - top), _ROW_BLOCK
        region = (bottom - top, right - left, start, stride_c, stride_h, stride_w)
    return ((batch + 1) // 2, rows, -(-region[1] // block)), region, block


def _dense(images: Tensor) -> bool:
    """Every sample one stretch of C*H*W elements, N of them back to back (empty_like and clone
    keep the strides)."""
    return images.is_contiguous() or images.is_contiguous(memory_format=torch.channels_last)


@functools.cache
def _device_type() -> str:
    """Where the kernel runs: on CUDA batches, or on CPU ones under Triton's interpreter
    (``TRITON_INTERPRET=1``), which is how the tests run it on a machine without a GPU."""
    return "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"


@functools.cache
def _kernel() -> Any:
    """The Triton kernel, compiled on its first launch; None where Triton is missing or failed."""
    if _disabled:
        return None
    try:
        from dalaug.ops.triton_pairs import blend_pairs
    except ImportError:
        return None
    return blend_pairs

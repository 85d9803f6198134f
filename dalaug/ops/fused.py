"""Mix each mirrored pair of samples in one pass: read images i and N - 1 - i once, write both.

The mirror pairing (timm's ``flip``) makes a mix an exchange within pairs. With torch ops an
in-place Mixup takes a flipped copy of the batch and then blends into it: five batch-sized memory
passes (read and write the copy; read two batches and write one) where a pair needs one read and
one write, so it can move at most 40% of a copy's bandwidth; per-sample CutMix adds a mask built in
a dozen small kernels. A CUDA batch of float32, float16 or bfloat16 is mixed here by one Triton
kernel (Triton comes with torch's CUDA builds), each program loading a stretch of sample i and the
same stretch of its mirror and storing both results:

- :func:`blend_mirrored`: Mixup's blend, over whole images or inside one box for the batch, where
  weight 1 exchanges the pairs' patches (CutMix with one box);
- :func:`exchange_mirrored_boxes`: CutMix (and SaliencyMix) with a box per sample; in place only
  the boxes are read across and written.

The blend is ``torch.lerp``'s arithmetic (ATen's ``Lerp.h``) in float32, torch's opmath: exact at
weight 0 (a sample that is not mixed keeps its pixels bit for bit) and at weight 1 (a patch comes
over unchanged). Anywhere else (the CPU, float64, a batch with holes, no Triton) these functions
return None and the operator does the same with torch ops. If a launch fails (an unsupported GPU or
Triton version) the reason is logged once and torch ops take over for the rest of the process.

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
        The mixed batch, or None where the kernel does not run (the caller then uses torch ops).
    """
    per_sample = isinstance(lam, Tensor)
    if not _takes(images) or per_sample and not _per_sample(lam, images, torch.float32, (images.shape[0],)):
        return None
    grid, region, block = _region(images, box)  # a new batch gets the same strides
    if max(grid[1:]) > _MAX_GRID_YZ:
        return None
    if box is None:
        src, dst = images, images if inplace else torch.empty_like(images)
    else:  # out of place, the patch is exchanged within a copy
        src = dst = images if inplace else images.clone()
    weights = dict(lam=lam, weight=0.0) if per_sample else dict(lam=src, weight=1.0 - float(lam))
    launched = _launch(
        "blend_pairs", grid, src, dst=dst, **weights, batch=src.shape[0], stride_n=src.stride(0),
        **region, PER_SAMPLE=per_sample, BOX=box is not None, BLOCK=block,
    )  # fmt: skip
    return dst if launched else None


def exchange_mirrored_boxes(images: Tensor, boxes: Tensor, *, inplace: bool) -> Tensor | None:
    """Inside its own box each image of a mirrored pair takes the other's pixels: CutMix's paste
    with a box per sample, in one kernel on CUDA.

    Args:
        images: as for :func:`blend_mirrored`.
        boxes: int64 (N, 4) or (1, 4) rows (top, bottom, left, right) on the images' device,
            bottom/right exclusive, clipped to the image; empty where a sample is not mixed.
        inplace: write into ``images``; otherwise into a new batch in the same memory format.

    Returns:
        The mixed batch, or None where the kernel does not run (the caller then uses torch ops).
    """
    batch, channels, height, width = images.shape if images.ndim == 4 else (0, 0, 0, 0)
    if not _takes(images) or not (
        _per_sample(boxes, images, torch.int64, (batch, 4)) or _per_sample(boxes, images, torch.int64, (1, 4))
    ):
        return None
    blocks = -(-images.stride(0) // _FLAT_BLOCK)
    if blocks > _MAX_GRID_YZ:
        return None
    boxes = boxes.contiguous()
    dst = images if inplace else torch.empty_like(images)
    launched = _launch(
        "exchange_boxes", ((batch + 1) // 2, blocks), images, dst=dst, boxes=boxes,
        box_stride=4 if boxes.shape[0] == batch else 0, batch=batch, stride_n=images.stride(0),
        channels=channels, height=height, width=width,
        CHANNELS_LAST=not images.is_contiguous(), INPLACE=inplace, BLOCK=_FLAT_BLOCK,
    )  # fmt: skip
    return dst if launched else None


def _takes(images: Tensor) -> bool:
    """Whether the kernels can take this batch: 4-D, one of their dtypes, on their device, and
    dense (every sample one stretch of C*H*W elements, NCHW or NHWC inside, N of them back to
    back; empty_like and clone keep that). A view with holes or overlaps (an expanded batch) is
    left to torch ops and their checks, and so is a batch autograd tracks (the kernels have no
    backward)."""
    return (
        images.device.type == _device_type()
        and not (images.requires_grad and torch.is_grad_enabled())
        and images.dtype in _DTYPES
        and images.ndim == 4
        and images.shape[0] > 0
        and (images.is_contiguous() or images.is_contiguous(memory_format=torch.channels_last))
    )


def _per_sample(values: Tensor, images: Tensor, dtype: torch.dtype, shape: tuple[int, ...]) -> bool:
    return values.shape == shape and values.dtype == dtype and values.device == images.device


def _launch(name: str, grid: tuple[int, ...], src: Tensor, **arguments: Any) -> bool:
    """Launch kernel ``name`` of :mod:`dalaug.ops.triton_pairs` on ``src``'s device; False where
    Triton is missing or has failed (logged once; torch ops take over for good)."""
    kernels = _kernels()
    if kernels is None:
        return False
    try:
        with torch.cuda.device(src.device) if src.is_cuda else contextlib.nullcontext():
            getattr(kernels, name)[grid](src, **arguments)
    except Exception as error:  # a compile or launch failure
        log.warning("the fused mirrored-pair kernels failed; torch ops take over: %s", error)
        _disabled.append(error)
        _kernels.cache_clear()
        return False
    return True


_disabled: list[BaseException] = []  # the failure that turned the kernels off, if one did


def _region(images: Tensor, box: HostBox | None) -> tuple[tuple[int, int, int], dict[str, int], int]:
    """The launch grid (pairs, rows, column blocks), the region's addressing within a sample and
    the columns per program. A whole sample is one row of C*H*W elements, whatever its layout
    inside; a box is walked through the strides, its rows going ``bottom - top`` to a channel."""
    batch, channels, height, width = images.shape
    if box is None:
        rows, block = 1, _FLAT_BLOCK
        region = dict(rows_per_channel=1, cols=channels * height * width, start=0, stride_c=0,
                      stride_h=0, stride_w=1)  # fmt: skip
    else:
        top, bottom, left, right = box
        _, stride_c, stride_h, stride_w = images.stride()
        rows, block = channels * (bottom - top), _ROW_BLOCK
        start = top * stride_h + left * stride_w
        region = dict(rows_per_channel=bottom - top, cols=right - left, start=start, stride_c=stride_c,
                      stride_h=stride_h, stride_w=stride_w)  # fmt: skip
    return ((batch + 1) // 2, rows, -(-region["cols"] // block)), region, block


@functools.cache
def _device_type() -> str:
    """Where the kernels run: on CUDA batches, or on CPU ones under Triton's interpreter
    (``TRITON_INTERPRET=1``), which is how the tests run them on a machine without a GPU."""
    return "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"


@functools.cache
def _kernels() -> Any:
    """The kernels' module (each compiled on its first launch); None where Triton is missing or
    has failed. Imported here, not above: importing dalaug never imports Triton."""
    if _disabled:
        return None
    try:
        from dalaug.ops import triton_pairs
    except ImportError:
        return None
    return triton_pairs

"""Batch operators in one pass on CUDA: each mirrored pair (images i and N - 1 - i) read once.

The mirror pairing (timm's ``flip``) makes a mix an exchange within pairs. With torch ops an
in-place Mixup takes a flipped copy of the batch and then blends into it: five batch-sized memory
passes (read and write the copy; read two batches and write one) where a pair needs one read and
one write, so it can move at most 40% of a copy's bandwidth; per-sample CutMix adds a mask built in
a dozen small kernels, and the soft targets six more. A dense CUDA batch of float32, float16 or
bfloat16 is handled here by Triton kernels (Triton comes with torch's CUDA builds; the kernels are
in :mod:`dalaug.ops.triton_kernels`), one launch each:

- :func:`blend_mirrored`: Mixup's blend, in ``torch.lerp``'s arithmetic in float32 (torch's opmath):
  exact at weight 0, so a sample that is not mixed keeps its pixels bit for bit;
- :func:`exchange_mirrored_boxes`: CutMix's (and SaliencyMix's) paste, exact, for one box for the
  batch (only the patches move) or a box per sample (in place only the boxes are read across and
  written);
- :func:`fill_holes`: Cutout's and RandomErasing's erase (not a pair mix, the same machinery),
  writing only the holes in place;
- :func:`mix_one_hot`: Mixup's and CutMix's soft targets from class indices, smoothed and mixed
  with the partners' (mirrored or any pairing) in one launch where the torch ops take six.

Anywhere else (the CPU, float64, a strided view, a batch autograd tracks, no Triton) these return
None and the operator does the same with torch ops. If Triton fails (an unsupported GPU or Triton
version) the reason is logged once and torch ops take over for the rest of the process.

Tested on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``, tests/ops/test_ops_fused.py).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
import os
from typing import Any

import torch
from torch import Tensor

from dalaug.ops.boxes import HostBox

log = logging.getLogger(__name__)

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_FLAT_BLOCK = 1024  # elements per program over a whole image
_ROW_BLOCK = 128  # elements per program along a patch's rows
_MAX_GRID_YZ = 65535  # CUDA's limit on the second and third grid dimensions


def blend_mirrored(images: Tensor, lam: float | Tensor, *, inplace: bool) -> Tensor | None:
    """``lerp(x_i, x_{N-1-i}, 1 - λ_i)`` for every image i, in one kernel on CUDA.

    Args:
        images: (N, C, H, W) float32, float16 or bfloat16 on a CUDA device, contiguous or
            channels_last.
        lam: each image's weight of its own pixels: a float for the batch, or float32 (N,) on the
            images' device.
        inplace: write into ``images``; otherwise into a new batch in the same memory format.

    Returns:
        The mixed batch, or None where the kernel does not run (the caller then uses torch ops).
    """
    per_sample = isinstance(lam, Tensor)
    if not _takes(images, inplace):
        return None
    if per_sample and not _matches(lam, images, torch.float32, images.shape[:1]):
        return None
    sample = images[0].numel()  # not stride(0): with one image torch calls any batch stride dense
    blocks = _blocks(sample)
    if blocks is None:
        return None
    dst = images if inplace else torch.empty_like(images)
    # The kernel takes the batch's λ (PER_SAMPLE) or one weight; the unused pointer is any tensor.
    weights = dict(lam=lam, weight=0.0) if per_sample else dict(lam=images, weight=1.0 - float(lam))
    launched = _launch(
        "blend_pairs", ((images.shape[0] + 1) // 2, blocks), dst, src=images, dst=dst, **weights,
        batch=images.shape[0], sample=sample, PER_SAMPLE=per_sample, BLOCK=_FLAT_BLOCK,
    )  # fmt: skip
    return dst if launched else None


def exchange_mirrored_boxes(images: Tensor, boxes: HostBox | Tensor, *, inplace: bool) -> Tensor | None:
    """Inside its own box each image of a mirrored pair takes the other's pixels, in one kernel
    on CUDA: CutMix's paste.

    Args:
        images: as for :func:`blend_mirrored`.
        boxes: (top, bottom, left, right), bottom/right exclusive, within the image: one box for
            the batch as host ints, or int64 (N, 4) or (1, 4) rows on the images' device (an empty
            row where a sample is not mixed).
        inplace: write into ``images``; otherwise into a new batch in the same memory format.

    Returns:
        The mixed batch (``images`` itself for an empty host box), or None where the kernel does
        not run (the caller then uses torch ops).
    """
    if not _takes(images, inplace):
        return None
    if isinstance(boxes, Tensor):
        return _exchange_per_sample(images, boxes, inplace)
    try:  # Python ints for Triton (a box of numpy ints slices fine in torch)
        boxes = tuple(operator.index(edge) for edge in boxes)
    except TypeError:
        return None
    top, bottom, left, right = boxes
    height, width = images.shape[-2:]
    if not (0 <= top <= bottom <= height and 0 <= left <= right <= width):
        return None  # torch's slicing clips such a box: leave it to the torch ops
    if top == bottom or left == right:
        return images
    grid, region = _patch(images, boxes)
    if grid is None:
        return None
    images = images if inplace else images.clone()
    launched = _launch("exchange_patch", grid, images, images=images, batch=images.shape[0], **region,
                       BLOCK=_ROW_BLOCK)  # fmt: skip
    return images if launched else None


def _exchange_per_sample(images: Tensor, boxes: Tensor, inplace: bool) -> Tensor | None:
    batch, channels, height, width = images.shape
    if not any(_matches(boxes, images, torch.int64, (rows, 4)) for rows in (batch, 1)):
        return None
    sample = images[0].numel()
    blocks = _blocks(sample)
    if blocks is None:
        return None
    dst = images if inplace else torch.empty_like(images)
    launched = _launch(
        "exchange_boxes", ((batch + 1) // 2, blocks), dst, src=images, dst=dst, boxes=boxes,
        box_stride=4 if boxes.shape[0] == batch else 0, batch=batch, sample=sample, channels=channels,
        height=height, width=width,
        CHANNELS_LAST=not images.is_contiguous(), INPLACE=inplace, BLOCK=_FLAT_BLOCK,
    )  # fmt: skip
    return dst if launched else None


def mix_one_hot(
    targets: Tensor, num_classes: int, smoothing: float, lam: float | Tensor, partner: Tensor, mirrored: bool
) -> Tensor | None:
    """Soft targets (N, C) float32 of class indices mixed with their partners', in one kernel on
    CUDA: ``lerp(one_hot(t_i), one_hot(t_partner(i)), 1 - λ_i)`` with label smoothing, what
    ``mix_soft_targets(smoothed_one_hot(...))`` makes in six launches (a row NaN where an index
    lies outside [0, C), as there).

    Args:
        targets: int64 or int32 class indices (N,) on a CUDA device.
        num_classes: C.
        smoothing: label smoothing s in [0, 1).
        lam: each sample's weight of its own label: a float for the batch, or float32 (N,) on the
            targets' device.
        partner: int64 (N,) on the targets' device; not read when ``mirrored``.
        mirrored: the partner of i is N - 1 - i.

    Returns:
        The soft targets, or None where the kernel does not run (the caller then uses torch ops).
    """
    batch = targets.shape[0] if targets.ndim == 1 else 0
    per_sample = isinstance(lam, Tensor)
    if (
        batch == 0
        or targets.device.type != _device_type()
        or targets.dtype not in (torch.int64, torch.int32)
        or not targets.is_contiguous()
        or (per_sample and not _matches(lam, targets, torch.float32, (batch,)))
        or (not mirrored and not _matches(partner, targets, torch.int64, (batch,)))
    ):
        return None
    blocks = _blocks(num_classes)
    if blocks is None:
        return None
    out = torch.empty(batch, num_classes, dtype=torch.float32, device=targets.device)
    off = smoothing / num_classes
    launched = _launch(
        "mixed_one_hot", (batch, blocks), out, targets=targets, partner=targets if mirrored else partner,
        lam=lam if per_sample else out, out=out, weight=0.0 if per_sample else 1.0 - float(lam),
        batch=batch, classes=num_classes, on=1.0 - smoothing + off, off=off,
        MIRRORED=mirrored, PER_SAMPLE=per_sample, BLOCK=_FLAT_BLOCK,
    )  # fmt: skip
    return out if launched else None


def fill_holes(images: Tensor, holes: Tensor, fill: float | Tensor, *, inplace: bool) -> Tensor | None:
    """Cutout's and RandomErasing's erase in one kernel on CUDA: pixels inside any of an image's
    holes take ``fill``; in place only the holes are written.

    Args:
        images: as for :func:`blend_mirrored`.
        holes: int64 (N, K, 4) rows (top, bottom, left, right) on the images' device, bottom/right
            exclusive, within the image; empty where an image keeps its pixels.
        fill: a number, or a contiguous NCHW tensor of the images' shape and dtype to take the
            hole pixels from.
        inplace: write into ``images``; otherwise into a new batch in the same memory format.

    Returns:
        The erased batch, or None where the kernel does not run (the caller then uses torch ops).
    """
    if not _takes(images, inplace) or holes.ndim != 3:
        return None
    batch, channels, height, width = images.shape
    noise = isinstance(fill, Tensor)
    if not _matches(holes, images, torch.int64, (batch, holes.shape[1], 4)) or holes.shape[1] == 0:
        return None
    if noise and not (_matches(fill, images, images.dtype, images.shape)):
        return None
    sample = images[0].numel()
    blocks = _blocks(sample)
    if blocks is None:
        return None
    dst = images if inplace else torch.empty_like(images)
    launched = _launch(
        "fill_holes", (batch, blocks), dst, src=images, dst=dst, noise=fill if noise else images, boxes=holes,
        holes=holes.shape[1], fill=0.0 if noise else _in_dtype(float(fill), images.dtype), sample=sample,
        channels=channels, height=height, width=width, NOISE=noise,
        CHANNELS_LAST=not images.is_contiguous(), INPLACE=inplace, BLOCK=_FLAT_BLOCK,
    )  # fmt: skip
    return dst if launched else None


@functools.lru_cache(maxsize=64)
def _in_dtype(value: float, dtype: torch.dtype) -> float:
    """``value`` rounded once to ``dtype``, as ``masked_fill`` stores it (the kernel takes float32,
    and rounding to float32 first could round a second time)."""
    return torch.tensor(value, dtype=torch.float64).to(dtype).item()


def _patch(images: Tensor, box: HostBox) -> tuple[tuple[int, int, int] | None, dict[str, int]]:
    """The grid (pairs, rows, column blocks; None past CUDA's limits) and addressing of one patch
    within an image: rows of ``cols`` consecutive elements, ``stride_h`` apart from ``start``,
    ``rows_per_channel`` rows to a channel. In NHWC a patch row holds all channels in one run; in
    NCHW each channel has its rows."""
    batch, channels, height, width = images.shape
    top, bottom, left, right = box
    if images.is_contiguous():
        rows, region = channels * (bottom - top), dict(
            rows_per_channel=bottom - top, cols=right - left, start=top * width + left,
            stride_c=height * width, stride_h=width,
        )  # fmt: skip
    else:  # channels_last
        rows, region = bottom - top, dict(
            rows_per_channel=bottom - top, cols=(right - left) * channels,
            start=(top * width + left) * channels, stride_c=0, stride_h=width * channels,
        )  # fmt: skip
    region["sample"] = channels * height * width
    blocks = _blocks(region["cols"], _ROW_BLOCK)
    if blocks is None or rows > _MAX_GRID_YZ:
        return None, region
    return ((batch + 1) // 2, rows, blocks), region


def _blocks(elements: int, block: int = _FLAT_BLOCK) -> int | None:
    """Programs of ``block`` elements that cover ``elements``; None past CUDA's limit on the grid's
    second and third dimensions (the torch ops then do the work)."""
    blocks = -(-elements // block)
    return blocks if blocks <= _MAX_GRID_YZ else None


def _takes(images: Tensor, inplace: bool) -> bool:
    """Whether the kernels can take this batch: 4-D and not empty, one of their dtypes, on their
    device, and dense (image i is the C*H*W elements from ``i * C*H*W``, NCHW or NHWC inside;
    empty_like and clone keep that). A view with holes or overlaps (an expanded batch) is left to
    torch ops and their checks, and so is a batch autograd tracks (the kernels have no backward)
    and an inference tensor written outside inference mode (torch refuses that).
    """
    return (
        images.device.type == _device_type()
        and images.dtype in _DTYPES
        and images.ndim == 4
        and images.numel() > 0
        and not (images.requires_grad and torch.is_grad_enabled())
        and not (inplace and images.is_inference() and not torch.is_inference_mode_enabled())
        and (images.is_contiguous() or images.is_contiguous(memory_format=torch.channels_last))
    )


def _matches(values: Tensor, images: Tensor, dtype: torch.dtype, shape: tuple[int, ...]) -> bool:
    """Per-image parameters the kernels can read: this shape and dtype, dense, on the images'
    device, and not tracked by autograd."""
    return (
        values.shape == shape
        and values.dtype == dtype
        and values.device == images.device
        and values.is_contiguous()
        and not (values.requires_grad and torch.is_grad_enabled())
    )


def _launch(name: str, grid: tuple[int, ...], written: Tensor, **arguments: Any) -> bool:
    """Launch kernel ``name`` with ``arguments`` on the device of ``written``, the tensor it writes;
    False where Triton is missing or failed."""
    kernels = _kernels()
    if kernels is None:
        return False
    try:
        with torch.cuda.device(written.device) if written.is_cuda else contextlib.nullcontext():
            getattr(kernels, name)[grid](**arguments)
    except Exception as error:  # a compile or launch failure: torch ops from now on
        _turn_off(error)
        return False
    # Writes torch does not see: bump the version counter, as torch's in-place ops do, so that
    # autograd refuses a backward through a tensor it saved before the write.
    torch.autograd.graph.increment_version(written)
    return True


@functools.cache
def _device_type() -> str:
    """Where the kernels run: on CUDA batches, or on CPU ones under Triton's interpreter
    (``TRITON_INTERPRET=1``), which is how the tests run them on a machine without a GPU."""
    return "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"


_failure: list[BaseException] = []  # why the kernels are off, once they are


@functools.cache
def _kernels() -> Any:
    """The kernels' module (each kernel compiled on its first launch); None where Triton is
    missing or has failed. Imported here, not above: importing dalaug never imports Triton."""
    if _failure:
        return None
    try:
        from dalaug.ops import triton_kernels
    except ImportError:
        return None  # no Triton (a CPU-only or non-Linux torch): torch ops, nothing to report
    except Exception as error:  # a Triton that is there but broken
        _turn_off(error)
        return None
    return triton_kernels


def _turn_off(error: BaseException) -> None:
    log.warning("dalaug's fused kernels failed; torch ops take over: %s", error)
    _failure.append(error)
    _kernels.cache_clear()

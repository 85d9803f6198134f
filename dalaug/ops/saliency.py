"""Spectral-residual saliency and SaliencyMix, batched on the batch's device.

- Saliency: Hou & Zhang, "Saliency Detection: A Spectral Residual Approach", CVPR 2007, computed as
  OpenCV's ``StaticSaliencySpectralResidual`` does (gray, bilinear resize to 64 x 64, log amplitude
  minus its 3 x 3 mean, phase kept, inverse FFT, magnitude, 5 x 5 Gaussian blur with sigma 8, then
  squared and divided by its maximum).
- SaliencyMix: Uddin, Monira, Shin, Chung, Bae, "SaliencyMix: A Saliency Guided Data Augmentation
  Strategy for Better Regularization", ICLR 2021. CutMix whose box is centred on the most salient
  pixel of the image the patch comes from.

The official SaliencyMix code runs OpenCV's fine-grained saliency on one image of the batch and uses
one box for the whole batch; ``SaliencyMix(per_sample=False)`` reproduces that recipe with the
spectral-residual map, and the default computes a map and a box for every partner image at once.

The saliency maps live on the device and so do their peaks: getting a peak to the host would wait
for the device. So λ, the box sides and the partners are drawn on the host as in CutMix, while
the boxes are built around the device-side peaks as device tensors, λ is recomputed from their
clipped area on the device, and the patch is pasted through a broadcast mask and one ``where``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dalaug.ops.base import check_count, check_images
from dalaug.ops.boxes import boxes_around, kept_fraction
from dalaug.ops.mixing import BoxParams, CutMix
from dalaug.ops.pairing import Partner, partner_tensor
from dalaug.ops.sampling import to_device

SALIENCY_SIZE = 64


def spectral_residual_saliency(images: Tensor, size: int = SALIENCY_SIZE) -> Tensor:
    """Spectral-residual saliency maps of a batch, at ``size`` x ``size`` resolution.

    The image is resized before it is turned gray (both are linear, so the order does not change
    the result), with two small matrix products, so no full-size temporary is made. The small
    gray image is shifted so that its minimum is 0: that changes only the DC term of the spectrum,
    and makes the map the same for a photo and for its normalised version (whose mean is near 0,
    where the log amplitude at DC would be meaningless).

    Args:
        images: float (N, 3, H, W) RGB or (N, 1, H, W) gray, any value range.
        size: side of the square map; OpenCV uses 64.

    Returns:
        float32 (N, size, size), each map scaled to a maximum of 1. Resize it bilinearly to
        (H, W) to get OpenCV's full-resolution map.

    Example:
        >>> import torch
        >>> spectral_residual_saliency(torch.rand(2, 3, 96, 128)).shape
        torch.Size([2, 64, 64])
    """
    check_images(images)
    size = check_count("size", size, minimum=3)
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {images.shape[1]}")
    height, width = images.shape[-2:]
    rows = bilinear_matrix(height, size, images.device, images.dtype)
    cols = bilinear_matrix(width, size, images.device, images.dtype)
    # Columns first: (N, C, H, W) @ (W, size) is the only product that reads the full batch.
    small = (rows @ (images @ cols.T)).float()
    if images.shape[1] == 3:  # ITU-R 601 luma, as OpenCV's and kornia's RGB-to-gray
        small = (small * _luma(small.device)).sum(1, keepdim=True)
    gray = small
    gray = gray - gray.amin(dim=(-2, -1), keepdim=True)
    spectrum = torch.fft.fft2(gray)
    tiny = torch.finfo(torch.float32).tiny
    log_amplitude = spectrum.abs().clamp_min(tiny).log()
    # exp(residual + i·phase) = spectrum / |spectrum| · exp(log A - mean3x3(log A))
    #                         = spectrum · exp(-mean3x3(log A)).
    mean = F.avg_pool2d(F.pad(log_amplitude, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    residual = spectrum * torch.exp(-mean)
    magnitude = torch.fft.ifft2(residual).abs()
    # OpenCV blurs the magnitude and squares afterwards (the paper squares first); follow OpenCV.
    saliency = gaussian_blur(magnitude, 5, 8.0).square()
    saliency = saliency / saliency.amax(dim=(-2, -1), keepdim=True).clamp_min(tiny)
    return saliency[:, 0]


def gaussian_blur(images: Tensor, size: int, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, 1, H, W) with reflected borders.

    The kernel is built on the images' device from ``arange``: a kernel made on the host would be
    copied from pageable memory, which waits for the device (kornia's blur does that).
    """
    kernel = _gaussian_kernel(size, sigma, images.device, images.dtype)
    half = size // 2
    padded = F.pad(images, (half, half, half, half), mode="reflect")
    return F.conv2d(F.conv2d(padded, kernel.view(1, 1, size, 1)), kernel.view(1, 1, 1, size))


@functools.lru_cache(maxsize=64)
@torch.inference_mode(False)  # a cached tensor outlives the call: never an inference tensor
def _luma(device: torch.device) -> Tensor:
    """ITU-R 601 weights of R, G and B, (3, 1, 1) float32, made once per device (through pinned
    memory: a copy from pageable memory would wait for the device)."""
    return to_device([np.array([0.299, 0.587, 0.114], np.float32)], device)[0].view(3, 1, 1)


@functools.lru_cache(maxsize=64)
@torch.inference_mode(False)  # a cached tensor outlives the call: never an inference tensor
def _gaussian_kernel(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The normalised 1-D Gaussian, made once per device and dtype (eight launches fewer a call)."""
    offsets = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    return kernel / kernel.sum()


@functools.lru_cache(maxsize=64)
@torch.inference_mode(False)  # a cached tensor outlives the call: never an inference tensor
def bilinear_matrix(size_in: int, size_out: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(size_out, size_in) matrix of bilinear resampling without antialiasing.

    Half-pixel centres, borders clamped: what ``F.interpolate(mode="bilinear",
    align_corners=False)`` and OpenCV's ``INTER_LINEAR`` compute, as a matrix, because on the CPU
    ``F.interpolate`` makes a full-size copy of the batch first. Made once per shape, device and
    dtype (a batch's image size rarely changes: some twenty launches fewer a call); the tensor is
    shared, so do not modify it.
    """
    scale = size_in / size_out
    source = ((torch.arange(size_out, device=device) + 0.5) * scale - 0.5).clamp_min(0.0)
    low = source.floor().long().clamp_max(size_in - 1)
    high = (low + 1).clamp_max(size_in - 1)
    frac = (source - low).clamp(0.0, 1.0)
    inputs = torch.arange(size_in, device=device)
    matrix = (1 - frac)[:, None] * (inputs == low[:, None]) + frac[:, None] * (inputs == high[:, None])
    return matrix.to(dtype)


def saliency_peaks(images: Tensor, size: int = SALIENCY_SIZE) -> Tensor:
    """Full-resolution pixel (row, col) of each image's saliency maximum, int64 (N, 2).

    The maximum is taken on the ``size`` x ``size`` map and its cell centre mapped back to the
    image, so the peak is found without resizing the map.

    Example:
        >>> import torch
        >>> saliency_peaks(torch.rand(2, 3, 96, 128)).shape
        torch.Size([2, 2])
    """
    saliency = spectral_residual_saliency(images, size)
    height, width = images.shape[-2:]
    flat = saliency.flatten(1).argmax(dim=1)
    row, col = flat // size, flat % size
    # Centre of cell k of `size` cells over n pixels: floor((k + 1/2) · n / size), in integers.
    return torch.stack([(2 * row + 1) * height // (2 * size), (2 * col + 1) * width // (2 * size)], 1)


class SaliencyMix(CutMix):
    """CutMix with the box centred on the partner image's spectral-residual saliency peak.

    λ ~ Beta(α, α) sets the box sides as in CutMix; the box is centred on the most salient pixel of
    the image the patch comes from, clipped, and λ is recomputed as the exact share of pixels kept.

    Args:
        alpha: λ ~ Beta(alpha, alpha); alpha > 0.
        num_classes: number of classes; required when targets are class indices.
        p: probability of mixing (per batch, or per sample when ``per_sample``).
        label_smoothing: s in [0, 1) for the soft targets.
        per_sample: True (default): one λ, one saliency map and one box per sample, all computed
            in one batched pass. False: the official recipe, one λ and one box for the whole
            batch, centred on the saliency peak of the partner of sample 0.
        partner: "flip" (sample i takes from N - 1 - i) or "permute" (a random permutation, as in
            the official code).
        inplace: paste into ``images`` instead of returning a new tensor.
        seed: seeds the operator's generators (see ``BatchOp``).

    ``sample`` returns ``BoxParams``.

    Example:
        >>> import torch
        >>> from dalaug.ops import SaliencyMix
        >>> mix = SaliencyMix(alpha=1.0, num_classes=10, seed=0)
        >>> images, soft = mix(torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        >>> soft.shape
        torch.Size([8, 10])
    """

    def __init__(
        self,
        alpha: float = 1.0,
        num_classes: int | None = None,
        *,
        p: float = 1.0,
        label_smoothing: float = 0.0,
        per_sample: bool = True,
        partner: Partner = "flip",
        inplace: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            alpha,
            num_classes,
            p=p,
            label_smoothing=label_smoothing,
            per_sample=per_sample,
            partner=partner,
            inplace=inplace,
            seed=seed,
        )

    def _sample(self, images: Tensor, rng: np.random.Generator) -> BoxParams:
        batch, _, height, width = images.shape
        box_h, box_w, partner = self._draw_sizes(images, rng)
        mirrored = self.partner == "flip"
        if self.per_sample:
            partner_t, sides = to_device([partner, np.stack([box_h, box_w], 1)], images.device)
            # One map per image, then gathered by partner: each image's map is computed once.
            peaks = saliency_peaks(images)
            peaks = peaks.flip(0) if mirrored else peaks.index_select(0, partner_t)
            box_h, box_w = sides[:, 0], sides[:, 1]
        else:
            partner_t = partner_tensor(partner, self.partner, images.device)
            first = int(partner[0])  # the official recipe: the map of sample 0's partner
            peaks = saliency_peaks(images[first : first + 1])
            box_h, box_w = int(box_h), int(box_w)
        boxes = boxes_around(peaks[:, 0], peaks[:, 1], box_h, box_w, height, width)
        lam = kept_fraction(boxes, height, width).expand(batch)
        return BoxParams(boxes, lam, partner_t, mirrored)

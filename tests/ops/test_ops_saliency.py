"""Spectral-residual saliency against OpenCV on real photos, and SaliencyMix's boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dalaug.ops import SaliencyMix, saliency_peaks, spectral_residual_saliency
from dalaug.ops.saliency import bilinear_matrix

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket"]


def _photo(name: str) -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return getattr(data, name)()[..., :3]


@pytest.mark.parametrize("name", PHOTOS)
def test_saliency_matches_opencv_spectral_residual(name):
    cv2 = pytest.importorskip("cv2")
    photo = _photo(name)
    ok, reference = cv2.saliency.StaticSaliencySpectralResidual_create().computeSaliency(
        cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)
    )
    assert ok
    images = torch.from_numpy(photo).permute(2, 0, 1)[None].float()
    ours = spectral_residual_saliency(images)[:, None]
    ours = F.interpolate(ours, size=reference.shape, mode="bilinear", align_corners=False)
    correlation = np.corrcoef(ours.flatten().numpy(), reference.ravel())[0, 1]
    assert correlation >= 0.9, f"{name}: Pearson r = {correlation:.4f}"


@pytest.mark.parametrize("name", PHOTOS)
def test_saliency_ignores_normalisation(name):
    images = torch.from_numpy(_photo(name)).permute(2, 0, 1)[None].float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    raw, normalised = spectral_residual_saliency(torch.cat([images, (images - mean) / std]))
    assert np.corrcoef(raw.flatten().numpy(), normalised.flatten().numpy())[0, 1] > 0.99


def test_saliency_map_shape_and_range(batch):
    images, _ = batch
    maps = spectral_residual_saliency(images)
    assert maps.shape == (images.shape[0], 64, 64) and maps.dtype == torch.float32
    assert maps.device == images.device and bool((maps >= 0).all())
    torch.testing.assert_close(maps.flatten(1).amax(1), torch.ones(images.shape[0], device=images.device))


def _contains(boxes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    row, col = points.unbind(-1)
    return (boxes[:, 0] <= row) & (row < boxes[:, 1]) & (boxes[:, 2] <= col) & (col < boxes[:, 3])


def test_saliencymix_box_contains_the_partners_saliency_peak(make_batch):
    images, targets = make_batch(shape=(16, 3, 48, 40))
    op = SaliencyMix(alpha=1.0, num_classes=10, partner="permute", seed=0)
    params = op.sample(images)
    peaks = saliency_peaks(images).index_select(0, params.partner)
    assert params.boxes.shape == (16, 4) and params.lam.shape == (16,)
    nonempty = params.lam < 1
    assert bool(nonempty.any())
    assert bool(_contains(params.boxes, peaks)[nonempty].all())
    out, _ = op.apply(images, targets, params)
    kept = (out == images).all(1).flatten(1).sum(1)
    # A sample paired with itself (a permutation may do that) gets its own pixels back: not countable.
    paired = params.partner != torch.arange(16)
    assert torch.equal(params.lam[paired], kept[paired].float() / (48 * 40))


def test_saliencymix_official_mode_uses_one_box_from_one_map(make_batch):
    images, targets = make_batch(shape=(16, 3, 48, 40))
    op = SaliencyMix(alpha=1.0, num_classes=10, per_sample=False, partner="permute", seed=1)
    params = op.sample(images)
    assert params.boxes.shape == (1, 4)
    assert bool((params.lam == params.lam[0]).all())
    peak = saliency_peaks(images[params.partner[:1]])
    assert bool(_contains(params.boxes, peak).all())


def test_saliency_peak_maps_back_to_full_resolution():
    # A bright block on faint texture is the most salient spot. (A flat background is not a fair
    # input: its spectrum is zero almost everywhere and the log amplitude meaningless.)
    images = 0.1 * torch.rand(1, 1, 128, 96, generator=torch.Generator().manual_seed(0))
    images[..., 96:104, 8:14] = 1.0
    row, col = saliency_peaks(images)[0].tolist()
    assert 94 <= row < 106 and 6 <= col < 16


@pytest.mark.parametrize(("size_in", "size_out"), [(224, 64), (301, 64), (40, 64), (3, 8)])
def test_bilinear_matrix_matches_interpolate(size_in, size_out):
    images = torch.randn(2, 3, size_in, size_in + 5)
    rows = bilinear_matrix(size_in, size_out, images.device, images.dtype)
    cols = bilinear_matrix(size_in + 5, size_out, images.device, images.dtype)
    expected = F.interpolate(images, (size_out, size_out), mode="bilinear", align_corners=False)
    torch.testing.assert_close(rows @ images @ cols.T, expected)


def test_maps_made_under_inference_mode_serve_a_later_backward():
    """The resampling matrices and kernels are made once and kept: made during an evaluation
    under inference_mode, they must still serve a map that autograd tracks later."""
    shape = (2, 3, 37, 41)  # a size no other test uses, so the first map is made here
    with torch.inference_mode():
        spectral_residual_saliency(torch.rand(shape))
    images = torch.rand(shape, requires_grad=True)
    spectral_residual_saliency(images).sum().backward()
    assert images.grad is not None and images.grad.shape == shape

"""Cutout and RandomErasing: holes hold the fill, everything else and the labels are untouched."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch

from dalaug.ops import Cutout, RandomErasing, soft_targets
from dalaug.ops.boxes import box_mask
from dalaug.ops.cutout import erase


@pytest.mark.parametrize("fill", [0.0, 0.5, "noise"])
def test_cutout_fills_the_holes_and_leaves_the_rest(batch, fill):
    images, targets = batch
    op = Cutout(size=(10, 6), num_holes=3, fill=fill, num_classes=10, seed=0)
    params = op.sample(images)
    out, soft = op.apply(images, targets, params)
    assert torch.equal(soft, soft_targets(targets, 10))
    mask = box_mask(params.holes, *images.shape[-2:]).any(1, keepdim=True).expand_as(images)
    assert torch.equal(out[~mask], images[~mask])
    expected = params.noise[mask] if fill == "noise" else torch.full_like(out[mask], fill)
    assert torch.equal(out[mask], expected)
    assert bool(mask.any())


def test_cutout_hole_sizes(make_batch):
    images, _ = make_batch(shape=(64, 1, 32, 32))
    holes = Cutout(size=(10, 6), seed=0).sample(images).holes
    heights, widths = holes[..., 1] - holes[..., 0], holes[..., 3] - holes[..., 2]
    assert int(heights.max()) == 10 and int(widths.max()) == 6  # unclipped holes have full size
    assert bool((heights >= 5).all()) and bool((widths >= 3).all())  # centre inside: >= half

    holes = Cutout(scale=(0.1, 0.2), ratio=(1.0, 1.0), seed=0).sample(images).holes
    area = (holes[..., 1] - holes[..., 0]) * (holes[..., 3] - holes[..., 2])
    assert int(area.max()) <= round((0.2 * 1024) ** 0.5) ** 2


def test_cutout_keeps_soft_targets(make_batch):
    images, targets = make_batch()
    soft = soft_targets(targets, 10, label_smoothing=0.2)
    _, out = Cutout(size=4, seed=0)(images, soft)
    assert torch.equal(out, soft)


@pytest.mark.parametrize("fill", [0.0, -1.5, "noise"])
def test_the_masked_erase_matches_erasing_hole_by_hole(make_batch, fill):
    images, _ = make_batch()
    params = Cutout(scale=(0.05, 0.5), num_holes=3, fill=fill, seed=0).sample(images)
    value = float(fill) if params.noise is None else params.noise
    expected = images.clone()
    for index, holes in enumerate(params.holes.tolist()):
        for top, bottom, left, right in holes:
            region = (index, slice(None), slice(top, bottom), slice(left, right))
            expected[region] = value if isinstance(value, float) else value[region]
    assert torch.equal(erase(images, params.holes, value, inplace=False), expected)


def _extent(holes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return holes[..., 1] - holes[..., 0], holes[..., 3] - holes[..., 2]


@pytest.mark.parametrize("value", [0.0, "random"])
def test_random_erasing_fills_one_rectangle_inside_the_image(batch, value):
    images, targets = batch
    op = RandomErasing(p=1.0, value=value, num_classes=10, seed=0)
    params = op.sample(images)
    out, soft = op.apply(images, targets, params)
    assert params.holes.shape == (images.shape[0], 1, 4)
    assert torch.equal(soft, soft_targets(targets, 10))
    mask = box_mask(params.holes, *images.shape[-2:]).expand_as(images)
    assert torch.equal(out[~mask], images[~mask])
    expected = params.noise[mask] if value == "random" else torch.zeros_like(out[mask])
    assert torch.equal(out[mask], expected)


def test_random_erasing_follows_torchvisions_distribution():
    """Areas uniform in scale x H x W, log aspect ratios uniform, rectangles wholly inside, rate p."""
    images = torch.zeros(4_000, 1, 64, 64)
    op = RandomErasing(p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), seed=0)
    holes = op.sample(images).holes[:, 0]
    heights, widths = _extent(holes)
    erased = heights > 0
    assert scipy.stats.binomtest(int(erased.sum()), 4_000, 0.5).pvalue > 1e-3
    heights, widths, holes = heights[erased], widths[erased], holes[erased]
    assert bool((holes[:, 0] >= 0).all() and (holes[:, 1] <= 64).all() and (holes[:, 3] <= 64).all())
    assert bool(((heights < 64) & (widths < 64)).all())  # torchvision's h < H and w < W
    # Sides are rounded, so test the log ratio only where rounding moves it little.
    big = (heights >= 16) & (widths >= 16)
    log_ratio = (heights[big].double() / widths[big].double()).log()
    assert float(log_ratio.min()) >= math.log(0.3) - 0.07 and float(log_ratio.max()) <= math.log(3.3) + 0.07
    area = (heights * widths).double() / 64**2
    assert float(area.min()) >= 0.015 and float(area.max()) <= 0.35
    # Same distribution as torchvision's own sampler (two-sample KS on the heights and widths).
    torchvision = pytest.importorskip("torchvision.transforms")
    torch.manual_seed(0)
    theirs = [
        torchvision.RandomErasing.get_params(images[0], (0.02, 0.33), (0.3, 3.3), [0.0])[2:4]
        for _ in range(2_000)
    ]
    their_heights, their_widths = zip(*theirs, strict=True)
    assert scipy.stats.ks_2samp(heights.numpy(), their_heights).pvalue > 1e-3
    assert scipy.stats.ks_2samp(widths.numpy(), their_widths).pvalue > 1e-3


def test_random_erasing_rejects_bad_arguments():
    with pytest.raises(ValueError, match="value must be a number or 'random'"):
        RandomErasing(value="pixel")
    with pytest.raises(ValueError, match="scale must satisfy"):
        RandomErasing(scale=(0.0, 0.3))
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\]"):
        RandomErasing(p=2.0)

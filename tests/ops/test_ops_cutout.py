"""Cutout: holes hold the fill, everything else and the labels are untouched."""

from __future__ import annotations

import pytest
import torch

from dalaug.ops import Cutout, soft_targets
from dalaug.ops.boxes import box_mask
from dalaug.ops.cutout import erase_masked, erase_sliced


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
def test_cpu_slicing_and_device_masking_agree(make_batch, fill):
    images, _ = make_batch()
    params = Cutout(scale=(0.05, 0.5), num_holes=3, fill=fill, seed=0).sample(images)
    value = fill if params.noise is None else params.noise
    sliced = erase_sliced(images, params.holes, value, inplace=False)
    masked = erase_masked(images, params.holes, value, inplace=False)
    assert torch.equal(sliced, masked)

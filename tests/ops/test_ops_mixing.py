"""Mixup and CutMix: the returned λ describes exactly what happened to pixels and labels."""

from __future__ import annotations

import pytest
import scipy.stats
import torch

from dalaug.ops import BoxParams, CutMix, Mixup, soft_targets
from dalaug.ops.boxes import box_mask


def _per_sample(value, batch: int, device) -> torch.Tensor:
    """λ as float32 (N,): a per-batch float broadcast, or the per-sample tensor itself."""
    return torch.as_tensor(value, dtype=torch.float32, device=device).expand(batch)


def _mixed_one_hot(targets: torch.Tensor, params) -> torch.Tensor:
    one_hot = soft_targets(targets, 10)
    label_lam = _per_sample(params.label_lam, targets.shape[0], targets.device)[:, None]
    return label_lam * one_hot + (1 - label_lam) * one_hot[params.partner]


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("partner", ["flip", "permute"])
def test_mixup_output_is_the_convex_combination_with_the_returned_lambda(batch, per_sample, partner):
    images, targets = batch
    op = Mixup(alpha=1.0, num_classes=10, per_sample=per_sample, partner=partner, seed=0)
    params = op.sample(images)
    out, soft = op.apply(images, targets, params)
    lam = _per_sample(params.lam, images.shape[0], images.device)[:, None, None, None]
    donors = images.float().index_select(0, params.partner)
    expected = lam * images.float() + (1 - lam) * donors
    torch.testing.assert_close(out, expected.to(images.dtype))
    torch.testing.assert_close(soft, _mixed_one_hot(targets, params))
    assert isinstance(params.lam, torch.Tensor) == per_sample


@pytest.mark.parametrize("per_sample", [False, True])
def test_mixup_lambda_is_exact_in_the_image_dtype(batch, per_sample):
    images, _ = batch
    op = Mixup(alpha=1.0, num_classes=10, per_sample=per_sample, seed=0)
    for _ in range(4):
        lam = _per_sample(op.sample(images).lam, images.shape[0], "cpu").double()
        for weight in (lam, 1 - lam):
            assert torch.equal(weight.to(images.dtype).double(), weight)


def test_mixup_partners(make_batch):
    images, _ = make_batch()
    flip = Mixup(num_classes=10, seed=0).sample(images).partner
    assert flip.tolist() == list(range(images.shape[0] - 1, -1, -1))
    permuted = Mixup(num_classes=10, partner="permute", seed=0).sample(images).partner
    assert sorted(permuted.tolist()) == list(range(images.shape[0]))


def test_mixup_label_alpha_draws_a_separate_label_weight(make_batch):
    images, targets = make_batch(shape=(64, 1, 2, 2))
    op = Mixup(alpha=1.0, label_alpha=1.0, num_classes=10, per_sample=True, seed=0)
    params = op.sample(images)
    assert not torch.equal(params.lam, params.label_lam)
    _, soft = op.apply(images, targets, params)
    torch.testing.assert_close(soft, _mixed_one_hot(targets, params))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 4.0])
def test_per_sample_lambda_follows_beta_alpha_alpha(alpha):
    # Per-sample λ of a large batch of 1-pixel images: one draw per sample. (Per-sample λ are
    # float32 tensors: below alpha ~ 0.3 a share of draws lies within float32's 6e-8 of 1 and
    # rounds to 1; the per-batch test below covers small alpha in float64.)
    images = torch.zeros(5_000, 1, 1, 1)
    params = Mixup(alpha=alpha, label_alpha=alpha, num_classes=2, per_sample=True, seed=0).sample(images)
    for lam in (params.lam, params.label_lam):
        assert scipy.stats.kstest(lam.double().numpy(), "beta", args=(alpha, alpha)).pvalue > 1e-3


@pytest.mark.parametrize("alpha", [0.1, 0.3, 1.0])
def test_per_batch_lambda_follows_beta_alpha_alpha(alpha):
    op = Mixup(alpha=alpha, num_classes=2, seed=0)
    images = torch.zeros(2, 1, 1, 1, dtype=torch.float64)  # λ rounded to float64's grid only
    draws = [op.sample(images).lam for _ in range(3_000)]
    assert scipy.stats.kstest(draws, "beta", args=(alpha, alpha)).pvalue > 1e-3


def _labelled_images(device, dtype, batch: int = 8, size: int = 32) -> torch.Tensor:
    """Image i holds the constant i + 1 (exact in every dtype), so each pixel names its source."""
    ids = torch.arange(1, batch + 1, device=device, dtype=dtype)
    return ids[:, None, None, None].expand(batch, 3, size, size).contiguous()


@pytest.mark.parametrize("per_sample", [False, True])
def test_cutmix_lambda_is_the_exact_share_of_pixels_kept(device, dtype, per_sample):
    images = _labelled_images(device, dtype)
    targets = torch.arange(8, device=device)
    op = CutMix(alpha=1.0, num_classes=10, per_sample=per_sample, seed=0)
    for _ in range(5):
        params = op.sample(images)
        out, soft = op.apply(images, targets, params)
        own = out == images
        assert torch.equal(own, own[:, :1].expand_as(own))  # channels move together
        pixels = images.shape[-2] * images.shape[-1]
        kept = own[:, 0].flatten(1).sum(1)
        lam = _per_sample(params.lam, 8, device)
        assert torch.equal(lam, kept.to(torch.float32) / pixels)
        partner_ids = params.partner.to(dtype) + 1
        assert bool(((out == images) | (out == partner_ids[:, None, None, None])).all())
        torch.testing.assert_close(soft[torch.arange(8), targets], lam)
        assert params.boxes.shape == (8, 4) if per_sample else len(params.boxes) == 4


@pytest.mark.parametrize("partner", ["flip", "permute"])
@pytest.mark.parametrize("batch_size", [1, 7, 8])
def test_cutmix_host_slice_and_device_mask_paths_agree(make_batch, partner, batch_size):
    images, targets = make_batch(shape=(batch_size, 3, 32, 32))
    op = CutMix(alpha=1.0, num_classes=10, partner=partner, seed=0)
    for _ in range(3):
        params = op.sample(images)
        assert isinstance(params.boxes, tuple)
        sliced, sliced_soft = op.apply(images, targets, params)
        boxes = torch.tensor([params.boxes]).expand(batch_size, 4)  # one box per sample: the mask path
        lam = torch.full((batch_size,), params.lam)
        masked, masked_soft = op.apply(images, targets, BoxParams(boxes, lam, params.partner))
        assert torch.equal(sliced, masked)
        torch.testing.assert_close(sliced_soft, masked_soft)


@pytest.mark.parametrize("batch_size", [1, 7, 8])
@pytest.mark.parametrize("per_sample", [False, True])
def test_mixup_mirror_path_matches_the_gather_path(make_batch, batch_size, per_sample):
    """flip(0) for "flip" gives what a gather by the partner index gives; odd batches keep their middle."""
    images, targets = make_batch(shape=(batch_size, 3, 8, 8))
    op = Mixup(alpha=1.0, num_classes=10, per_sample=per_sample, seed=0)
    params = op.sample(images)
    assert params.mirrored
    expected, expected_soft = op.apply(images, targets, params)
    generic = type(params)(params.lam, params.label_lam, params.partner)  # not marked mirrored
    for inplace in (False, True):
        out, soft = Mixup(num_classes=10, inplace=inplace).apply(images.clone(), targets, generic)
        assert torch.equal(out, expected) and torch.equal(soft, expected_soft)
    if batch_size % 2:
        assert torch.equal(expected[batch_size // 2], images[batch_size // 2])


def test_cutmix_patch_is_the_partners_pixels(batch):
    images, targets = batch
    op = CutMix(alpha=1.0, num_classes=10, per_sample=True, seed=0)
    params = op.sample(images)
    out, _ = op.apply(images, targets, params)
    mask = box_mask(params.boxes, *images.shape[-2:])[:, None]
    assert torch.equal(out, torch.where(mask, images[params.partner], images))

"""Bad arguments and bad batches raise TypeError/ValueError naming the culprit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dalaug.ops import (
    CutMix,
    Cutout,
    Mixup,
    RandomChoice,
    SaliencyMix,
    soft_targets,
    spectral_residual_saliency,
)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: Mixup(alpha=0.0), ValueError, "alpha must be a finite number > 0"),
        (lambda: CutMix(alpha=-1.0), ValueError, "alpha must be a finite number > 0"),
        (lambda: SaliencyMix(alpha=float("inf")), ValueError, "alpha must be"),
        (lambda: Mixup(alpha="1"), TypeError, "alpha must be a real number"),
        (lambda: Mixup(label_alpha=0.0), ValueError, "label_alpha must be"),
        (lambda: Mixup(p=1.5), ValueError, r"p must lie in \[0, 1\]"),
        (lambda: CutMix(p=-0.1), ValueError, r"p must lie in \[0, 1\]"),
        (lambda: Mixup(label_smoothing=1.0), ValueError, r"label_smoothing must lie in \[0, 1\)"),
        (lambda: Mixup(num_classes=0), ValueError, "num_classes must be >= 1"),
        (lambda: Mixup(num_classes=2.0), TypeError, "num_classes must be an int"),
        (lambda: Mixup(partner="ring"), ValueError, "partner must be 'flip', 'permute' or 'roll'"),
        (lambda: Mixup(inplace=1), TypeError, "inplace must be a bool"),
        (lambda: Mixup(per_sample="no"), TypeError, "per_sample must be a bool"),
        (lambda: CutMix(per_sample=0), TypeError, "per_sample must be a bool"),
        (lambda: SaliencyMix(per_sample=None), TypeError, "per_sample must be a bool"),
        (lambda: setattr(Mixup(), "mixup_enabled", "off"), TypeError, "mixup_enabled must be a bool"),
        (lambda: Mixup(num_classes=True), TypeError, "num_classes must be an int, got bool"),
        (lambda: Mixup(seed=np.bool_(True)), TypeError, "seed must be an int"),
        (lambda: Mixup(seed=1.5), TypeError, "seed must be an int"),
        (lambda: Cutout(), ValueError, "exactly one of size and scale"),
        (lambda: Cutout(size=4, scale=(0.1, 0.2)), ValueError, "exactly one of size and scale"),
        (lambda: Cutout(size=0), ValueError, "size must be >= 1"),
        (lambda: Cutout(size=(4, 4, 4)), ValueError, "size must be an int or"),
        (lambda: Cutout(size=8.0), TypeError, "size must be an int or"),
        (lambda: Cutout(size=8, ratio=(1, 2)), ValueError, "ratio applies only with scale"),
        (lambda: Cutout(size=8, ratio=(0.3, 1 / 0.3)), ValueError, "ratio applies only with scale"),
        (lambda: Cutout(scale=(0.0, 0.2)), ValueError, "scale must satisfy"),
        (lambda: Cutout(scale=(0.3, 0.2)), ValueError, "scale must satisfy"),
        (lambda: Cutout(scale=0.2), TypeError, "scale must be a pair"),
        (lambda: Cutout(scale=(0.1, 0.2), ratio=(0.0, 1.0)), ValueError, "ratio must satisfy"),
        (lambda: Cutout(size=4, num_holes=0), ValueError, "num_holes must be >= 1"),
        (lambda: Cutout(size=4, fill="mean"), ValueError, "fill must be a number or 'noise'"),
    ],
)
def test_constructors_reject_bad_arguments(build, error, match):
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize("integer", [np.int64, np.int32, np.uint8])
def test_numpy_integers_are_taken_wherever_an_int_is(integer):
    images, targets = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    for build in (
        lambda n: Mixup(num_classes=n(10), seed=n(1)),
        lambda n: Cutout(n(6), num_holes=n(2), num_classes=n(10), seed=n(1)),
        lambda n: RandomChoice([CutMix(num_classes=n(10), seed=n(2))], seed=n(1)),
    ):
        numpy_made, python_made = build(integer), build(int)
        assert repr(numpy_made) == repr(python_made)
        for got, expected in zip(numpy_made(images, targets), python_made(images, targets), strict=True):
            assert torch.equal(got, expected)
    assert spectral_residual_saliency(images, size=integer(8)).shape == (4, 8, 8)


GOOD_IMAGES = torch.zeros(4, 3, 8, 8)
GOOD_TARGETS = torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize(
    ("images", "targets", "error", "match"),
    [
        (GOOD_IMAGES.numpy(), GOOD_TARGETS, TypeError, "images must be a torch.Tensor"),
        (GOOD_IMAGES.long(), GOOD_TARGETS, TypeError, "images must be a floating-point tensor"),
        (GOOD_IMAGES[0], GOOD_TARGETS, ValueError, r"images must be 4-D \(N, C, H, W\)"),
        (GOOD_IMAGES[:0], GOOD_TARGETS[:0], ValueError, "images must not be empty"),
        (GOOD_IMAGES, GOOD_TARGETS.tolist(), TypeError, "targets must be a torch.Tensor"),
        (GOOD_IMAGES, GOOD_TARGETS[:3], ValueError, "targets hold 3 samples but images hold 4"),
        (GOOD_IMAGES, GOOD_TARGETS[:, None], ValueError, r"integer targets must be 1-D \(B,\)"),
        (GOOD_IMAGES, GOOD_TARGETS.bool(), TypeError, "targets must be integer class indices"),
        (GOOD_IMAGES, GOOD_TARGETS + 7, ValueError, r"targets must lie in \[0, num_classes=10\)"),
        (GOOD_IMAGES, GOOD_TARGETS - 1, ValueError, r"targets must lie in \[0, num_classes=10\)"),
        (
            GOOD_IMAGES,
            torch.zeros(4, 5),
            ValueError,
            "targets have 5 classes but num_classes is 10",
        ),
        (GOOD_IMAGES, torch.zeros(4), ValueError, r"soft targets must be 2-D \(B, C\)"),
    ],
)
@pytest.mark.parametrize("op", [Mixup, CutMix, SaliencyMix, lambda **kw: Cutout(size=2, **kw)])
def test_calls_reject_bad_batches(op, images, targets, error, match):
    with pytest.raises(error, match=match):
        op(num_classes=10)(images, targets)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_num_classes_is_required_for_integer_targets(p):
    with pytest.raises(ValueError, match="num_classes is required"):
        Mixup(p=p)(GOOD_IMAGES, GOOD_TARGETS)
    # soft targets carry their number of classes
    Mixup(p=p)(GOOD_IMAGES, soft_targets(GOOD_TARGETS, 4))


def test_cutout_hole_larger_than_the_image():
    with pytest.raises(ValueError, match=r"size \(4, 9\) is larger than the images \(8, 8\)"):
        Cutout(size=(4, 9))(GOOD_IMAGES, soft_targets(GOOD_TARGETS, 4))


def test_generator_must_be_a_torch_generator():
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        Mixup(num_classes=10)(GOOD_IMAGES, GOOD_TARGETS, generator=0)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        Mixup(num_classes=10).sample(GOOD_IMAGES, generator=3)
    # (a CUDA generator raises ValueError: see test_a_cuda_generator_is_refused, marked gpu)


def test_saliency_needs_gray_or_rgb():
    with pytest.raises(ValueError, match="images must have 1 or 3 channels, got 2"):
        spectral_residual_saliency(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="size must be >= 3"):
        spectral_residual_saliency(torch.zeros(1, 1, 8, 8), size=2)

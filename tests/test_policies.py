"""Policies change images as their definitions say, inside the real DALI pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import chisquare

import dalaug
from dalaug.policies import AUTOAUGMENT_POLICIES, OPS, UNIFORM_OPS, resolve_policy

CROP = 32
# The ops that move pixels: on a uniform grey image they, and only they, leave a fill border.
GEOMETRIC = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}


@pytest.fixture(scope="module")
def grey_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("grey")
    (root / "grey").mkdir()
    for i in range(100):
        Image.new("RGB", (48, 48), (150, 150, 150)).save(root / "grey" / f"{i}.jpg", quality=100)
    return root


def non_uniform_count(folder, policy, epochs: int) -> tuple[int, int]:
    """Images (of a uniform grey folder) that a policy left non-uniform, and images seen."""
    loader = dalaug.Loader(
        folder, 50, crop=CROP, device="cpu", flip=False, policy=policy, scale=(1.0, 1.0), ratio=(1.0, 1.0)
    )
    changed = seen = 0
    for _ in range(epochs):
        for images, _ in loader:
            spread = images.flatten(2).amax(2) - images.flatten(2).amin(2)  # per channel
            changed += int((spread.amax(1) > 1e-3).sum())
            seen += images.shape[0]
    return changed, seen


def test_randaugment_draws_its_ops_uniformly(grey_folder):
    # n=1 op per image, uniform over UNIFORM_OPS; at a non-zero magnitude each geometric op leaves
    # a fill border on a grey image, every other op keeps it uniform.
    changed, seen = non_uniform_count(grey_folder, dalaug.RandAugment(n=1, m=15), epochs=10)
    expected = len(GEOMETRIC & set(UNIFORM_OPS)) / len(UNIFORM_OPS)
    result = chisquare([changed, seen - changed], [expected * seen, (1 - expected) * seen])
    assert result.pvalue > 1e-3, (changed, seen, expected)


def test_autoaugment_imagenet_applies_its_sub_policies_at_their_probabilities(grey_folder):
    # P(a geometric op runs) = mean over sub-policies of 1 - prod(1 - p) over its geometric ops.
    table = AUTOAUGMENT_POLICIES["imagenet"]
    expected = np.mean([1 - np.prod([1 - p for name, p, _ in sub if name in GEOMETRIC]) for sub in table])
    changed, seen = non_uniform_count(grey_folder, "autoaugment", epochs=10)
    result = chisquare([changed, seen - changed], [expected * seen, (1 - expected) * seen])
    assert result.pvalue > 1e-3, (changed, seen, expected)


@pytest.fixture(scope="module")
def square_photos(photo_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("square")
    for path in sorted(photo_folder.rglob("*.jpg")):
        image = Image.open(path)
        side = min(image.size)
        (root / path.parent.name).mkdir(exist_ok=True)
        image.crop((0, 0, side, side)).save(root / path.parent.name / path.name, quality=95)
    return root


POLICIES = ["autoaugment", "randaugment", "trivialaugment", dalaug.AutoAugment("svhn")]


@pytest.mark.parametrize("policy", POLICIES)
def test_policy_changes_photos_and_none_leaves_only_the_crop(square_photos, policy):
    def run(policy):
        loader = dalaug.Loader(
            square_photos, 20, crop=CROP, device="cpu", flip=False, policy=policy,
            scale=(1.0, 1.0), ratio=(1.0, 1.0), seed=1,
        )  # fmt: skip
        return [(x, loader.sample_ids.clone()) for x, _ in loader]

    # Whole square images resized to CROP: the clean train graph must equal the eval graph.
    reference = dalaug.Loader(square_photos, 60, train=False, crop=CROP, resize=CROP, device="cpu")
    whole = next(iter(reference))[0]
    for (clean, ids), (augmented, same_ids) in zip(run(None), run(policy), strict=True):
        assert torch.equal(ids, same_ids)
        assert (clean - whole[ids]).abs().max() < 0.05
        changed = (clean - augmented).flatten(1).abs().amax(1) > 1e-3
        assert changed.float().mean() > 0.3


def test_autoaugment_imagenet_is_torchvisions_paper_policy():
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy

    ours = [tuple(op for op in sub) for sub in AUTOAUGMENT_POLICIES["imagenet"]]
    theirs = AutoAugment(AutoAugmentPolicy.IMAGENET).policies
    assert ours == [tuple(sub) for sub in theirs]


def test_every_policy_op_exists_and_policies_build():
    for variant, table in AUTOAUGMENT_POLICIES.items():
        assert {name for sub in table for name, _, _ in sub} <= set(OPS), variant
        assert dalaug.AutoAugment(variant).policy.sub_policies  # DALI's Policy checks each entry


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: dalaug.AutoAugment("imagenett"), "variant"),
        (lambda: dalaug.AutoAugment(interpolation="cubic"), "interpolation"),
        (lambda: dalaug.AutoAugment(fill=300), "fill"),
        (lambda: dalaug.RandAugment(n=0), "n"),
        (lambda: dalaug.RandAugment(m=31), "m"),
        (lambda: resolve_policy(3), "policy"),
    ],
)
def test_bad_policy_settings_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()

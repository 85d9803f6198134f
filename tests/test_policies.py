"""Policies change images as their definitions say, inside the real DALI pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import chisquare

import dalaug
from dalaug.policies import (
    AUTOAUGMENT_POLICIES,
    OPS,
    OPS_WIDE,
    TIMM_MAX_LEVEL,
    UNIFORM_OPS,
    TimmRandAugment,
    _timm_ops,
    resolve_policy,
)  # fmt: skip

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
        folder,
        50,
        train=True,
        crop=CROP,
        device="cpu",
        flip=False,
        policy=policy,
        scale=(1.0, 1.0),
        ratio=(1.0, 1.0),
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
            square_photos, 20, train=True, crop=CROP, device="cpu", flip=False, policy=policy,
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
        (lambda: dalaug.AutoAugment(interpolation="bicubic"), "interpolation"),  # no bicubic warp
        (lambda: dalaug.AutoAugment(fill=300), "fill"),
        (lambda: dalaug.RandAugment(n=0), "n"),
        (lambda: dalaug.RandAugment(m=31), "m"),
        (lambda: resolve_policy(3), "policy"),
    ],
)
def test_bad_policy_settings_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def magnitudes(op, num_bins: int, crop: int) -> np.ndarray:
    """An op's magnitude per bin in torchvision's units (pixels for translations, bits kept for
    posterize), from the same range and mapping DALI uses to build its parameter table."""
    import inspect

    values = np.linspace(*op.mag_range, num_bins, dtype=np.float32)
    if "shape" in inspect.signature(op.op).parameters:
        return values * crop  # a fraction of the side
    if op.name == "posterize":
        return np.array([bin(int(op.mag_to_param(v))).count("1") for v in values])
    return values


@pytest.mark.parametrize("crop", [32, 96, 224])
@pytest.mark.parametrize(
    ("ours", "theirs", "num_bins"),
    [
        ("autoaugment", "AutoAugment", 10),
        ("randaugment", "RandAugment", 31),
        ("wide", "TrivialAugmentWide", 31),
    ],
)
def test_magnitude_tables_are_torchvisions(ours, theirs, num_bins, crop):
    import torchvision.transforms as T

    reference = getattr(T, theirs)()
    space = (
        reference._augmentation_space(num_bins)
        if theirs == "TrivialAugmentWide"
        else reference._augmentation_space(num_bins, (crop, crop))
    )
    table = OPS_WIDE if ours == "wide" else OPS
    for name, (expected, signed) in space.items():
        op = table[name]
        if expected.ndim == 0:  # no magnitude
            assert op.mag_range is None, name
            continue
        assert op.randomly_negate == signed, name
        np.testing.assert_allclose(magnitudes(op, num_bins, crop), expected.numpy(), atol=1e-4, err_msg=name)
        if name in ("Brightness", "Color", "Contrast"):  # torchvision's factor is 1 + magnitude
            assert float(op.mag_to_param(np.float32(-0.5))) == pytest.approx(0.5), name


# timm's arguments at level 9 of 10 (timm/data/auto_augment.py, LEVEL_TO_ARG), and at level 0.
TIMM_AT_9 = {
    "Rotate": 27.0, "ShearX": 0.27, "TranslateX": 0.405, "Color": 1.72, "Sharpness": 1.72,
    "Posterize": 3, "Solarize": 230, "SolarizeAdd": 99,
}  # fmt: skip
TIMM_INCREASING_AT_9 = {"Color": 1.81, "Brightness": 1.81, "Posterize": 1, "Solarize": 26}


def timm_argument(op, level: float):
    """The argument an op gets at ``level``, in timm's units."""
    param = np.asarray(op.mag_to_param(np.float32(level)))
    if op.name == "posterize":
        return bin(int(param)).count("1")  # bits kept
    if op.name == "sharpness":
        return 1.0 + float(param[1, 1] - 1) * 13 / 8  # the PIL factor behind the 3x3 kernel
    return float(param.flat[0]) if param.size > 1 else float(param)


@pytest.mark.parametrize(("increasing", "expected"), [(False, TIMM_AT_9), (True, TIMM_INCREASING_AT_9)])
def test_timm_ops_map_levels_as_timm_does(increasing, expected):
    ops = _timm_ops(increasing)
    assert len(ops) == 15 and "Invert" in ops and "Identity" not in ops  # timm's 15 ops
    for name, value in expected.items():
        assert timm_argument(ops[name], 9.0) == pytest.approx(value, abs=1e-5), name
    # At level 0 the unsigned enhance ops are at timm's strongest, 0.1; increasing ones at identity.
    assert timm_argument(ops["Color"], 0.0) == pytest.approx(1.0 if increasing else 0.1)
    assert ops["Rotate"].randomly_negate and not ops["Solarize"].randomly_negate
    assert ops["Color"].randomly_negate == increasing


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("autoaugment", dalaug.AutoAugment()),
        ("randaugment", dalaug.RandAugment()),
        ("trivialaugment", dalaug.TrivialAugment()),
        ("ra", dalaug.RandAugment(n=2, m=9)),  # torchvision references: num_ops 2, magnitude 9
        ("ta_wide", dalaug.TrivialAugment()),
        ("imagenet", dalaug.AutoAugment("imagenet")),
        ("cifar10", dalaug.AutoAugment("cifar10")),
        ("svhn", dalaug.AutoAugment("svhn")),
        ("rand-m9-mstd0.5", TimmRandAugment(m=9, mstd=0.5)),
        ("rand-m9-mstd0.5-inc1", TimmRandAugment(m=9, mstd=0.5, increasing=True)),
        ("rand-m7-n3", TimmRandAugment(m=7, n=3)),
        ("rand-n1-m15-p1.0", TimmRandAugment(m=15, n=1, p=1.0)),
        ("rand-m9-mstd101", TimmRandAugment(m=9, mstd=float("inf"))),  # timm: > 100 is uniform
        ("rand-m9-inc0", TimmRandAugment(m=9, increasing=False)),
        ("rand", TimmRandAugment(m=TIMM_MAX_LEVEL, n=2)),
    ],
)
def test_names_users_type_resolve(name, expected):
    assert resolve_policy(name) == expected


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("augmix", "AugMix .* not supported"),
        ("augmix-m5-w4-d2", "AugMix .* not supported"),
        ("rand-m9-w0", "section 'w0' .* not supported"),
        ("rand-m9-mmax15", "section 'mmax15' .* not supported"),
        ("rand-m9-tx", "cannot read section 'tx'"),
        ("rand-mx", "cannot read section 'mx'"),
        ("imagenett", r"expected one of .*'ta_wide'.*rand-m<M>"),
        ("original-mstd0.5", "expected one of"),
    ],
)
def test_unsupported_and_unknown_names_are_refused(name, match):
    with pytest.raises(ValueError, match=f"policy: .*{match}"):
        resolve_policy(name)


def test_interpolation_mode_is_accepted_and_normalised():
    from torchvision.transforms import InterpolationMode

    assert dalaug.RandAugment(interpolation=InterpolationMode.BILINEAR) == dalaug.RandAugment(
        interpolation="bilinear"
    )


@pytest.mark.parametrize("policy", ["rand-m9-mstd0.5-inc1", "rand-n1-m9-mstd0.5"])
def test_timm_randaugment_applies_its_ops_at_probability_half(grey_folder, policy):
    # Per layer, one of timm's 15 ops with probability 0.5; 5 of them (shear, translate, rotate)
    # leave a fill border on a grey image at level ~9, the others keep it uniform.
    parsed = resolve_policy(policy)
    changed, seen = non_uniform_count(grey_folder, policy, epochs=6)
    expected = 1 - (1 - 0.5 * 5 / 15) ** parsed.n
    result = chisquare([changed, seen - changed], [expected * seen, (1 - expected) * seen])
    assert result.pvalue > 1e-3, (changed, seen, expected)

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


# timm's names for the ops of _timm_ops (its TranslateX/Y are the relative ones; inc1 ops are the
# "Increasing" variants).
TIMM_INCREASING = {"Posterize", "Solarize", "Color", "Contrast", "Brightness", "Sharpness"}


def timm_name(name: str, increasing: bool) -> str:
    if name in ("TranslateX", "TranslateY"):
        return name + "Rel"
    return name + "Increasing" if increasing and name in TIMM_INCREASING else name


def our_argument(op, magnitude) -> float:
    """The argument our parameter for ``magnitude`` gives, in timm's units (one number)."""
    param = np.asarray(op.mag_to_param(magnitude))
    if op.name in ("shear_x", "translate_x"):  # (x, y) vectors
        return float(param[0])
    if op.name in ("shear_y", "translate_y"):
        return float(param[1])
    return timm_argument(op, magnitude) if param.size > 1 or op.name == "posterize" else float(param)


@pytest.mark.parametrize("increasing", [False, True], ids=["default", "inc1"])
def test_timm_parameter_tables_equal_timms_level_to_arg_at_every_bin(increasing, monkeypatch):
    # The table DALI builds for a per-sample bin: magnitudes linspace(0, 10, 1001) (float32, as
    # DALI's Augmentation._get_magnitudes makes them), each negated for a signed op, through
    # mag_to_param. At bin b it must be timm's LEVEL_TO_ARG at level b / 100, both signs, with timm's
    # own random negation fixed to each sign in turn.
    import timm.data.auto_augment as timm_aa

    from dalaug.policies import TIMM_BINS_PER_LEVEL, TIMM_NUM_BINS

    assert TIMM_NUM_BINS == TIMM_MAX_LEVEL * TIMM_BINS_PER_LEVEL + 1
    ops = _timm_ops(increasing)
    expected_names = timm_aa._RAND_INCREASING_TRANSFORMS if increasing else timm_aa._RAND_TRANSFORMS
    assert [timm_name(name, increasing) for name in ops] == expected_names  # timm's ops, in order
    hparams = {"translate_pct": 0.45}  # timm's default for TranslateXRel/YRel
    for name, op in ops.items():
        level_to_arg = timm_aa.LEVEL_TO_ARG[timm_name(name, increasing)]
        if level_to_arg is None:
            assert op.mag_range is None, name
            continue
        assert tuple(op.mag_range) == (0, TIMM_MAX_LEVEL), name
        magnitudes = np.linspace(*op.mag_range, TIMM_NUM_BINS, dtype=np.float32)
        for sign in (1, -1) if op.randomly_negate else (1,):
            monkeypatch.setattr(timm_aa, "_randomly_negate", lambda v, sign=sign: sign * v)
            ours = [our_argument(op, np.float32(sign * m)) for m in magnitudes]
            theirs = [level_to_arg(b / TIMM_BINS_PER_LEVEL, hparams)[0] for b in range(TIMM_NUM_BINS)]
            np.testing.assert_allclose(ours, theirs, atol=1e-5, err_msg=f"{name}, sign {sign}")


@pytest.mark.parametrize(
    ("policy", "expected_bin"),
    [("rand-m9", 900), ("rand-m0", 0), ("rand-m7-inc1", 700), ("rand-m15", 1000)],  # timm clips m to 10
)
def test_timm_integer_level_is_a_constant_exact_bin(policy, expected_bin):
    assert resolve_policy(policy)._level_bin() == expected_bin


@pytest.mark.parametrize("policy", ["rand-m9-mstd0.5", "rand-m7-mstd0.5-inc1", "rand-m9-mstd101"])
def test_timm_noisy_level_is_timms_draw_rounded_to_hundredths(policy):
    # The per-sample level is drawn as timm draws it (N(m, mstd) clipped to [0, 10]; mstd > 100:
    # uniform in [0, m]) and its bin is that level rounded to the nearest 0.01.
    from nvidia.dali import pipeline_def
    from scipy.stats import kstest, norm, uniform

    from dalaug.policies import _timm_bin

    parsed = resolve_policy(policy)

    @pipeline_def(batch_size=2000, num_threads=1, device_id=None, seed=5)
    def levels():
        level = parsed._level()  # what _level_bin passes to _timm_bin
        return level, _timm_bin(level)

    pipe = levels()
    pipe.build()
    level, bins = (np.array(out.as_array()).ravel() for out in pipe.run())
    assert bins.dtype == np.int32 and 0 <= bins.min() and bins.max() <= 1000
    assert np.abs(bins - level * 100).max() <= 0.5 + 1e-3  # rounded to nearest, not truncated
    if np.isinf(parsed.mstd):
        reference = uniform(0, parsed.m).cdf
    else:
        reference = lambda x: np.where(x >= TIMM_MAX_LEVEL, 1.0, norm(parsed.m, parsed.mstd).cdf(x))  # noqa: E731
    assert 0 <= level.min() and level.max() <= TIMM_MAX_LEVEL
    assert kstest(level, reference).pvalue > 1e-3, policy


def test_every_policy_op_is_called_outside_autograph():
    # Issue 25: DALI's parameter tables, built per bin under AutoGraph, took 23-28 s per build of
    # rand-m9-mstd0.5. Every op a policy hands to DALI must be a _PlainAugmentation (the speed
    # itself is measured in benchmarks/bench_build.py, not here).
    from dalaug.policies import _PlainAugmentation

    tables = [OPS, OPS_WIDE, _timm_ops(False), _timm_ops(True)]
    ops = [op for table in tables for op in table.values()]
    for variant in (*AUTOAUGMENT_POLICIES, "efficientnet"):
        ops += list(dalaug.AutoAugment(variant).policy.augmentations.values())
    assert [op for op in ops if not isinstance(op, _PlainAugmentation)] == []


def test_efficientnet_policy_is_dalis_image_net_policy():
    from nvidia.dali.auto_aug import auto_augment

    dali = auto_augment.get_image_net_policy(use_shape=True)
    ours = dalaug.AutoAugment("efficientnet").policy
    assert (ours.name, ours.num_magnitude_bins) == (dali.name, dali.num_magnitude_bins)

    def described(policy):
        return [
            [(op.name, op.op, op.mag_range, op.randomly_negate, op.mag_to_param, p, b) for op, p, b in sub]
            for sub in policy.sub_policies
        ]

    assert described(ours) == described(dali)
    assert len(ours.augmentations) == len(dali.augmentations)  # one op per distinct DALI op


@pytest.mark.parametrize(
    "policy",
    [
        dalaug.AutoAugment("imagenet"),
        dalaug.AutoAugment("cifar10", interpolation="bilinear", fill=7),
        dalaug.AutoAugment("efficientnet"),
        dalaug.RandAugment(),
        dalaug.RandAugment(n=1, m=15),
        dalaug.TrivialAugment(),
    ],
    ids=["imagenet", "cifar10", "efficientnet", "randaugment", "randaugment-n1", "ta_wide"],
)
def test_policies_draw_as_dalis_apply_functions(policy):
    # apply makes its draws outside AutoGraph instead of calling DALI's apply_auto_augment /
    # apply_rand_augment / apply_trivial_augment: the same ops in the same order, so the same
    # pipeline seed must give the same pixels as DALI's functions (EfficientNet: DALI's own policy).
    from nvidia.dali import fn, pipeline_def
    from nvidia.dali.auto_aug import auto_augment, rand_augment, trivial_augment

    rng = np.random.default_rng(0)
    batches = [[rng.integers(0, 256, (CROP, CROP, 3), dtype=np.uint8) for _ in range(16)] for _ in range(3)]

    def dalis(images):
        if isinstance(policy, dalaug.AutoAugment):
            dali_policy = (
                auto_augment.get_image_net_policy(use_shape=True)
                if policy.variant == "efficientnet"
                else policy.policy
            )
            kwargs = policy._kwargs(dali_policy.augmentations.values(), CROP)
            return auto_augment.apply_auto_augment(dali_policy, images, **kwargs)
        kwargs = policy._kwargs(policy.ops, CROP)
        if isinstance(policy, dalaug.RandAugment):
            return rand_augment.apply_rand_augment(
                policy.ops, images, n=policy.n, m=policy.m, num_magnitude_bins=policy.num_magnitude_bins,
                **kwargs,
            )  # fmt: skip
        return trivial_augment.apply_trivial_augment(
            policy.ops, images, num_magnitude_bins=policy.num_magnitude_bins, **kwargs
        )

    def outputs(apply) -> list[np.ndarray]:
        @pipeline_def(batch_size=16, num_threads=1, device_id=None, seed=11, enable_conditionals=True)
        def pipe():
            images = fn.external_source(source=iter(batches), batch=True, layout="HWC")
            return apply(images)

        built = pipe()
        built.build()
        return [np.stack([np.array(t) for t in built.run()[0]]) for _ in batches]

    ours = outputs(lambda images: policy.apply(images, CROP))
    theirs = outputs(dalis)
    for mine, reference in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(mine, reference)
    assert any((a != b).any() for a, b in zip(ours, batches, strict=True))  # the policy did act


def test_policies_leave_dalis_op_tracing_as_they_found_it():
    # A policy turns DALI's record of op origins off while it makes its ops (see _untraced), and
    # back on after, also when making them fails.
    from nvidia.dali._utils import dali_trace

    from dalaug.policies import _untraced

    assert dali_trace.is_tracing_enabled()
    with _untraced():
        assert not dali_trace.is_tracing_enabled()
    assert dali_trace.is_tracing_enabled()
    with pytest.raises(RuntimeError), _untraced():
        raise RuntimeError("an op could not be made")
    assert dali_trace.is_tracing_enabled()
    dali_trace.set_tracing(enabled=False)  # off already (a user's choice): left off
    try:
        with _untraced():
            pass
        assert not dali_trace.is_tracing_enabled()
    finally:
        dali_trace.set_tracing(enabled=True)

"""kornia's 2-D augmentations as batch operators (dalaug.ops.KorniaOp): the same pixels as kornia
called by hand with the same draw, seeded from the operator generator, switched by a Schedule,
dtype and layout kept, taken wherever operators are, and refused by name where they do not fit."""

from __future__ import annotations

import copy

import kornia.augmentation as K
import kornia.augmentation.auto as KA
import kornia.filters
import pytest
import torch

import dalaug
from dalaug.compose import apply_operators
from dalaug.ops import KorniaOp, Mixup, RandomChoice, as_operator
from dalaug.ops.sampling import host_seed
from dalaug.schedule import Fade, Phase, Schedule

NUM_CLASSES = 10

# One of each kind: intensity, colour, geometric (affine, perspective, elastic), and containers.
MODULES = {
    "blur": lambda: K.RandomGaussianBlur((5, 5), (0.1, 2.0), p=1.0),
    "noise": lambda: K.RandomGaussianNoise(std=0.1, p=0.5),
    "jiggle": lambda: K.ColorJiggle(0.2, 0.2, 0.2, 0.05, p=1.0),
    "solarize": lambda: K.RandomSolarize(p=0.5),
    "affine": lambda: K.RandomAffine(15, translate=(0.1, 0.1), p=1.0),
    "perspective": lambda: K.RandomPerspective(0.3, p=1.0),
    "elastic": lambda: K.RandomElasticTransform(p=1.0),
    "sequential": lambda: K.AugmentationSequential(K.RandomAffine(10, p=1.0), K.ColorJiggle(0.1, 0.1, p=0.5)),
    "one_of": lambda: K.ImageSequential(
        K.RandomSolarize(p=1.0), K.RandomPerspective(0.3, p=1.0), random_apply=1
    ),
}


def _batch(shape=(8, 3, 32, 32), seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.randint(0, NUM_CLASSES, (shape[0],), generator=g)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_the_pixels_are_kornias_own_for_the_same_draw(name):
    module = MODULES[name]()
    images, targets = _batch()
    op = KorniaOp(module)
    generator = torch.Generator().manual_seed(5)
    seed = host_seed(copy.deepcopy(generator))
    before = torch.get_rng_state()
    params = op.sample(images, generator)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's global RNG is left as it was
    out, kept = op.apply(images, targets, params)
    assert kept is targets
    assert not torch.equal(out, images)
    # kornia replaying the same draw, and kornia drawing by itself from the same seed.
    assert torch.equal(out, module(images, params=params.drawn))
    torch.manual_seed(seed)
    assert torch.equal(out, module(images))


def test_the_operator_generator_decides_the_draws_so_a_resumed_run_draws_the_same():
    op = as_operator(K.RandomAffine(20, p=0.5))
    images, targets = _batch()
    generator = torch.Generator().manual_seed(11)

    def step() -> torch.Tensor:
        return apply_operators([op], images, targets, num_classes=NUM_CLASSES, generator=generator)[0]

    first = step()
    saved = generator.get_state()  # what a checkpoint holds
    rest = [step(), step()]
    torch.manual_seed(123)  # the global RNG has no say
    generator.set_state(saved)
    assert all(torch.equal(a, b) for a, b in zip(rest, [step(), step()], strict=True))
    assert not torch.equal(first, rest[0])
    other = torch.Generator().manual_seed(12)
    assert not torch.equal(
        first, apply_operators([op], images, targets, num_classes=NUM_CLASSES, generator=other)[0]
    )


def test_a_schedule_phase_turns_it_off_and_a_fade_leaves_the_module_given_alone():
    blur = K.RandomGaussianBlur((5, 5), (1.0, 2.0), p=0.8)
    schedule = Schedule([Phase(2, operators=[blur], name="heavy"), Phase(1, name="refine")])
    images, targets = _batch()
    generator = torch.Generator().manual_seed(0)
    (heavy,) = schedule.operators_at(0)
    assert isinstance(heavy, KorniaOp) and heavy.module is blur
    assert schedule.operators_at(2) == []
    blurred, _ = apply_operators(schedule.operators_at(0), images, targets, num_classes=NUM_CLASSES,
                                 generator=generator)  # fmt: skip
    clean, soft = apply_operators(schedule.operators_at(2), images, targets, num_classes=NUM_CLASSES,
                                  generator=generator)  # fmt: skip
    assert not torch.equal(blurred, images) and torch.equal(clean, images) and soft.shape == (8, NUM_CLASSES)
    faded = Schedule([Phase(4, operators=[Fade(blur, "p")])]).operators_at(2)[0]
    assert faded.p == pytest.approx(0.4) and faded.module is not blur and blur.p == 0.8
    heavy.enabled = False  # the switch every operator has
    assert heavy(images, targets)[0] is images


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("name", ["blur", "perspective", "sequential"])
def test_device_dtype_and_memory_format_are_kept(name, device, dtype, channels_last):
    images, targets = _batch()
    images = images.to(device, dtype)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    op = KorniaOp(MODULES[name](), seed=0)
    out, _ = op(images, targets.to(device))
    assert out.device == images.device and out.dtype == dtype and out.shape == images.shape
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    # Half precision goes through kornia in float32, so it is the float32 result rounded once.
    reference, _ = KorniaOp(MODULES[name](), seed=0)(images.float(), targets.to(device))
    assert torch.equal(out, reference.to(dtype))


def test_random_choice_and_the_gap_monitor_take_kornia_modules():
    images, targets = _batch()
    choice = RandomChoice([Mixup(num_classes=NUM_CLASSES), K.RandomSolarize(p=1.0)], seed=0)
    assert isinstance(choice.ops[1], KorniaOp) and choice.mixes
    picks = [choice.sample(images).index for _ in range(20)]
    assert set(picks) == {0, 1}
    # Through the operator path both picks get soft targets (B, C), the kornia one unchanged.
    for seed in range(4):
        out, soft = apply_operators([choice], images, targets, num_classes=NUM_CLASSES,
                                    generator=torch.Generator().manual_seed(seed))  # fmt: skip
        assert out.shape == images.shape and soft.shape == (8, NUM_CLASSES)
    # Called by hand on class indices, the kornia pick says the class count, as Mixup does.
    smoothed = KorniaOp(K.RandomSolarize(p=1.0), num_classes=NUM_CLASSES, label_smoothing=0.1)
    by_hand = RandomChoice([Mixup(num_classes=NUM_CLASSES, label_smoothing=0.1), smoothed], seed=0)
    for _ in range(6):
        out, soft = by_hand(images, targets)
        torch.testing.assert_close(soft.sum(1), torch.ones(8))
        assert soft.shape == (8, NUM_CLASSES) and soft.min() == pytest.approx(0.01)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, NUM_CLASSES))
    gap = dalaug.measure_gap(model, [(images, targets)], [K.RandomPerspective(0.5, p=1.0)], seed=3)
    again = dalaug.measure_gap(model, [(images, targets)], [K.RandomPerspective(0.5, p=1.0)], seed=3)
    assert gap.augmented != gap.clean and gap == again


def test_a_loader_applies_it_to_every_batch_end_to_end(colour_folder):
    perspective = K.RandomPerspective(0.5, p=1.0)
    options = dict(train=True, crop=32, device="cpu", policy=None, dtype=torch.bfloat16,
                   memory_format=torch.channels_last)  # fmt: skip
    loader = dalaug.Loader(colour_folder, 8, operators=[perspective], **options)
    plain = dalaug.Loader(colour_folder, 8, **options)
    (op,) = loader.operators
    assert isinstance(op, KorniaOp) and op.module is perspective
    generator = torch.Generator()
    generator.set_state(plain.generator.get_state())  # same seed: the loader's operators draw from this
    batches = 0
    for (images, targets), (clean, clean_targets) in zip(loader, plain, strict=True):
        assert images.dtype == torch.bfloat16 and images.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(targets, clean_targets) and targets.dtype == torch.int64  # labels kept: indices
        expected, _ = op.apply(clean, clean_targets, op.sample(clean, generator))
        assert torch.equal(images, expected) and not torch.equal(images, clean)
        batches += 1
    assert batches == len(loader) > 0


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: K.RandomMixUpV2(), r"RandomMixUpV2 mixes samples.*dalaug\.Mixup\(alpha=1\.0"),
        (
            lambda: K.RandomCutMixV2(use_correct_lambda=True),
            r"RandomCutMixV2 mixes samples.*dalaug\.CutMix\(",
        ),
        (lambda: K.RandomMosaic((16, 16)), r"RandomMosaic mixes samples"),
        (
            lambda: K.AugmentationSequential(K.RandomAffine(5), K.RandomMixUpV2()),
            r"RandomMixUpV2 \(inside AugmentationSequential\) mixes samples.*dalaug\.Mixup\(",
        ),
        (lambda: K.RandomAffine3D(5), r"RandomAffine3D is not a kornia 2-D per-sample augmentation"),
        (lambda: K.VideoSequential(K.RandomAffine(5)), r"VideoSequential is not a kornia 2-D"),
        (
            lambda: K.ImageSequential(K.RandomAffine(5), kornia.filters.GaussianBlur2d((3, 3), (1.0, 1.0))),
            r"GaussianBlur2d \(inside ImageSequential\) is not a kornia 2-D",
        ),
        (lambda: KA.TrivialAugment(), r"TrivialAugment is an augmentation policy.*policy="),
    ],
    ids=["mixup", "cutmix", "mosaic", "mix_inside", "3d", "video", "filter_inside", "policy"],
)
def test_what_is_not_a_2d_per_sample_augmentation_is_refused_by_name_wherever_operators_go(
    make, match, colour_folder
):
    entry_points = [
        KorniaOp,
        as_operator,
        lambda module: dalaug.Loader(colour_folder, 8, device="cpu", operators=[module]),
        lambda module: Phase(1, operators=[module]),
        lambda module: RandomChoice([module]),
        lambda module: dalaug.measure_gap(torch.nn.Flatten(), [], [module]),
    ]
    for entry in entry_points:
        with pytest.raises(TypeError, match=match):
            entry(make())


def test_a_module_that_changes_the_batch_size_is_refused_at_its_first_call():
    images, targets = _batch()
    with pytest.raises(
        ValueError, match=r"RandomCrop turned a batch of \(8, 3, 32, 32\) into \(8, 3, 16, 16\)"
    ):
        as_operator(K.RandomCrop((16, 16), p=1.0))(images, targets)


def _syncs(run) -> int:
    """Host syncs torch reports while ``run()`` runs (``set_sync_debug_mode("warn")``)."""
    import warnings

    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(warning.message) for warning in caught)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(MODULES))
def test_cuda_matches_cpu_and_the_adapter_adds_no_host_sync_to_kornias(name):
    module = MODULES[name]()
    images, targets = _batch()
    op = KorniaOp(module)
    params = op.sample(images, torch.Generator().manual_seed(0))
    on_cpu, _ = op.apply(images, targets, params)
    cuda_images = images.cuda().contiguous(memory_format=torch.channels_last).bfloat16()
    on_cuda, _ = op.apply(images.cuda(), targets.cuda(), params)
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=1e-4, atol=1e-4)
    op(cuda_images, targets.cuda())  # warm up
    by_hand = _syncs(lambda: module(cuda_images.float(), params=params.drawn))
    through_dalaug = _syncs(
        lambda: op(cuda_images, targets.cuda(), generator=torch.Generator().manual_seed(0))
    )
    assert through_dalaug <= by_hand


def test_the_examples_in_the_docstrings_run():
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module("dalaug.ops.kornia")).failed == 0

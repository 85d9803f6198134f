"""The gap monitor: loss on clean vs augmented versions of the same samples (He et al., Table 2)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dalaug
from dalaug.gap import Gap, measure_gap
from dalaug.ops import CutMix, Mixup
from dalaug.schedule import Fade

CLASSES = 4


def toy_batches(seed: int = 0, n: int = 64, batch: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Images whose class sets their mean colour, plus noise: easy to fit, easy to blur by mixing."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.arange(n) % CLASSES
    centres = 2 * torch.randn(CLASSES, 3, 1, 1, generator=generator)
    images = centres[targets] + 0.5 * torch.randn(n, 3, 8, 8, generator=generator)
    return [(images[i : i + batch], targets[i : i + batch]) for i in range(0, n, batch)]


def toy_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, CLASSES),
    )  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The toy tensors are tiny: with torch's threads competing for a shared 2-core machine,
    # training takes 30x longer than on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    """A toy model trained on the clean batches only."""
    torch.manual_seed(0)
    model = toy_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(40):
        for images, targets in toy_batches():
            loss = F.cross_entropy(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model


@pytest.mark.parametrize(
    "operator", [Mixup(alpha=1.0, num_classes=CLASSES), CutMix(alpha=1.0, num_classes=CLASSES)]
)
def test_a_model_trained_on_clean_data_finds_augmented_data_harder(trained, operator):
    gap = measure_gap(trained, toy_batches(seed=1), [operator])
    assert gap.samples == 64
    assert 0 < gap.clean < gap.augmented and gap.gap == pytest.approx(gap.augmented - gap.clean)


def test_augmented_batches_from_another_pipeline(trained):
    clean = toy_batches(seed=1)
    inverted = [(-images, targets) for images, targets in clean]  # a "policy" that moves colours
    gap = measure_gap(trained, clean, augmented=inverted)
    assert gap.clean < gap.augmented


def test_no_augmentation_means_no_gap(trained):
    batches = toy_batches(seed=1)
    for gap in (
        measure_gap(trained, batches),
        measure_gap(trained, batches, [Mixup(alpha=1.0, num_classes=CLASSES, p=0.0)]),
    ):
        assert gap.augmented == gap.clean and gap.gap == 0


def test_eval_mode_no_grad_and_the_training_state_is_restored(trained):
    trained.train()
    buffers = [b.clone() for b in trained.buffers()]
    measure_gap(trained, toy_batches(seed=1), [Mixup(alpha=1.0, num_classes=CLASSES)])
    assert trained.training
    assert all(torch.equal(a, b) for a, b in zip(buffers, trained.buffers(), strict=True))  # BN stats kept
    assert all(p.grad is None for p in trained.parameters())


def test_repeatable_and_leaves_the_operators_random_stream_alone(trained):
    operator = Mixup(alpha=1.0, num_classes=CLASSES, seed=1)
    first = measure_gap(trained, toy_batches(seed=1), [operator])
    assert measure_gap(trained, toy_batches(seed=1), [operator]) == first
    images, targets = toy_batches(seed=2)[0]
    _, soft = operator(images, targets)
    _, expected = Mixup(alpha=1.0, num_classes=CLASSES, seed=1)(images, targets)
    assert torch.equal(soft, expected)


def test_loaders_over_the_same_samples(photo_folder):
    def loader(seed: int) -> dalaug.Loader:
        return dalaug.Loader(photo_folder, 8, train=True, crop=32, device="cpu", seed=seed)

    model = toy_model()
    # Two clean pipelines with one seed give the same batches: no gap, and every batch is counted.
    same = measure_gap(model, loader(5), augmented=loader(5))
    assert same.gap == 0 and same.samples == 8 * len(loader(5))
    with pytest.raises(ValueError, match="augmented: batch 0 holds other samples"):
        measure_gap(model, loader(5), augmented=loader(6))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, b: measure_gap(nn.Linear, b), "model"),
        (lambda m, b: measure_gap(m, b, Mixup(num_classes=CLASSES)), "operators"),
        (lambda m, b: measure_gap(m, b, [Fade(Mixup(num_classes=CLASSES))]), "operators"),
        (lambda m, b: measure_gap(m, b, seed=1.0), "seed"),
        (lambda m, b: measure_gap(m, []), "clean"),
        (lambda m, b: measure_gap(m, b, augmented=b[:2]), "augmented: 2 batches"),
        (lambda m, b: measure_gap(m, b, augmented=iter(b[:2])), "augmented: ran out"),
    ],
)
def test_errors_name_the_argument(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call(toy_model(), toy_batches())


def test_gap_is_a_plain_record():
    assert Gap(clean=0.5, augmented=2.0, samples=10).gap == 1.5


def test_recalibrated_bn_measures_with_the_clean_batches_own_statistics(trained):
    # Running statistics gathered on other images (as after a phase of Mixup): the plain clean loss
    # depends on them; with recalibrate_bn it does not, and the caller's model keeps its own.
    stale = copy.deepcopy(trained)
    norm = next(m for m in stale.modules() if isinstance(m, nn.BatchNorm2d))
    norm.running_mean += 1.0
    norm.running_var *= 0.25
    stale.train()
    kept = norm.running_mean.clone(), norm.running_var.clone()
    batches = toy_batches(seed=1)
    assert measure_gap(stale, batches).clean != measure_gap(trained, batches).clean
    recalibrated = measure_gap(stale, batches, recalibrate_bn=True)
    assert recalibrated == measure_gap(trained, batches, recalibrate_bn=True)
    assert torch.equal(norm.running_mean, kept[0]) and torch.equal(norm.running_var, kept[1])
    assert stale.training
    with pytest.raises(TypeError, match="recalibrate_bn"):
        measure_gap(stale, batches, recalibrate_bn="yes")


def test_manifold_mixup_mixes_the_hidden_states_of_the_augmented_pass_with_batchnorm_in_eval(trained):
    # He et al.'s Table 2 measures the gap of a Manifold Mixup run: in eval mode the operator would
    # pass the batch through unmixed, and the gap would read exactly 0.
    from dalaug.ops import ManifoldMixup

    model = copy.deepcopy(trained)
    statistics = copy.deepcopy(model[1].state_dict())
    op = ManifoldMixup(alpha=1.0, num_classes=CLASSES, layers=["2"])
    with op.attach(model) as handle:
        gap = measure_gap(model, toy_batches(), [op])
        assert gap.augmented > gap.clean + 0.1
        assert handle.armed is None and not handle.in_eval  # nothing left for the next forward
        assert model.training and all(torch.equal(v, statistics[k]) for k, v in model[1].state_dict().items())
        # Outside the measurement, eval-mode calls pass through again.
        model.eval()
        images, targets = toy_batches()[0]
        assert op(images, targets)[0] is images and handle.armed is None


def test_an_in_place_operator_measures_alike_and_leaves_the_callers_batches_alone(trained):
    batches = toy_batches(seed=1)
    kept = [(images.clone(), targets.clone()) for images, targets in batches]
    copying = measure_gap(trained, batches, [Mixup(alpha=1.0, num_classes=CLASSES)])
    in_place = measure_gap(trained, batches, [Mixup(alpha=1.0, num_classes=CLASSES, inplace=True)])
    assert in_place == copying  # the same seed: the same λ, the same losses
    assert all(torch.equal(a, b) and torch.equal(y, z) for (a, y), (b, z) in zip(batches, kept, strict=True))


def test_any_callable_gets_soft_targets_as_in_the_loader(trained):
    seen = []

    def darken(images, targets):  # a plain callable, as Loader(operators=[...]) calls it
        seen.append(targets.shape)
        return images * 0.5, targets

    gap = measure_gap(trained, toy_batches(seed=1), [darken])
    assert seen and all(shape == (16, CLASSES) for shape in seen) and gap.augmented > gap.clean


def test_a_manifold_mixup_among_random_choices_mixes_the_hidden_states_too(trained):
    from dalaug.ops import ManifoldMixup, RandomChoice

    model = copy.deepcopy(trained)
    op = ManifoldMixup(alpha=1.0, num_classes=CLASSES, layers=["2"])
    hidden = []  # what layer 2 hands on, clean forward then augmented forward
    model[3].register_forward_pre_hook(lambda module, args: hidden.append(args[0].clone()))
    with op.attach(model) as handle:
        gap = measure_gap(model, toy_batches()[:1], [RandomChoice([op])])
        assert handle.armed is None  # nothing left for the next training forward
    clean, augmented = hidden
    assert not torch.equal(clean, augmented) and gap.augmented > gap.clean  # mixed, labels and states


def test_augmented_batches_with_other_kinds_of_targets_are_named(trained):
    clean = toy_batches(seed=1)
    soft = [(images, dalaug.soft_targets(targets, CLASSES)) for images, targets in clean]
    with pytest.raises(ValueError, match=r"augmented: batch 0 has targets shaped \(16, 4\)"):
        measure_gap(trained, clean, augmented=soft)

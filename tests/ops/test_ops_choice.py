"""RandomChoice: picks by its probabilities, reproducibly, and passes params through."""

from __future__ import annotations

import pytest
import scipy.stats
import torch

from dalaug.ops import CutMix, Cutout, Mixup, RandomChoice, soft_targets


def test_random_choice_frequencies_follow_p():
    images = torch.zeros(2, 1, 4, 4)
    ops = [Mixup(num_classes=2), CutMix(num_classes=2), Cutout(size=2)]
    choice = RandomChoice(ops, p=[0.2, 0.3, 0.5], seed=0)
    counts = torch.bincount(torch.tensor([choice.sample(images).index for _ in range(3000)]))
    assert scipy.stats.chisquare(counts.numpy(), [600, 900, 1500]).pvalue > 1e-3


def test_random_choice_is_reproducible_and_applies_the_chosen_op(make_batch):
    images, targets = make_batch()
    make = lambda: RandomChoice(  # noqa: E731
        [Mixup(num_classes=10, seed=1), CutMix(num_classes=10, seed=2)], seed=0
    )
    first, again = make(), make()
    for _ in range(4):
        a, b = first(images, targets), again(images, targets)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    params = first.sample(images)
    expected = first.ops[params.index].apply(images, targets, params.params)
    out = first.apply(images, targets, params)
    assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])


def test_random_choice_with_a_cpu_generator_is_reproducible(make_batch):
    images, targets = make_batch()
    choice = RandomChoice([Mixup(num_classes=10), CutMix(num_classes=10)])
    outs = [choice(images, targets, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(outs[0][0], outs[1][0])


@pytest.mark.parametrize(
    ("ops", "p", "error", "match"),
    [
        ([], None, TypeError, "ops"),
        ([Mixup(num_classes=2), "cutmix"], None, TypeError, "ops"),
        ([Mixup(num_classes=2)], [0.5, 0.5], ValueError, "one probability per op"),
        ([Mixup(num_classes=2), Cutout(size=1)], [0.5, 0.6], ValueError, "p must sum to 1"),
        (
            [Mixup(num_classes=2), Cutout(size=1)],
            [-0.5, 1.5],
            ValueError,
            r"p must lie in \[0, 1\]",
        ),
    ],
)
def test_random_choice_rejects_bad_arguments(ops, p, error, match):
    with pytest.raises(error, match=match):
        RandomChoice(ops, p)


def test_a_passed_generator_drives_the_pick_and_never_the_global_rng(make_batch):
    images, targets = make_batch()
    choice = RandomChoice([Mixup(num_classes=10), CutMix(num_classes=10), Cutout(size=4, num_classes=10)])
    global_state = torch.random.get_rng_state()
    picks = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(11)
        picks.append([choice.sample(images, generator).index for _ in range(20)])
        torch.manual_seed(len(picks))  # the global RNG has no say in the picks
        global_state = torch.random.get_rng_state()
        choice(images, targets, generator=generator)
        assert torch.equal(torch.random.get_rng_state(), global_state)
    assert picks[0] == picks[1] and len(set(picks[0])) > 1


def _off(op: Mixup, how: str) -> Mixup:
    if how == "enabled":
        op.enabled = False
    elif how == "mixup_enabled":
        op.mixup_enabled = False
    else:
        op.p = 0.0
    return op


@pytest.mark.parametrize("how", ["enabled", "mixup_enabled", "p"])
def test_a_picked_operator_that_is_off_passes_the_batch_through(make_batch, how):
    images, targets = make_batch()
    ops = [_off(Mixup(num_classes=10, label_smoothing=0.1), how), _off(CutMix(num_classes=10), how)]
    choice = RandomChoice(ops, seed=0)
    picked = set()
    for _ in range(12):
        params = choice.sample(images)
        picked.add(params.index)
        out, soft = choice.apply(images, targets, params)
        assert params.params is None and torch.equal(out, images)
        # Each operator's own soft targets: smoothed by the Mixup, not by the CutMix.
        assert torch.equal(soft, soft_targets(targets, 10, ops[params.index].label_smoothing))
        assert torch.equal(choice(images, targets)[0], images)
    assert picked == {0, 1}

"""The phase schedule: lookup for every variant, the swap at the boundary, resuming, swap cost."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

import pytest
import torch

import dalaug
from benchmarks.report import rss_mib
from dalaug.config import LoaderConfig
from dalaug.ops import CutMix, Mixup
from dalaug.policies import AutoAugment
from dalaug.schedule import Fade, Phase, Schedule, early_stop, fade_out, refine

CROP = 32
BATCH = 8
SEED = 3
NUM_CLASSES = 3  # the shared photo_folder fixture
STEP = 0.1  # seconds a heavy-phase "training step" takes: time for the next loader to build


def loader(folder, **options) -> dalaug.Loader:
    return dalaug.Loader(folder, BATCH, train=True, crop=CROP, device="cpu", seed=SEED, **options)


def first_batch(source: dalaug.Loader, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    source.set_epoch(epoch)
    for images, targets in source:
        return images, targets
    raise AssertionError("empty epoch")


# --- phases and lookup -----------------------------------------------------------------------------


def mixup() -> Mixup:
    return Mixup(alpha=1.0, num_classes=NUM_CLASSES)


AA = AutoAugment()


def variants() -> dict[str, tuple[list[Phase], list[tuple[int, int, object, int]]]]:
    """Each variant: its phases and, per epoch, (phase index, epoch in phase, policy, operators)."""
    heavy = Phase(3, policy="autoaugment", operators=[mixup()], name="heavy")
    return {
        "hard switch": (
            refine(heavy, 2),
            [(0, k, AA, 1) for k in range(3)] + [(1, 0, None, 0), (1, 1, None, 0)],
        ),
        "no refinement": ([heavy], [(0, k, AA, 1) for k in range(3)]),
        "fade out": (
            fade_out(heavy, 2, attribute="alpha"),
            [(0, k, AA, 1) for k in range(3)] + [(1, 0, None, 1), (1, 1, None, 1)],
        ),
        "early-stopped mixup": (
            early_stop(Phase(4, operators=[mixup()], name="mixup"), 1),
            [(0, 0, None, 1)] + [(1, k, None, 0) for k in range(3)],
        ),
        "moderate + refinement": (
            refine(Phase(2, name="moderate"), 1, options={"flip": False, "scale": (1.0, 1.0)}),
            [(0, 0, None, 0), (0, 1, None, 0), (1, 0, None, 0)],
        ),
    }


@pytest.mark.parametrize("variant", list(variants()))
def test_phase_lookup_for_every_variant(variant):
    phases, expected = variants()[variant]
    schedule = Schedule(phases)
    assert schedule.epochs == len(expected)
    for epoch, (index, in_phase, policy, num_ops) in enumerate(expected):
        at = schedule.phase_at(epoch)
        assert (at.index, at.epoch_in_phase, at.phase.policy) == (index, in_phase, policy)
        assert at.phase is phases[index]
        assert len(schedule.operators_at(epoch)) == num_ops
    for outside in (-1, schedule.epochs):
        with pytest.raises(ValueError, match="epoch"):
            schedule.phase_at(outside)


def test_refinement_phase_is_clean_and_carries_the_hints():
    heavy = Phase(5, policy="randaugment", operators=[mixup()], name="heavy")
    clean = refine(heavy, 3, lr=1e-4, options={"flip": False})[1]
    assert (clean.epochs, clean.policy, clean.operators, clean.lr, clean.name) == (
        3,
        None,
        (),
        1e-4,
        "refine",
    )
    template = LoaderConfig(batch_size=8, train=True, shuffle=True, drop_last=True, policy="autoaugment")
    assert clean.loader_config(template) == template.replace(policy=None, flip=False)


def test_fade_decays_a_copy_linearly_and_leaves_the_operator_alone():
    op = Mixup(alpha=2.0, num_classes=NUM_CLASSES, p=0.8)
    schedule = Schedule(fade_out(Phase(1, operators=[op]), 4, attribute="alpha"))
    faded = [schedule.operators_at(epoch)[0] for epoch in range(1, 5)]
    assert [f.alpha for f in faded] == pytest.approx([2.0, 1.5, 1.0, 0.5])
    assert all(type(f) is Mixup and f is not op and f.p == 0.8 for f in faded)
    assert (op.alpha, op.p) == (2.0, 0.8)
    assert schedule.operators_at(0) == [op]  # the heavy phase hands out the operator itself


def test_fade_of_p_and_a_faded_operator_still_mixes():
    cutmix = CutMix(alpha=1.0, num_classes=NUM_CLASSES, p=1.0, seed=0)
    phases = [Phase(2, operators=[Fade(cutmix, "p")]), Phase(1)]
    schedule = Schedule(phases)
    assert [op.p for op in schedule.operators_at(0) + schedule.operators_at(1)] == [1.0, 0.5]
    assert schedule.operators_at(2) == []
    images, soft = schedule.operators_at(1)[0](torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]))
    assert soft.shape == (4, NUM_CLASSES) and torch.allclose(soft.sum(1), torch.ones(4))


def test_lr_hints():
    heavy = Phase(2)
    absolute = Schedule(refine(heavy, 1, lr=1e-4))
    scaled = Schedule(refine(heavy, 1, lr_scale=0.1))
    assert [absolute.lr_at(e, 0.1) for e in range(3)] == [0.1, 0.1, 1e-4]
    assert [scaled.lr_at(e, 0.1) for e in range(3)] == pytest.approx([0.1, 0.1, 0.01])
    with pytest.raises(ValueError, match="base_lr"):
        absolute.lr_at(0, -1.0)


def test_every_rank_switches_at_the_same_epoch():
    # phase_at, operators_at and lr_at read nothing but the epoch and the phases (no rank, no
    # clock, no state), so independently built schedules agree, whatever their cursor.
    op = mixup()
    ranks = [Schedule(fade_out(Phase(3, policy="autoaugment", operators=[op]), 3)) for _ in range(4)]
    ranks[1].load_state_dict({"epoch": 4})
    for epoch in range(ranks[0].epochs):
        answers = {
            (r.phase_at(epoch).index, tuple(o.p for o in r.operators_at(epoch)), r.lr_at(epoch, 0.1))
            for r in ranks
        }
        assert len(answers) == 1


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Phase(0), "epochs"),
        (lambda: Phase(1.5), "epochs"),
        (lambda: Phase(True), "epochs"),
        (lambda: Phase(1, policy="autoaugmentt"), "policy"),
        (lambda: Phase(1, operators=[3]), "operators"),
        (lambda: Phase(1, operators=mixup()), "operators"),
        (lambda: Phase(1, lr=0.1, lr_scale=0.5), "lr, lr_scale"),
        (lambda: Phase(1, lr=-1.0), "lr"),
        (lambda: Phase(1, lr_scale=float("inf")), "lr_scale"),
        (lambda: Phase(1, name=3), "name"),
        (lambda: Phase(1, options={"policy": None}), "options"),
        (lambda: Phase(1, options=[("flip", False)]), "options"),
        (lambda: Fade(mixup(), "beta"), "attribute"),
        (lambda: Fade(lambda x, y: (x, y)), "op"),
        (lambda: Fade(Mixup(num_classes=3, p=0.0)), "op"),
        (lambda: Schedule([]), "phases"),
        (lambda: Schedule(Phase(1)), "phases"),
        (lambda: Schedule([Phase(1), "refine"]), "phases"),
        (lambda: Schedule([Phase(1)], loader="data/train"), "loader"),
        (lambda: refine("heavy", 2), "heavy"),
        (lambda: refine(Phase(1), 0), "epochs"),
        (lambda: fade_out(Phase(1), 2), "heavy"),
        (lambda: early_stop(Phase(3), 3), "epochs"),
        (lambda: Schedule([Phase(1)]).loader_at(0), "loader"),
        (lambda: Schedule([Phase(1)]).load_state_dict({"epoch": 2}), "state"),
        (lambda: Schedule([Phase(1)]).load_state_dict({"step": 0}), "state"),
    ],
)
def test_errors_name_the_argument(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


# --- the run: heavy augmentation, then refinement on the clean pipeline ------------------------------


@dataclass
class Epoch:
    policy: object
    loader_id: int
    asked: float  # when the loop asked for the epoch's loader
    first: tuple[torch.Tensor, torch.Tensor]  # as the loader gave it
    first_mixed: tuple[torch.Tensor, torch.Tensor]  # after the epoch's operators
    ids: list[torch.Tensor]
    waits: list[float]  # seconds the loop waited for each batch (the first: from loader_at on)


@dataclass
class Run:
    epochs: list[Epoch]
    builds: list[tuple[object, str, float]]  # (policy, thread, finished) of each loader built


@pytest.fixture(scope="module")
def run(photo_folder):
    """An uninterrupted run of Algorithm 1: 2 epochs AutoAugment + Mixup, then 2 clean epochs."""
    template = loader(photo_folder, policy=AA)
    builds = []
    build = template.with_config

    def recorded(config, *args):  # a spy: which thread built each loader, and when it was done
        made = build(config, *args)
        builds.append((config.policy, threading.current_thread().name, time.perf_counter()))
        return made

    template.with_config = recorded
    op = Mixup(alpha=1.0, num_classes=NUM_CLASSES, seed=0)
    schedule = Schedule(refine(Phase(2, policy="autoaugment", operators=[op]), 2), template)
    epochs = []
    for epoch in schedule:
        asked = start = time.perf_counter()
        current = schedule.loader_at(epoch)
        operators = schedule.operators_at(epoch)
        first = first_mixed = None
        ids, waits = [], []
        for images, targets in current:
            waits.append(time.perf_counter() - start)
            ids.append(current.sample_ids.clone())
            if first is None:
                first = (images.clone(), targets.clone())
            for operator in operators:
                images, targets = operator(images, targets)
            if first_mixed is None:
                first_mixed = (images, targets)
            if operators:
                time.sleep(STEP)  # the heavy phase's training step
            start = time.perf_counter()
        epochs.append(Epoch(current.config.policy, id(current), asked, first, first_mixed, ids, waits))
    assert schedule.state_dict() == {"epoch": 4}
    schedule.close()
    return Run(epochs, builds)


def test_first_refinement_batch_is_clean_and_unmixed(run, photo_folder):
    heavy, refinement = run.epochs[1], run.epochs[2]
    assert (heavy.policy, refinement.policy) == (AA, None)
    assert heavy.loader_id != refinement.loader_id  # a new pipeline, not a flag on the old one
    # The heavy epochs mix: soft targets, rows not one-hot.
    images, soft = heavy.first_mixed
    assert soft.shape == (BATCH, NUM_CLASSES) and (soft.max(dim=1).values < 1).any()
    # The first refinement batch is exactly what a fresh clean pipeline gives for that epoch...
    reference_images, reference_targets = first_batch(loader(photo_folder, policy=None), 2)
    images, targets = refinement.first_mixed
    assert torch.equal(images, reference_images)
    assert torch.equal(targets, reference_targets) and targets.dtype == torch.int64 and targets.ndim == 1
    # ...and the check has teeth: with the same seed at the same epoch, the policy changes pixels.
    clean_epoch0, _ = first_batch(loader(photo_folder, policy=None), 0)
    assert not torch.allclose(run.epochs[0].first[0], clean_epoch0, atol=0.1)


def test_consecutive_epochs_of_a_phase_share_a_loader(run):
    ids = [epoch.loader_id for epoch in run.epochs]
    assert ids[0] == ids[1] != ids[2] == ids[3]


def test_the_clean_loader_is_built_ahead_in_the_background(run):
    [(policy, thread, finished)] = run.builds  # the heavy loader is the template itself
    assert policy is None and thread.startswith("dalaug-schedule")
    assert run.epochs[1].asked < finished < run.epochs[2].asked


def test_no_stall_at_the_swap(run):
    # A generous bound for a shared CPU; the benchmark has the real figures at a realistic size. At
    # this test's tiny batches (about 2 ms each) the first batch of any fresh pipeline costs more
    # than a batch (start-up), so the swap is compared with starting the first phase's pipeline.
    steady = statistics.median(w for epoch in run.epochs[2:] for w in epoch.waits[1:])
    fresh_start = run.epochs[0].waits[0]
    assert run.epochs[2].waits[0] < 5 * max(steady, fresh_start), (run.epochs[2].waits[0], fresh_start)


def test_resume_at_the_boundary_gives_the_same_run(run, photo_folder):
    op = Mixup(alpha=1.0, num_classes=NUM_CLASSES, seed=0)
    phases = refine(Phase(2, policy="autoaugment", operators=[op]), 2)
    with Schedule(phases, loader(photo_folder, policy=None)) as resumed:
        resumed.load_state_dict({"epoch": 2})
        assert list(resumed) == [2, 3] and resumed.state_dict() == {"epoch": 4}
        for epoch in (2, 3):
            current = resumed.loader_at(epoch)
            assert current.config.policy is None and resumed.operators_at(epoch) == []
            batches = [(images, targets, current.sample_ids.clone()) for images, targets in current]
            assert all(torch.equal(a, b) for a, (_, _, b) in zip(run.epochs[epoch].ids, batches, strict=True))
            if epoch == 2:
                assert torch.equal(batches[0][0], run.epochs[2].first[0])


def test_resume_mid_fade_gives_the_same_operators_and_order(photo_folder):
    def phases():
        return fade_out(
            Phase(2, operators=[Mixup(alpha=1.0, num_classes=NUM_CLASSES, seed=0)]), 3, attribute="alpha"
        )

    seen = {}
    with Schedule(phases(), loader(photo_folder)) as whole:
        for epoch in whole:
            current = whole.loader_at(epoch)
            ids = [current.sample_ids.clone() for _ in current]
            seen[epoch] = (current.config, [op.alpha for op in whole.operators_at(epoch)], ids)
            if epoch == 2:
                state = whole.state_dict()
    assert state == {"epoch": 3}
    with Schedule(phases(), loader(photo_folder)) as resumed:
        resumed.load_state_dict(state)
        for epoch in resumed:
            current = resumed.loader_at(epoch)
            spec, alphas, ids = seen[epoch]
            assert current.config == spec
            assert [op.alpha for op in resumed.operators_at(epoch)] == alphas
            assert all(torch.equal(a, current.sample_ids) for a, _ in zip(ids, current, strict=True))


def test_state_round_trip():
    schedule = Schedule(refine(Phase(3), 2))
    assert schedule.state_dict() == {"epoch": 0}
    for epoch in schedule:
        if epoch == 2:
            break
    state = schedule.state_dict()
    other = Schedule(refine(Phase(3), 2))
    other.load_state_dict(state)
    assert other.state_dict() == state == {"epoch": 3} and list(other) == [3, 4]


def test_a_template_with_the_right_policy_is_used_as_is(photo_folder):
    template = loader(photo_folder)
    with Schedule(early_stop(Phase(3, operators=[mixup()]), 1), template, prebuild=False) as schedule:
        assert all(schedule.loader_at(epoch) is template for epoch in range(3))


def test_phase_options_are_checked_when_the_schedule_is_built(photo_folder):
    template = loader(photo_folder)
    with pytest.raises(ValueError, match=r"phases\[1\].options: 'flp'"):
        Schedule([Phase(1), Phase(1, options={"flp": False})], template)
    with pytest.raises(ValueError, match=r"phases\[1\].options: crop: expected a positive int"):
        Schedule([Phase(1), Phase(1, options={"crop": 0})], template)
    with pytest.raises(ValueError, match=r"phases\[1\].options: resize: sets an evaluation loader"):
        Schedule([Phase(1), Phase(1, options={"resize": 64})], template)  # a training loader would ignore it


def test_host_memory_does_not_grow_across_swaps(photo_folder):
    # Cheap swaps (two clean configurations) so the test stays fast; the benchmark swaps
    # AutoAugment and clean pipelines 20 times.
    phases = [Phase(1, options={"flip": epoch % 2 == 0}) for epoch in range(21)]  # 20 swaps
    sizes = []
    with Schedule(phases, loader(photo_folder)) as schedule:
        for epoch in schedule:
            for _ in schedule.loader_at(epoch):
                pass
            sizes.append(rss_mib())
    baseline = sizes[2]  # after the first swaps: allocator pools and imports are warm
    assert max(sizes[2:]) < 1.25 * baseline, sizes

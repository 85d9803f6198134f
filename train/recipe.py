"""A recipe: one experiment as a small, validated Python object, read from a file in ``pipelines/``.

A recipe file defines ``recipe = Recipe(...)`` and reads top to bottom as the experiment: data,
crop, policy and batch operators (in the phases), optimizer, learning-rate schedule.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
from collections.abc import Sequence
from pathlib import Path

from dalaug import Phase

LR_SCHEDULES = ("step", "cosine")
# Fields that say how a run is kept (checkpoints, signals), not what it trains: a resume may change them.
RUN_KEEPING = ("checkpoint_steps", "checkpoint_minutes", "stop_grace")
PRECISIONS = ("bf16", "fp16", "fp32")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything one training run needs besides the data path.

    Args:
        name: run name (the output folder's default name).
        model: a name for :func:`train.models.create_model` (``preact_resnet18``, ``resnet50``...).
        phases: the phase schedule (:class:`dalaug.Phase` list), e.g. heavy augmentation, then
            a clean refinement; the total epochs are their sum.
        data: folder with ``train/`` and ``val/`` (or ``test/``) ImageFolders; None: the embedded
            digits data set, written on first use. ``--data`` overrides it.
        model_kwargs: extra arguments of the model constructor.
        crop: training and evaluation crop.
        eval_resize: shorter side before the evaluation centre crop (default crop / 0.875).
        scale: random-resized-crop area range.
        flip: random horizontal flips (off for digits).
        batch_size: per process.
        lr: learning rate at the start of training (after warm-up).
        momentum, nesterov, weight_decay: SGD settings.
        lr_schedule: ``"step"`` (divide by ``1/gamma`` at each of ``milestones``) or ``"cosine"``.
        cosine_epochs: the epoch where the cosine reaches 0 (default: the end of training). Set it
            to the augmented phases' length when the refinement after them has its own ``lr``, as
            the paper refines its cosine-trained models (WideResNet with AutoAugment, Shake-Shake);
            every phase that starts from there on must then set ``lr``.
        milestones: epochs where the step schedule divides the rate (an epoch listed twice divides
            it twice).
        gamma: the step schedule's factor.
        warmup_epochs: linear warm-up from ``lr / 10`` (per batch).
        label_smoothing: applied to the targets when no batch operator makes them soft.
        precision: ``"bf16"``, ``"fp16"`` or ``"fp32"`` autocast on a GPU (the CPU always uses fp32).
        channels_last: memory format on a GPU.
        gap_samples: training samples the gap monitor measures each epoch (0: off).
        seed: seed of the loaders, the operators and the model's initialisation.
        checkpoint_steps: also checkpoint mid-epoch every this many training steps (0: off). Bounds
            the work a SIGKILL or a lost node costs in steps.
        checkpoint_minutes: also checkpoint mid-epoch when this many minutes have passed since the
            last checkpoint (0: off). The default, 10, costs well under 1% of training time
            (BENCHMARKS.md, "Checkpoints and preemption") and bounds what a SIGKILL loses on long
            epochs. Every epoch still ends with a checkpoint.
        stop_grace: seconds the scheduler leaves between its SIGTERM and its SIGKILL (SLURM's
            KillWait and Kubernetes' terminationGracePeriodSeconds are 30 by default). The ranks
            agree on a stop often enough to answer a signal within a tenth of it, and a checkpoint
            that took more than half of it is warned about.

    The last three say how the run is kept, not what it trains: a resume may change them.
    """

    name: str
    model: str
    phases: Sequence[Phase]
    data: str | None = None
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    crop: int = 224
    eval_resize: int | None = None
    scale: tuple[float, float] = (0.08, 1.0)
    flip: bool = True
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    lr_schedule: str = "step"
    cosine_epochs: int | None = None
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    precision: str = "bf16"
    channels_last: bool = True
    gap_samples: int = 256
    seed: int = 0
    checkpoint_steps: int = 0
    checkpoint_minutes: float = 10.0
    stop_grace: float = 30.0

    def __post_init__(self) -> None:
        if not self.phases or not all(isinstance(p, Phase) for p in self.phases):
            raise ValueError(f"phases: expected a non-empty list of dalaug.Phase, got {self.phases!r}")
        for name in ("crop", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < math.inf):
            raise ValueError(f"lr: expected a positive number, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum: expected a number in [0, 1), got {self.momentum!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: expected a number >= 0, got {self.weight_decay!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule: expected one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if any(not isinstance(m, int) or not 0 < m < self.epochs for m in self.milestones):
            raise ValueError(f"milestones: expected epochs in (0, {self.epochs}), got {self.milestones!r}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma: expected a number in (0, 1], got {self.gamma!r}")
        if not isinstance(self.warmup_epochs, int) or not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                f"warmup_epochs: expected an int in [0, {self.epochs}), got {self.warmup_epochs!r}"
            )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing: expected a number in [0, 1), got {self.label_smoothing!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
        if not isinstance(self.gap_samples, int) or self.gap_samples < 0:
            raise ValueError(f"gap_samples: expected an int >= 0, got {self.gap_samples!r}")
        steps = self.checkpoint_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"checkpoint_steps: expected an int >= 0 (0: off), got {steps!r}")
        for name in ("checkpoint_minutes", "stop_grace"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
        if self.cosine_epochs is not None:
            self._check_cosine_epochs()

    def _check_cosine_epochs(self) -> None:
        end = self.cosine_epochs
        if self.lr_schedule != "cosine":
            raise ValueError(f"cosine_epochs: only with lr_schedule='cosine', not {self.lr_schedule!r}")
        if isinstance(end, bool) or not isinstance(end, int) or not self.warmup_epochs < end <= self.epochs:
            raise ValueError(
                f"cosine_epochs: expected an int in ({self.warmup_epochs}, {self.epochs}], got {end!r}"
            )
        start = 0
        for index, phase in enumerate(self.phases):
            if start >= end and phase.lr is None:
                raise ValueError(
                    f"cosine_epochs: the rate is 0 from epoch {end}, where phases[{index}] "
                    f"({phase.name or 'unnamed'}) starts at {start}: give that phase an lr"
                )
            start += phase.epochs

    @property
    def epochs(self) -> int:
        return sum(phase.epochs for phase in self.phases)

    def base_lr(self, progress: float) -> float:
        """The schedule's rate at ``progress`` epochs (fractional: the rate changes per batch)."""
        if progress < self.warmup_epochs:
            return self.lr * (0.1 + 0.9 * progress / self.warmup_epochs)
        if self.lr_schedule == "cosine":
            end = self.cosine_epochs or self.epochs
            if progress >= end:
                return 0.0
            span = end - self.warmup_epochs
            return 0.5 * self.lr * (1 + math.cos(math.pi * (progress - self.warmup_epochs) / span))
        return self.lr * self.gamma ** sum(progress >= m for m in self.milestones)

    def replace(self, **changes) -> Recipe:
        return dataclasses.replace(self, **changes)


def load_recipe(path: str | Path) -> Recipe:
    """Execute a recipe file and return its ``recipe`` object.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file fails to run or defines no ``recipe``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe: {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise ValueError(f"recipe: {str(path)!r} failed to load: {type(error).__name__}: {error}") from error
    recipe = getattr(module, "recipe", None)
    if not isinstance(recipe, Recipe):
        raise ValueError(f"recipe: {str(path)!r} must define `recipe = Recipe(...)`, found {recipe!r}")
    return recipe


def with_epochs(recipe: Recipe, epochs: int) -> Recipe:
    """Scale every phase (and the milestones) to ``epochs`` in total, keeping their proportions.

    A ``cosine_epochs`` at a phase boundary stays at that boundary."""
    if not isinstance(epochs, int) or epochs < len(recipe.phases):
        raise ValueError(f"epochs: expected an int >= {len(recipe.phases)} (one per phase), got {epochs!r}")
    scale = epochs / recipe.epochs
    lengths = [max(1, round(p.epochs * scale)) for p in recipe.phases]
    lengths[0] += epochs - sum(lengths)  # the rounding remainder goes to the first phase
    phases = [dataclasses.replace(p, epochs=n) for p, n in zip(recipe.phases, lengths, strict=True)]
    # Milestones that land on one epoch stay apart: each divides the rate, so the last stage's
    # rate is reached however short the run.
    milestones = tuple(sorted(min(epochs - 1, max(1, round(m * scale))) for m in recipe.milestones))
    warmup = min(round(recipe.warmup_epochs * scale), epochs - 1)
    cosine = recipe.cosine_epochs
    if cosine is not None:
        ends = list(itertools.accumulate(p.epochs for p in recipe.phases))
        new_ends = list(itertools.accumulate(lengths))
        cosine = (
            new_ends[ends.index(cosine)]
            if cosine in ends
            else min(epochs, max(warmup + 1, round(cosine * scale)))
        )
    return dataclasses.replace(
        recipe, phases=phases, milestones=milestones, warmup_epochs=warmup, cosine_epochs=cosine
    )

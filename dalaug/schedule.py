"""Phase schedules: heavy augmentation, then a refinement phase on the clean pipeline.

He et al., "Data Augmentation Revisited: Rethinking the Distribution Gap between Clean and Augmented
Data" (2019): heavy augmentation (Mixup, CutMix, AutoAugment) leaves a gap between the clean and the
augmented training distributions; training N epochs with it and then M epochs with only crop + flip
at a small learning rate (their Algorithm 1, "refinement") closes the gap and raises accuracy. Zou
et al. find that Mixup helps mostly early in training, so early-stopped Mixup is a schedule too.

A :class:`Schedule` is a list of :class:`Phase` objects and a pure function of the epoch:
:meth:`Schedule.phase_at`, :meth:`Schedule.operators_at` and :meth:`Schedule.lr_at` depend on the
epoch alone, so every rank of a distributed run switches at the same epoch and a run resumed at
epoch k sees what an uninterrupted run saw. :meth:`Schedule.loader_at` hands out a separate
:class:`~dalaug.Loader` per loader configuration, built ahead of the boundary in a background thread; the swap
is a new DALI pipeline, not a flag flipped on one that other threads or processes hold a copy of
(the failure of timm's ``mixup_off_epoch`` with persistent workers).

The variants of the papers are lists of phases: :func:`refine` (Algorithm 1, also on top of
"moderate" augmentation), :func:`fade_out` (p or α decaying to 0), :func:`early_stop` (operators
only in the first epochs); the "no refinement" baseline is the single heavy phase.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from numbers import Real
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from nvidia.dali.backend import ReleaseUnusedMemory

from dalaug.compose import apply_operators
from dalaug.config import LoaderConfig
from dalaug.ops.kornia import as_operator
from dalaug.policies import PolicyLike, resolve_policy
from dalaug.views import BatchSamplerView, SamplerView

if TYPE_CHECKING:
    from dalaug.loader import Loader

# A batch operator: ``op(images, targets) -> (images, soft_targets (B, C))`` (see dalaug.ops).
Operator = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Fade:
    """An operator whose ``p`` or ``alpha`` decays linearly to 0 over the phase that holds it.

    In epoch ``k`` of an ``n``-epoch phase the operator runs with ``value * (1 - k / n)``: full
    strength in the phase's first epoch, ``value / n`` in its last, and off from the next phase on.
    Each epoch gets a modified copy of ``op``; the operator passed in is never changed. The copy is
    shallow, so a seeded operator's generator carries on across epochs as it would unfaded.

    Args:
        op: a batch operator with a positive ``p`` or ``alpha`` attribute (e.g. ``dalaug.ops.Mixup``,
            or a kornia augmentation, whose ``p`` fades; see ``dalaug.ops.KorniaOp``).
        attribute: ``"p"`` (probability, as the paper faded CutMix) or ``"alpha"`` (the Beta
            parameter, as the paper faded Mixup's γ).

    Example:
        >>> from dalaug.ops import Mixup
        >>> fade = Fade(Mixup(alpha=1.0, num_classes=10), "alpha")
        >>> fade.at(1, 4).alpha
        0.75
    """

    op: Operator
    attribute: Literal["p", "alpha"] = "p"

    def __post_init__(self) -> None:
        if self.attribute not in ("p", "alpha"):
            raise ValueError(f"attribute: expected 'p' or 'alpha', got {self.attribute!r}")
        if isinstance(self.op, Fade) or not callable(self.op):
            raise TypeError(f"op: expected a batch operator (a callable), got {self.op!r}")
        object.__setattr__(self, "op", as_operator(self.op))
        value = getattr(self.op, self.attribute, None)
        if isinstance(value, bool) or not isinstance(value, Real) or not value > 0:
            raise ValueError(
                f"op: {type(self.op).__name__} needs a positive number in .{self.attribute} to "
                f"fade, got {value!r}"
            )

    def at(self, epoch_in_phase: int, phase_epochs: int) -> Operator:
        """A copy of the operator at its strength in epoch ``epoch_in_phase`` of its phase.

        Args:
            epoch_in_phase: 0-based epoch within the phase, below ``phase_epochs``.
            phase_epochs: the phase's length.

        Returns:
            A copy of ``op`` with the decayed ``p`` or ``alpha``.
        """
        value = float(getattr(self.op, self.attribute)) * (1.0 - epoch_in_phase / phase_epochs)
        if dataclasses.is_dataclass(self.op):
            return dataclasses.replace(self.op, **{self.attribute: value})
        faded = copy.copy(self.op)
        setattr(faded, self.attribute, value)
        return faded


def unfaded(op: Operator | Fade) -> Operator:
    """The operator itself: a :class:`Fade`'s operator, or ``op``."""
    return op.op if isinstance(op, Fade) else op


@dataclasses.dataclass(frozen=True)
class Phase:
    """A stretch of training with one loader policy and one list of batch operators.

    Args:
        epochs: length in epochs (> 0).
        policy: the loader's policy in this phase: ``"autoaugment"``, ``"randaugment"``,
            ``"trivialaugment"``, a policy object, or None for the clean pipeline (crop + flip).
        operators: batch operators run in order on each batch, each on the previous one's output
            (may be empty); wrap one in :class:`Fade` to decay its ``p`` or ``alpha`` over the phase.
            kornia augmentation modules are taken too (wrapped in ``dalaug.ops.KorniaOp``).
        lr: a learning rate for this phase (absolute), e.g. the paper's 1e-4 for ImageNet refinement.
        lr_scale: or a multiplier of the loop's own learning rate. At most one of the two.
        name: a label to log.
        options: other :class:`~dalaug.Loader` arguments that differ in this phase, e.g.
            ``{"flip": False, "scale": (1.0, 1.0)}`` for the paper's refinement of a model trained
            with moderate augmentation, which drops crop and flip as well.

    Example:
        >>> from dalaug.ops import Mixup
        >>> heavy = Phase(400, policy="autoaugment", operators=[Mixup(num_classes=100)], name="heavy")
        >>> heavy.epochs, type(heavy.policy).__name__
        (400, 'AutoAugment')
    """

    epochs: int
    policy: str | PolicyLike | None = None
    operators: Sequence[Operator | Fade] = ()
    lr: float | None = None
    lr_scale: float | None = None
    name: str = ""
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs: expected a positive int, got {self.epochs!r}")
        # Resolved once, so that phases naming the same policy compare equal and share a loader.
        object.__setattr__(self, "policy", resolve_policy(self.policy))
        if isinstance(self.operators, (str, bytes)) or not isinstance(self.operators, Sequence):
            raise TypeError(f"operators: expected a list of batch operators, got {self.operators!r}")
        for op in self.operators:
            if not (isinstance(op, Fade) or callable(op)):
                raise TypeError(f"operators: expected batch operators (callables), got {op!r}")
        object.__setattr__(self, "operators", tuple(as_operator(op) for op in self.operators))
        if self.lr is not None and self.lr_scale is not None:
            raise ValueError(f"lr, lr_scale: give at most one, got lr={self.lr}, lr_scale={self.lr_scale}")
        for name in ("lr", "lr_scale"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, Real) or not 0 < value < math.inf
            ):
                raise ValueError(f"{name}: expected a finite number > 0 or None, got {value!r}")
        if not isinstance(self.name, str):
            raise TypeError(f"name: expected a str, got {self.name!r}")
        if not isinstance(self.options, Mapping) or not all(isinstance(k, str) for k in self.options):
            raise TypeError(f"options: expected a dict of Loader arguments, got {self.options!r}")
        if "policy" in self.options:
            raise ValueError("options: give the policy as Phase(policy=...), not in options")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def loader_config(self, template: LoaderConfig) -> LoaderConfig:
        """The phase's whole loader configuration: ``template`` with this phase's policy and options.
        Phases with equal configurations share one loader."""
        return template.replace(policy=self.policy, **self.options)


class PhaseAt(NamedTuple):
    """What :meth:`Schedule.phase_at` answers: the phase's index, the phase, the epoch within it."""

    index: int
    phase: Phase
    epoch_in_phase: int


def refine(
    heavy: Phase,
    epochs: int,
    *,
    lr: float | None = None,
    lr_scale: float | None = None,
    name: str = "refine",
    options: Mapping[str, Any] | None = None,
) -> list[Phase]:
    """Algorithm 1 of He et al.: ``heavy``, then ``epochs`` epochs of the clean pipeline, no operators.

    The same call refines on top of "moderate" augmentation: pass the moderate phase as ``heavy``
    and, as the paper does there, drop crop and flip too with ``options={"flip": False, "scale":
    (1.0, 1.0)}``. The "no refinement" baseline is ``[heavy]`` alone.

    Args:
        heavy: the augmented phase (N epochs).
        epochs: refinement epochs M.
        lr: learning rate of the refinement (the paper: the last stage's rate, or 1e-4 on ImageNet).
        lr_scale: or a multiplier of the loop's learning rate.
        name: the refinement phase's name.
        options: Loader arguments changed for the refinement (see :class:`Phase`).

    Returns:
        ``[heavy, Phase(epochs, policy=None, operators=[], ...)]``.

    Example:
        >>> phases = refine(Phase(400, policy="autoaugment", name="heavy"), 50)
        >>> [(p.name, p.epochs, p.policy) for p in phases][1]
        ('refine', 50, None)
    """
    _check_phase("heavy", heavy)
    clean = Phase(epochs, policy=None, lr=lr, lr_scale=lr_scale, name=name, options=options or {})
    return [heavy, clean]


def fade_out(
    heavy: Phase,
    epochs: int,
    *,
    attribute: Literal["p", "alpha"] = "p",
    lr: float | None = None,
    lr_scale: float | None = None,
    name: str = "fade",
) -> list[Phase]:
    """``heavy``, then ``epochs`` epochs in which its operators' ``p`` or ``alpha`` decay to 0.

    The paper's gradual variant ("no significant difference" from the hard switch). The fade
    phase runs the clean pipeline: a DALI policy has no per-epoch strength to decay, so it stops at
    the boundary as in :func:`refine`.

    Args:
        heavy: the augmented phase; it must hold batch operators.
        epochs: length of the fade K.
        attribute: ``"p"`` or ``"alpha"``, decayed on every operator of ``heavy``.
        lr, lr_scale, name: the fade phase's hints (see :class:`Phase`).

    Returns:
        ``[heavy, Phase(epochs, policy=None, operators=[Fade(op, attribute), ...], ...)]``.

    Example:
        >>> from dalaug.ops import Mixup
        >>> phases = fade_out(Phase(100, operators=[Mixup(num_classes=10)]), 20, attribute="alpha")
        >>> phases[1].operators[0].attribute
        'alpha'
    """
    _check_phase("heavy", heavy)
    if not heavy.operators:
        raise ValueError("heavy: fade_out needs a phase with batch operators to fade")
    fades = [op if isinstance(op, Fade) else Fade(op, attribute) for op in heavy.operators]
    return [heavy, Phase(epochs, policy=None, operators=fades, lr=lr, lr_scale=lr_scale, name=name)]


def early_stop(phase: Phase, epochs: int, *, name: str = "stopped") -> list[Phase]:
    """Split ``phase``: its operators only in its first ``epochs`` epochs (early-stopped Mixup).

    The second part keeps the policy and the learning-rate hints, so the loader carries on across
    the split without a rebuild; only the batch operators stop.

    Args:
        phase: the phase to split (e.g. 200 epochs with Mixup).
        epochs: epochs with the operators, below ``phase.epochs``.
        name: the second part's name.

    Returns:
        ``[phase with epochs, phase without operators for the rest]``.

    Example:
        >>> from dalaug.ops import Mixup
        >>> first, rest = early_stop(Phase(200, operators=[Mixup(num_classes=10)]), 50)
        >>> first.epochs, rest.epochs, rest.operators
        (50, 150, ())
    """
    _check_phase("phase", phase)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 0 < epochs < phase.epochs:
        raise ValueError(f"epochs: expected an int in [1, {phase.epochs - 1}], got {epochs!r}")
    return [
        dataclasses.replace(phase, epochs=epochs),
        dataclasses.replace(phase, epochs=phase.epochs - epochs, operators=(), name=name),
    ]


class Schedule:
    """The training loop's answer to "what holds in epoch e": phase, loader, operators, lr.

    Everything but the loaders is a pure function of the epoch, so every rank of a distributed run
    switches at the same epoch without talking to the others, and the only state to save is the
    cursor :attr:`epoch`. A loader is built per loader configuration (policy and options;
    consecutive phases with the same one share it; :class:`PhaseLoaders`), the next one in a
    background thread while the last epoch before a boundary runs; at the swap the old one is
    closed and its memory handed back (in the same thread, so the first batch of the new phase
    does not wait for it).

    The schedule owns the loaders it hands out, including ``loader``: it closes each one when it
    moves to a phase with another configuration (build ``loader`` with the first phase's policy, or
    any other: it is used where its policy fits with no options, and as the template for the rest).

    Args:
        phases: the phases, in order.
        loader: the template :class:`~dalaug.Loader`: each phase runs
            ``loader.with_options(policy=phase.policy, **phase.options)``. None for a schedule that
            only answers phase, operator and learning-rate questions.
        prebuild: build the next phase's loader during the last epoch before a boundary.

    Example:
        >>> from dalaug.ops import Mixup
        >>> heavy = Phase(400, policy="autoaugment", operators=[Mixup(num_classes=100)])
        >>> schedule = Schedule(refine(heavy, 50, lr=1e-3), loader)  # doctest: +SKIP
        >>> for epoch in schedule:  # doctest: +SKIP
        ...     loader, ops = schedule.loader_at(epoch), schedule.operators_at(epoch)
        ...     lr = schedule.lr_at(epoch, base_lr(epoch))
        ...     for images, targets in loader:
        ...         for op in ops:
        ...             images, targets = op(images, targets)
        ...         train_step(images, targets, lr)
        ...     save({"schedule": schedule.state_dict(), ...})
    """

    def __init__(self, phases: Sequence[Phase], loader: Loader | None = None, *, prebuild: bool = True):
        if isinstance(phases, Phase) or not isinstance(phases, Sequence) or not phases:
            raise ValueError(f"phases: expected a non-empty list of Phase, got {phases!r}")
        for phase in phases:
            _check_phase("phases", phase)
        if loader is not None and not callable(getattr(loader, "with_options", None)):
            raise TypeError(f"loader: expected a dalaug.Loader or None, got {loader!r}")
        if loader is not None and loader.operators:
            # Kept, they would run in some phases and not others (whichever reuse the template).
            raise ValueError(
                f"loader: has operators {loader.operators}; a Schedule applies each phase's own "
                "(Phase(..., operators=[...])) so that a clean phase runs none: build it without them"
            )
        self.phases: tuple[Phase, ...] = tuple(phases)
        self.starts: tuple[int, ...] = tuple(
            sum(p.epochs for p in self.phases[:i]) for i in range(len(self.phases))
        )
        self.epochs: int = sum(p.epochs for p in self.phases)
        self.epoch = 0  # the first epoch not yet handed out by iteration: all there is to resume
        self.prebuild = bool(prebuild)
        self.template = loader
        self._loaders: PhaseLoaders | None = None
        if loader is not None:
            self._configs = _phase_configs(self.phases, loader.config)
            self._loaders = PhaseLoaders(loader)

    # --- pure functions of the epoch ------------------------------------------------------------

    def phase_at(self, epoch: int) -> PhaseAt:
        """Which phase holds in ``epoch`` (0-based), and the epoch's place within it.

        Args:
            epoch: an int in ``[0, schedule.epochs)``.

        Returns:
            ``PhaseAt(index, phase, epoch_in_phase)``.
        """
        self._check_epoch(epoch)
        index = max(i for i, start in enumerate(self.starts) if start <= epoch)
        return PhaseAt(index, self.phases[index], epoch - self.starts[index])

    def config_at(self, epoch: int) -> LoaderConfig:
        """The loader configuration of ``epoch``: the template's with the phase's policy and options.

        Args:
            epoch: an int in ``[0, schedule.epochs)``.
        """
        if self._loaders is None:
            raise ValueError("config_at: this schedule was built without a loader")
        return self._configs[self.phase_at(epoch).index]

    def operators_at(self, epoch: int) -> list[Operator]:
        """The batch operators of ``epoch``, in order, with fades applied.

        Args:
            epoch: an int in ``[0, schedule.epochs)``.

        Returns:
            The phase's operators (the objects passed in), each :class:`Fade` replaced by a copy
            of its operator at this epoch's strength. Empty in a clean phase.
        """
        _, phase, k = self.phase_at(epoch)
        return [op.at(k, phase.epochs) if isinstance(op, Fade) else op for op in phase.operators]

    def lr_at(self, epoch: int, base_lr: float) -> float:
        """The learning rate of ``epoch`` given the loop's own rate ``base_lr`` for that epoch.

        Args:
            epoch: an int in ``[0, schedule.epochs)``.
            base_lr: what the loop's learning-rate schedule says for ``epoch``.

        Returns:
            The phase's ``lr`` if set, else ``base_lr * lr_scale`` if set, else ``base_lr``.
        """
        if isinstance(base_lr, bool) or not isinstance(base_lr, Real) or not 0 <= base_lr < math.inf:
            raise ValueError(f"base_lr: expected a finite number >= 0, got {base_lr!r}")
        phase = self.phase_at(epoch).phase
        if phase.lr is not None:
            return float(phase.lr)
        return float(base_lr) * (phase.lr_scale if phase.lr_scale is not None else 1.0)

    # --- loaders ----------------------------------------------------------------------------------

    def loader_at(self, epoch: int) -> Loader:
        """The loader for ``epoch``, set to serve it (same order as an uninterrupted run).

        At a boundary this is a different Loader object on a new pipeline; the previous phase's
        loader is closed (in the background). Asked for the last epoch before a boundary, it starts
        building the next phase's loader in the background. Ask for the loader every epoch: a
        Loader object kept from an earlier phase would still run that phase's pipeline.

        Args:
            epoch: an int in ``[0, schedule.epochs)``.

        Returns:
            A :class:`~dalaug.Loader` whose next iteration is ``epoch``.
        """
        if self._loaders is None:
            raise ValueError("loader_at: this schedule was built without a loader")
        loader = self._loaders.serve(self.config_at(epoch), epoch)
        if self.prebuild and epoch + 1 < self.epochs:
            self._loaders.prepare(self.config_at(epoch + 1), epoch + 1)
        return loader

    def close(self) -> None:
        """Close the loaders the schedule holds (the template too, if still current) and its thread.

        Waits for loaders being built or closed in the background.
        """
        if self._loaders is not None:
            self._loaders.close()

    def __enter__(self) -> Schedule:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- iteration and resuming -------------------------------------------------------------------

    def __iter__(self) -> Iterator[int]:
        """The epochs from :attr:`epoch` to the end; each one handed out advances the cursor.

        The cursor moves past an epoch as it is handed out, so a checkpoint saved in the loop's
        body for epoch ``e`` resumes at ``e + 1``.
        """
        while self.epoch < self.epochs:
            epoch = self.epoch
            self.epoch = epoch + 1
            yield epoch

    def state_dict(self) -> dict[str, int]:
        """What resuming needs: the next epoch to run. Phases, loaders and operators derive from it.

        Returns:
            ``{"epoch": schedule.epoch}``.
        """
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at ``state["epoch"]``: the same phase, loader and operators as an unbroken run.

        Args:
            state: a dict from :meth:`state_dict`.
        """
        if not isinstance(state, dict) or "epoch" not in state:
            raise ValueError(f"state: expected a dict with 'epoch' from state_dict(), got {state!r}")
        epoch = state["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= self.epochs:
            raise ValueError(f"state: 'epoch' must be an int in [0, {self.epochs}], got {epoch!r}")
        self.epoch = epoch

    def _check_epoch(self, epoch: int) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < self.epochs:
            raise ValueError(f"epoch: expected an int in [0, {self.epochs}), got {epoch!r}")

    def __repr__(self) -> str:
        parts = ", ".join(f"{p.name or i}: {p.epochs}" for i, p in enumerate(self.phases))
        return f"Schedule({parts}; {self.epochs} epochs)"

    def as_loader(self) -> PhasedLoader:
        """The schedule as one loader for an unchanged DataLoader loop (see :class:`PhasedLoader`)."""
        return PhasedLoader(self)


class PhaseLoaders:
    """The loaders a :class:`Schedule` hands out: one per loader configuration at a time, the next
    one built ahead in a background thread, the old one closed there at the swap.

    Args:
        template: the first loader; every other one is ``template.with_config(config)``.
    """

    def __init__(self, template: Loader) -> None:
        self.template = template
        # The loader of the current phase's config, and the next phase's being built ahead.
        self._current: tuple[LoaderConfig, Loader] | None = (template.config, template)
        self._pending: tuple[LoaderConfig, Future] | None = None
        self._executor: ThreadPoolExecutor | None = None

    def serve(self, config: LoaderConfig, epoch: int) -> Loader:
        """The loader for ``config``, set to serve ``epoch``; the one before it is closed in the
        background (closing waits for the batches DALI already started of its next epoch, time
        the first batch of the new phase should not wait)."""
        if self._current is not None and self._current[0] == config:
            loader = self._current[1]
        else:
            loader = self._take_pending(config)
            if loader is None:
                loader = self._build(config)
            stale, self._current = self._current, (config, loader)
            if stale is not None:
                self._background().submit(_release, [stale[1]])
        loader.set_epoch(epoch)
        return loader

    def prepare(self, config: LoaderConfig, epoch: int) -> None:
        """Unless it exists, build the loader for ``config`` in the background and start its
        ``epoch``, so the first batch after the boundary is ready (a new pipeline's first batch
        costs about two ordinary ones)."""
        if self._current is not None and self._current[0] == config:
            return
        if self._pending is not None and self._pending[0] == config:
            return
        self._drop_pending()
        self._pending = (config, self._background().submit(self._build_started, config, epoch))

    def close(self) -> None:
        """Close every loader held, and the background thread (waiting for its work)."""
        self._drop_pending()
        if self._current is not None:
            _release([self._current[1]])
            self._current = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _build(self, config: LoaderConfig) -> Loader:
        return self.template.with_config(config)

    def _build_started(self, config: LoaderConfig, epoch: int) -> Loader:
        loader = self._build(config)
        loader.prepare(epoch)
        return loader

    def _background(self) -> ThreadPoolExecutor:
        """One worker thread: builds ahead and closes old loaders, in order."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dalaug-schedule")
        return self._executor

    def _take_pending(self, config: LoaderConfig) -> Loader | None:
        if self._pending is None or self._pending[0] != config:
            return None
        future = self._pending[1]
        self._pending = None
        return future.result()  # re-raises a failed build here, in the loop's thread

    def _drop_pending(self) -> None:
        if self._pending is not None:
            future = self._pending[1]
            self._pending = None
            if future.exception() is None:
                _release([future.result()])


class PhasedLoader:
    """A :class:`Schedule` behind the face of one loader: each ``for`` serves the schedule's next
    epoch with that phase's pipeline and batch operators, so a training script written for a
    DataLoader runs the whole schedule, refinement included, without a line changed in its loop.

    When any phase has batch operators, every batch comes with soft targets (B, C), the clean
    phases' too (one-hot), so the loss never changes type at a boundary. ``set_epoch`` (or
    ``sampler.set_epoch``, as DistributedSampler loops call it) moves the schedule's cursor.

    Example:
        >>> from dalaug.ops import Mixup
        >>> heavy = Phase(90, policy="autoaugment", operators=[Mixup(alpha=0.2, num_classes=1000)])
        >>> train_loader = Schedule(refine(heavy, 10), loader).as_loader()  # doctest: +SKIP
        >>> for epoch in range(100):  # doctest: +SKIP
        ...     for images, soft in train_loader:
        ...         loss = soft_target_cross_entropy(model(images), soft)
    """

    def __init__(self, schedule: Schedule) -> None:
        if schedule.template is None:
            raise ValueError("schedule: built without a loader; give Schedule(phases, loader)")
        self.schedule = schedule
        self.loader = schedule.template  # the loader of the epoch served last (or first)
        self.soft = any(phase.operators for phase in schedule.phases)
        self.generator = self.loader.generator  # the operators' draws, saved with the loader state
        self._operators: list[Operator] = []  # those of the epoch being served
        self._serving: object | None = None  # the token of the iterator serving now, if any

    def __iter__(self):
        epoch = self.schedule.epoch
        if epoch >= self.schedule.epochs:
            raise ValueError(f"the schedule's {self.schedule.epochs} epochs are done")
        self.loader = self.schedule.loader_at(epoch)
        self._operators = self.schedule.operators_at(epoch)
        self.schedule.epoch = epoch + 1
        token = self._serving = object()
        try:
            for images, targets in self.loader:
                if self.soft:
                    images, targets = apply_operators(
                        self._operators, images, targets, num_classes=len(self.loader.classes),
                        generator=self.generator,
                    )  # fmt: skip
                yield images, targets
        finally:
            if self._serving is token:  # an older iterator ending late leaves a newer one be
                self._serving = None

    def __len__(self) -> int:
        """Batches in the epoch being served or, between epochs, in the next one (a phase may
        change the batch size)."""
        config = self._config()
        return len(self.loader) if config == self.loader.config else len(self.loader.with_config(config))

    @property
    def batch_size(self) -> int:
        return self._config().batch_size

    @property
    def drop_last(self) -> bool:
        return self._config().drop_last

    @property
    def mixup_enabled(self) -> bool:
        """Whether any phase's operators mix (timm's name for the switch)."""
        return any(getattr(op, "mixup_enabled", True) for op in self._every_operator())

    @mixup_enabled.setter
    def mixup_enabled(self, value: bool) -> None:
        """Turn every phase's operators off (timm's ``--mixup-off-epoch``) or on, at once."""
        operators = self._every_operator()
        if not operators:
            raise AttributeError("mixup_enabled: no phase of this schedule has mixing operators to switch")
        for op in operators:
            if not hasattr(op, "mixup_enabled"):
                raise AttributeError(f"mixup_enabled: operator {op!r} has no on/off switch (mixup_enabled)")
        for op in operators:
            op.mixup_enabled = value

    def _every_operator(self) -> list[Operator]:
        """Every phase's mixing operators and this epoch's (a faded one is a copy of its phase's):
        as timm's switch, ``mixup_enabled`` leaves erasing on."""
        given = [unfaded(op) for phase in self.schedule.phases for op in phase.operators]
        return [op for op in given + self._operators if getattr(op, "mixes", True)]

    def _config(self) -> LoaderConfig:
        """The configuration of the epoch being served or, between epochs, of the next one."""
        if self._serving is not None or self.schedule.epoch >= self.schedule.epochs:
            return self.loader.config
        return self.schedule.config_at(self.schedule.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Serve ``epoch`` next (a loop's ``set_epoch`` at the top of each epoch keeps the cursor)."""
        self.schedule.load_state_dict({"epoch": epoch})

    def state_dict(self) -> dict:
        """Where the schedule stands, mid-epoch included: the epoch, the serving loader's state
        and the operators' generator (Lightning saves and restores it as a stateful loader)."""
        serving = self._serving is not None
        loader = self.loader.state_dict() if serving else None
        generator = self.generator.get_state()
        return {"epoch": self.schedule.epoch - serving, "loader": loader, "generator": generator}

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`: the next ``for`` serves the rest of the saved epoch."""
        self.schedule.load_state_dict({"epoch": state["epoch"]})
        self._serving = None
        if state["loader"] is not None:
            self.loader = self.schedule.loader_at(state["epoch"])
            self.loader.load_state_dict(state["loader"])
        self.generator.set_state(state["generator"])

    @property
    def epoch(self) -> int:
        return self.schedule.epoch

    @property
    def sampler(self) -> SamplerView:
        return SamplerView(self.loader, owner=self)

    @property
    def batch_sampler(self) -> BatchSamplerView:
        return BatchSamplerView(self.loader, owner=self)

    def __getattr__(self, name: str):
        # The DataLoader surface (dataset, batch_size, drop_last, classes, device, ...) is the
        # current loader's: every phase reads the same samples in the same batches.
        if name in ("dataset", "classes", "device", "num_workers", "pin_memory", "sample_ids",
                    "num_samples"):  # fmt: skip
            return getattr(self.loader, name)
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")


def _check_phase(name: str, phase: object) -> None:
    if not isinstance(phase, Phase):
        raise TypeError(f"{name}: expected a Phase, got {phase!r}")


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None


_MALLOC_TRIM = _malloc_trim()


def _phase_configs(phases: Sequence[Phase], template: LoaderConfig) -> list[LoaderConfig]:
    """Each phase's loader configuration, checked before any epoch runs; errors name the phase."""
    accepted = {field.name for field in dataclasses.fields(LoaderConfig)} - {"policy"}
    configs = []
    for index, phase in enumerate(phases):
        for name in phase.options:
            if name not in accepted:
                raise ValueError(
                    f"phases[{index}].options: {name!r} is not a Loader argument "
                    f"(expected some of {sorted(accepted)})"
                )
        try:
            configs.append(phase.loader_config(template))
        except (ValueError, TypeError) as error:
            raise type(error)(f"phases[{index}].options: {error}") from None
    return configs


def _release(loaders: list[Loader]) -> None:
    """Close ``loaders`` and hand the memory of their pipelines back.

    Closing drops the DALI pipeline even while the loop still holds the Loader object, so nothing
    waits on the loop's variables being rebound. The pipeline is freed by reference counting; the
    cycles left over from tracing its graph are small Python objects, so no ``gc.collect()`` (about
    0.15 s with torch loaded) delays the first batch of the next phase.
    """
    for loader in loaders:
        loader.close()
    ReleaseUnusedMemory()
    # glibc keeps the freed buffers of the pipeline's threads in per-thread arenas; without a trim,
    # host RSS crept up by about 15% over 40 swaps in bench_swap, with it by about half that.
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)

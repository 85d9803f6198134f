"""What every batch operator shares: soft targets, input checks, generators and the operator bases.

Every operator follows one protocol, after kornia's ``forward_parameters``/``apply_func`` and
torchvision v2's ``make_params``/``transform``: ``params = op.sample(images)`` draws all the random
numbers, ``op.apply(images, targets, params)`` moves the pixels and mixes the labels with those same
numbers, and ``op(images, targets)`` does both. A params object can be logged, replayed, moved to
another device and tested on its own.

Parameters are drawn on the host from a CPU ``torch.Generator`` (see ``dalaug.ops.sampling``), as
timm draws its λ: one value per batch stays a Python number, so the operator can choose what to
launch (a patch-sized slice, or nothing at all) without waiting for the device; per-sample values
reach the device in one non-blocking copy. Nothing in an operator call syncs the host on CUDA.

Labels have one representation: soft targets of shape (B, C), rows summing to one, with timm's
label-smoothing convention (off = s / C, on = 1 - s + s / C).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dalaug.ops.fused import mix_one_hot
from dalaug.ops.sampling import check_generator, host_rng

# --- argument checks (raised eagerly, each naming its argument) ---------------------------------


def check_real(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def check_probability(name: str, value: object) -> float:
    """Return ``value`` as a float in [0, 1], or raise naming ``name``."""
    value = check_real(name, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return value


def check_positive(name: str, value: object) -> float:
    """Return ``value`` as a finite float > 0, or raise naming ``name``."""
    value = check_real(name, value)
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_int(name: str, value: object) -> int:
    """Return ``value`` as an int, or raise TypeError naming ``name``.

    Any integer type (numpy's too, as read from a config or an array), but not a bool: True is
    no count, and a bool where an int belongs is a mistake in the call.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def check_count(name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` as an int >= ``minimum``, or raise naming ``name``."""
    value = check_int(name, value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` as a bool, or raise TypeError naming ``name``: no truthiness, so that
    ``"no"`` or ``0.0`` is refused rather than read as True or False."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def check_range(name: str, value: object, low: float, high: float) -> tuple[float, float]:
    """Return ``value`` as a pair ``(a, b)``, ``low < a <= b <= high``, or raise naming ``name``."""
    if not (isinstance(value, Sequence) and len(value) == 2):
        raise TypeError(f"{name} must be a pair (min, max), got {value!r}")
    a, b = check_real(name, value[0]), check_real(name, value[1])
    if not low < a <= b <= high:
        raise ValueError(f"{name} must satisfy {low} < min <= max <= {high}, got {value!r}")
    return a, b


def check_images(images: object) -> Tensor:
    """Check that ``images`` is a non-empty NCHW floating-point tensor and return it."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got dtype {images.dtype}")
    if images.ndim != 4:
        raise ValueError(f"images must be 4-D (N, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"images must not be empty, got shape {tuple(images.shape)}")
    return images


# --- soft targets ---------------------------------------------------------------------------------


def soft_targets(targets: Tensor, num_classes: int | None = None, label_smoothing: float = 0.0) -> Tensor:
    """Turn class indices or soft targets into smoothed soft targets of shape (B, C).

    Integer targets become one-hot rows with timm's smoothing convention: ``1 - s + s / C`` on the
    class, ``s / C`` elsewhere. Soft targets ``t`` become ``(1 - s) * t + s / C``, which is the same
    map. Rows of the result sum to one whenever the input rows do.

    Args:
        targets: int64 (or any integer dtype) class indices of shape (B,), or floating soft targets
            of shape (B, C).
        num_classes: C. Required for integer targets; checked against soft targets when given.
        label_smoothing: s in [0, 1).

    Returns:
        Soft targets (B, C) on the targets' device: float32 for integer targets, else the targets'
        dtype. An integer target outside [0, C) raises ValueError on the CPU; on other devices
        checking it on the host would wait for the device, so its row becomes NaN instead (see
        ``smoothed_one_hot``) and the loss of that step is NaN, not silently wrong.

    Example:
        >>> soft_targets(torch.tensor([0, 2]), num_classes=3)
        tensor([[1., 0., 0.],
                [0., 0., 1.]])
    """
    return _converted(targets, num_classes, check_targets(targets, num_classes, label_smoothing))


def check_targets(targets: object, num_classes: int | None, label_smoothing: float) -> float:
    """Raise what ``soft_targets`` would raise about its arguments, on the host alone (no kernel);
    return the smoothing as a float."""
    smoothing = check_real("label_smoothing", label_smoothing)
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1), got {smoothing}")
    if num_classes is not None:
        check_count("num_classes", num_classes)
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.dtype == torch.bool or targets.is_complex():
        raise TypeError(f"targets must be integer class indices or float soft targets, got {targets.dtype}")
    if targets.is_floating_point():
        if targets.ndim != 2:
            raise ValueError(f"soft targets must be 2-D (B, C), got shape {tuple(targets.shape)}")
        if num_classes is not None and targets.shape[1] != num_classes:
            raise ValueError(f"targets have {targets.shape[1]} classes but num_classes is {num_classes}")
        return smoothing
    if targets.ndim != 1:
        raise ValueError(f"integer targets must be 1-D (B,), got shape {tuple(targets.shape)}")
    if num_classes is None:
        raise ValueError("num_classes is required to turn integer targets into soft targets")
    if targets.device.type == "cpu" and targets.numel() > 0:
        values = targets.tolist()  # on the CPU already: no sync, and cheaper than a reduction
        low, high = min(values), max(values)
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"targets must lie in [0, num_classes={num_classes}), got values in [{low}, {high}]"
            )
    return smoothing


def _converted(targets: Tensor, num_classes: int | None, smoothing: float) -> Tensor:
    """``soft_targets`` for arguments ``check_targets`` passed."""
    if targets.is_floating_point():
        return targets if smoothing == 0.0 else targets * (1.0 - smoothing) + smoothing / targets.shape[1]
    return smoothed_one_hot(targets, num_classes, smoothing, mark_invalid=targets.device.type != "cpu")


def smoothed_one_hot(targets: Tensor, num_classes: int, smoothing: float, *, mark_invalid: bool) -> Tensor:
    """float32 (B, C) smoothed one-hot rows of class indices (B,), without a host sync.

    A comparison against ``arange``, not ``scatter`` or ``one_hot``: elementwise, so it never waits
    for the device. With ``mark_invalid`` a row whose index lies outside [0, C) (it matches no
    column) becomes NaN: a device-side check that, unlike ``torch._assert_async``, leaves the CUDA
    context usable and shows up in the loss of the very step.
    """
    off = smoothing / num_classes
    hot = targets[:, None] == _class_indices(num_classes, targets.device)
    elsewhere: float | Tensor = off
    if mark_invalid:  # s / C, or NaN in a row where no column matched
        elsewhere = torch.where(hot.any(1, keepdim=True), off, math.nan)
    return torch.where(hot, 1.0 - smoothing + off, elsewhere)  # the scalars stay on the host


@functools.lru_cache(maxsize=64)
def _class_indices(num_classes: int, device: torch.device) -> Tensor:
    """``arange(num_classes)`` on ``device``, made once: one kernel launch less per call."""
    return torch.arange(num_classes, device=device)


def mixed_soft_targets(
    targets: Tensor,
    num_classes: int | None,
    smoothing: float,
    lam: float | Tensor,
    partner: Tensor,
    mirrored: bool,
) -> Tensor:
    """The soft targets of ``targets`` (checked by ``check_targets``), mixed with their partners'
    by ``lam``: class indices on CUDA in one kernel (``dalaug.ops.fused``), else ``soft_targets``
    then ``mix_soft_targets``."""
    if isinstance(lam, Tensor) or lam != 1.0:
        mixed = mix_one_hot(targets, num_classes, smoothing, lam, partner, mirrored) if num_classes else None
        if mixed is not None:
            return mixed
    return mix_soft_targets(_converted(targets, num_classes, smoothing), lam, partner, mirrored)


def mix_soft_targets(soft: Tensor, lam: float | Tensor, partner: Tensor, mirrored: bool) -> Tensor:
    """``lam * soft + (1 - lam) * soft[partner]`` row by row.

    Args:
        soft: (B, C) soft targets.
        lam: one weight for the batch (a float) or one per row, float32 (B,).
        partner: int64 (B,) partner rows; ignored when ``mirrored`` (the partner of i is B - 1 - i).
        mirrored: use ``soft.flip(0)`` as the partners' rows.
    """
    if not isinstance(lam, Tensor) and lam == 1.0:
        return soft
    other = soft.flip(0) if mirrored else soft.index_select(0, partner)
    weight = 1.0 - lam if not isinstance(lam, Tensor) else (1.0 - lam).to(soft.dtype)[:, None]
    # lerp is exact at weight 0, so a sample that was not mixed keeps its own row bit for bit.
    return torch.lerp(soft, other, weight)


# --- params --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Params:
    """Base of the params dataclasses: tensors on the batch's device, or host numbers.

    A value that is one per batch (a λ, a box) stays a Python number: the operator reads it on the
    host without waiting for the device. ``to`` moves the tensors and keeps the numbers.
    """

    def to(self, device: torch.device | str) -> Params:
        """Return a copy with every tensor field moved to ``device``."""
        moved = {field.name: _to(getattr(self, field.name), device) for field in dataclasses.fields(self)}
        return dataclasses.replace(self, **moved)


def _to(value: Any, device: torch.device | str) -> Any:
    if isinstance(value, Tensor | Params):
        return value.to(device)
    return value


# --- operator bases -------------------------------------------------------------------------------


class BatchOp(ABC):
    """Root of the batch operators: ``sample`` parameters, then ``apply`` them.

    Args:
        seed: seeds the operator's own CPU ``torch.Generator``, so the same seed gives the same
            output on any device. ``None`` draws from torch's default CPU generator (seed it with
            ``torch.manual_seed``). A CPU ``generator`` passed to a call wins over both.

    Attributes:
        enabled: when False a call returns the images unchanged and the (smoothed) soft targets.
            ``mixup_enabled`` is the same switch under timm's name, so a timm-style loop that sets
            ``mixup_enabled = False`` at its ``--mixup-off-epoch`` really stops mixing. Operators
            run in the training process, so the flag reaches them (it is no worker's copy).
        mixes: whether the operator mixes samples with one another (Mixup, CutMix, ...; erasing
            does not). A loader's ``mixup_enabled``, timm's switch, reaches only these, as timm's
            own stops its mixing and leaves its random erasing on.
    """

    mixes = True

    def __init__(self, *, seed: int | None = None) -> None:
        self.seed = None if seed is None else check_int("seed", seed)
        self.enabled = True
        self._generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)

    @property
    def active(self) -> bool:
        """Whether a call samples and applies now; when False it returns ``passthrough``.

        False when ``enabled`` is; subclasses add their own reasons (``p`` = 0, a ManifoldMixup
        whose model is in eval mode). ``RandomChoice`` asks its picked operator, so an operator
        behaves the same whether it is called alone or chosen.
        """
        return self.enabled

    @property
    def mixup_enabled(self) -> bool:
        """timm's name for ``enabled``."""
        return self.enabled

    @mixup_enabled.setter
    def mixup_enabled(self, value: bool) -> None:
        self.enabled = check_bool("mixup_enabled", value)

    def generator_for(self, generator: torch.Generator | None = None) -> torch.Generator | None:
        """The CPU generator to draw from: ``generator`` if given, else the operator's own."""
        generator = check_generator(generator)
        return self._generator if generator is None else generator

    @abstractmethod
    def sample(self, images: Tensor, generator: torch.Generator | None = None) -> Any:
        """Draw the parameters for ``images`` (on the host; per-sample tensors on its device)."""

    @abstractmethod
    def apply(self, images: Tensor, targets: Tensor, params: Any) -> tuple[Tensor, Tensor]:
        """Apply ``params`` to ``images`` and ``targets``; return (images, soft targets (B, C))."""

    @abstractmethod
    def passthrough(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """What a call returns when the operator is off: the images unchanged, soft targets."""

    def __call__(
        self, images: Tensor, targets: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sample parameters for this batch and apply them (``passthrough`` when not ``active``).

        Args:
            images: float tensor (N, C, H, W) on any device.
            targets: int class indices (N,) or float soft targets (N, C) on the same device.
            generator: optional CPU ``torch.Generator`` (e.g. the training loop's, whose state a
                checkpoint saves).

        Returns:
            ``(images, soft_targets)``, soft targets of shape (N, C).
        """
        if not self.active:
            return self.passthrough(images, targets)
        return self.apply(images, targets, self.sample(images, generator))

    def __repr__(self) -> str:
        # The constructor's arguments, read back from the attributes of the same names, so that a
        # saved config records alpha and p (and any change Fade made to them).
        names = [name for name in inspect.signature(type(self).__init__).parameters if name != "self"]
        arguments = [f"{name}={getattr(self, name)!r}" for name in names]
        if not self.enabled:
            arguments.append("enabled=False")
        return f"{type(self).__name__}({', '.join(arguments)})"


class Augmentation(BatchOp):
    """Base of the single operators (Mixup, CutMix, Cutout, SaliencyMix, RandomErasing).

    Subclasses draw their parameters in ``_sample`` from a numpy generator seeded by the call's
    torch generator, and move pixels in ``_apply_images``; ``_mix_targets`` turns the targets into
    soft targets (N, C), mixed as the pixels were.

    Args:
        p: probability of applying the operator. A sample that is not mixed gets λ = 1 (an empty box
            for box operators), which is the identity; when the whole batch is not mixed (decided on
            the host) no pixel is touched. p = 0 skips the work altogether.
        num_classes: number of classes; required when targets are class indices.
        label_smoothing: s in [0, 1); see ``soft_targets``.
        inplace: write into ``images`` instead of returning a new tensor. Out of place, a call that
            changes no pixel may return ``images`` itself.
        seed: see ``BatchOp``.
    """

    def __init__(
        self,
        *,
        p: float = 1.0,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        inplace: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed=seed)
        self.p = check_probability("p", p)
        self.num_classes = None if num_classes is None else check_count("num_classes", num_classes)
        smoothing = check_real("label_smoothing", label_smoothing)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {smoothing}")
        self.label_smoothing = smoothing
        self.inplace = check_bool("inplace", inplace)

    def sample(self, images: Tensor, generator: torch.Generator | None = None) -> Params:
        """Draw this batch's parameters on the host; per-sample ones land on the images' device.

        Args:
            images: float tensor (N, C, H, W).
            generator: optional CPU ``torch.Generator``.

        Returns:
            The operator's params dataclass.
        """
        check_images(images)
        return self._sample(images, host_rng(self.generator_for(generator)))

    def apply(self, images: Tensor, targets: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        """Apply ``params`` (from ``sample``) to a batch.

        Args:
            images: float tensor (N, C, H, W), modified in place when ``inplace``.
            targets: int class indices (N,) or float soft targets (N, C).
            params: the params object ``sample`` returned for a batch of this shape.

        Returns:
            ``(images, soft_targets)``: images in the input's memory format, soft targets (N, C).
        """
        # Every check runs on the host before a pixel moves; then the batch-sized kernels go first,
        # so that on CUDA the label kernels' launches overlap them instead of idling the device.
        smoothing = self._check(images, targets)
        mixed = self._apply_images(images, params)
        return mixed, self._mix_targets(targets, smoothing, params)

    def passthrough(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """The images unchanged and their soft targets: what a call returns when disabled."""
        return check_images(images), self._soft_targets(images, targets)

    @property
    def active(self) -> bool:
        """``enabled`` and ``p`` > 0: p = 0 skips the work altogether."""
        return super().active and self.p > 0.0

    def _soft_targets(self, images: Tensor, targets: Tensor) -> Tensor:
        return _converted(targets, self.num_classes, self._check(images, targets))

    def _check(self, images: Tensor, targets: Tensor) -> float:
        """Check the batch and its targets on the host; return the label smoothing."""
        check_images(images)
        smoothing = check_targets(targets, self.num_classes, self.label_smoothing)
        if targets.shape[0] != images.shape[0]:
            raise ValueError(f"targets hold {targets.shape[0]} samples but images hold {images.shape[0]}")
        if targets.device != images.device:
            raise ValueError(f"targets are on {targets.device} but images are on {images.device}")
        return smoothing

    @abstractmethod
    def _sample(self, images: Tensor, rng: np.random.Generator) -> Params: ...

    @abstractmethod
    def _apply_images(self, images: Tensor, params: Params) -> Tensor: ...

    def _mix_targets(self, targets: Tensor, smoothing: float, params: Params) -> Tensor:
        return _converted(targets, self.num_classes, smoothing)


# --- choosing among operators --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChoiceParams(Params):
    """Which operator ``RandomChoice`` picked (a host int) and that operator's params: None when
    it was not ``active`` (disabled, p = 0, ...) at the pick, and then the batch passes through."""

    index: int
    params: Any


class RandomChoice(BatchOp):
    """Apply one operator picked at random per batch, e.g. Mixup or CutMix as in timm's switch_prob.

    The pick is one per batch, drawn on the host, so that choosing which kernels to launch never
    waits for the device. A per-sample choice would need every operator run on every batch.

    Args:
        ops: the operators to choose from (any ``BatchOp``, including another ``RandomChoice``;
            a kornia augmentation module is wrapped in ``dalaug.ops.KorniaOp``).
        p: their probabilities (non-negative, summing to 1); ``None`` picks uniformly.
        seed: seeds the CPU generator of the pick. A ``generator`` passed to a call is used for the
            pick and then handed to the chosen operator; without one, each operator draws from its
            own generator (its seed, or torch's default CPU generator).

    When disabled (``enabled``/``mixup_enabled`` False) a call returns the images unchanged and
    the soft targets of the first operator. A picked operator that is not ``active`` (disabled
    itself, p = 0, a ManifoldMixup in eval mode) draws nothing and passes the batch through, as
    its own call would.

    Example:
        >>> from dalaug.ops import CutMix, Mixup, RandomChoice
        >>> ops = RandomChoice([Mixup(num_classes=10), CutMix(num_classes=10)], p=[0.5, 0.5])
        >>> images, soft = ops(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        >>> soft.shape
        torch.Size([8, 10])
    """

    def __init__(
        self, ops: Sequence[BatchOp], p: Sequence[float] | None = None, *, seed: int | None = None
    ) -> None:
        super().__init__(seed=seed)
        from dalaug.ops.kornia import as_operator  # that module builds on this one

        if isinstance(ops, BatchOp) or not isinstance(ops, Sequence) or len(ops) == 0:
            raise TypeError("ops must be a non-empty sequence of batch operators")
        ops = [as_operator(op) for op in ops]
        for op in ops:
            if not isinstance(op, BatchOp):
                raise TypeError(f"ops must hold batch operators, got {type(op).__name__}")
        self.ops = list(ops)
        if p is None:
            p = [1.0 / len(self.ops)] * len(self.ops)
        if not isinstance(p, Sequence) or len(p) != len(self.ops):
            raise ValueError(f"p must hold one probability per op ({len(self.ops)}), got {p!r}")
        weights = [check_probability("p", value) for value in p]
        if not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
            raise ValueError(f"p must sum to 1, got {sum(weights)}")
        self.p = weights
        self._cumulative = np.cumsum(weights)

    def sample(self, images: Tensor, generator: torch.Generator | None = None) -> ChoiceParams:
        """Pick an operator (on the host) and draw its parameters.

        Args:
            images: float tensor (N, C, H, W).
            generator: optional CPU ``torch.Generator``, used for the pick and by the chosen op.

        Returns:
            ``ChoiceParams(index, params)``.
        """
        check_images(images)
        uniform = host_rng(self.generator_for(generator)).random()
        # searchsorted on the cumulative weights; min() guards against their sum rounding below 1.
        index = min(int(np.searchsorted(self._cumulative, uniform, side="right")), len(self.ops) - 1)
        op = self.ops[index]
        return ChoiceParams(index, op.sample(images, generator) if op.active else None)

    def apply(self, images: Tensor, targets: Tensor, params: ChoiceParams) -> tuple[Tensor, Tensor]:
        """Apply the picked operator with its params; returns (images, soft targets (N, C))."""
        op = self.ops[params.index]
        if params.params is None:
            return op.passthrough(images, targets)
        return op.apply(images, targets, params.params)

    @property
    def mixes(self) -> bool:
        """Whether any of the operators it picks from mixes samples (then timm's switch turns the
        whole choice off, an erasing it picks from included)."""
        return any(op.mixes for op in self.ops)

    def passthrough(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """The images unchanged and the first operator's soft targets."""
        return self.ops[0].passthrough(images, targets)

"""What every batch operator shares: soft targets, input checks, generators and the operator bases.

Every operator follows one protocol, after kornia's ``forward_parameters``/``apply_func`` and
torchvision v2's ``make_params``/``transform``: ``params = op.sample(images)`` draws all the random
numbers as tensors on the batch's device, ``op.apply(images, targets, params)`` moves the pixels and
mixes the labels with those same numbers, and ``op(images, targets)`` does both. A params object can
be logged, replayed, moved to another device and tested on its own.

Labels have one representation: soft targets of shape (B, C), rows summing to one, with timm's
label-smoothing convention (off = s / C, on = 1 - s + s / C).
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from numbers import Real
from typing import Any

import torch
from torch import Tensor

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


def check_count(name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` as an int >= ``minimum``, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


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
        dtype. Integer targets are range-checked only on the CPU: on CUDA the check would wait for
        the device, so an out-of-range index there silently gives a row of ``s / C``.

    Example:
        >>> soft_targets(torch.tensor([0, 2]), num_classes=3)
        tensor([[1., 0., 0.],
                [0., 0., 1.]])
    """
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
        if smoothing == 0.0:
            return targets
        return targets * (1.0 - smoothing) + smoothing / targets.shape[1]
    if targets.ndim != 1:
        raise ValueError(f"integer targets must be 1-D (B,), got shape {tuple(targets.shape)}")
    if num_classes is None:
        raise ValueError("num_classes is required to turn integer targets into soft targets")
    if targets.device.type == "cpu" and targets.numel() > 0:
        low, high = torch.aminmax(targets)
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"targets must lie in [0, num_classes={num_classes}), got values in [{int(low)}, {int(high)}]"
            )
    off = smoothing / num_classes
    # A comparison against arange, not scatter or one_hot: elementwise, so it never syncs on CUDA.
    hot = targets[:, None] == torch.arange(num_classes, device=targets.device)
    return hot.to(torch.float32) * (1.0 - smoothing) + off


def mix_soft_targets(soft: Tensor, lam: Tensor, partner: Tensor) -> Tensor:
    """``lam * soft + (1 - lam) * soft[partner]`` row by row; lam (B,) float, partner (B,) int64."""
    weight = (1.0 - lam).to(soft.dtype)[:, None]
    # lerp is exact at weight 0, so a sample that was not mixed keeps its own row bit for bit.
    return torch.lerp(soft, soft.index_select(0, partner), weight)


# --- params --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Params:
    """Base of the params dataclasses: tensors (or None) only, so params can change device."""

    def to(self, device: torch.device | str) -> Params:
        """Return a copy with every tensor field moved to ``device``."""
        moved = {field.name: _to(getattr(self, field.name), device) for field in dataclasses.fields(self)}
        return dataclasses.replace(self, **moved)


def _to(value: Any, device: torch.device | str) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, Params):
        return value.to(device)
    return value


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    index_a = current if a.index is None else a.index
    index_b = current if b.index is None else b.index
    return index_a == index_b


# --- operator bases -------------------------------------------------------------------------------


class BatchOp(ABC):
    """Root of the batch operators: ``sample`` parameters, then ``apply`` them.

    Args:
        seed: seeds one ``torch.Generator`` per device, created on first use, so the same seed gives
            the same output. ``None`` draws from torch's default generator of the batch's device
            (seed it with ``torch.manual_seed``). A ``generator`` passed to a call wins over both.
    """

    def __init__(self, *, seed: int | None = None) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}

    def generator_for(
        self, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Generator | None:
        """The generator to draw from for a batch on ``device`` (see the class docstring)."""
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
            if not _same_device(torch.device(generator.device), device):
                raise ValueError(
                    f"generator is on {generator.device} but the images are on {device}; "
                    "random numbers are drawn on the batch's device"
                )
            return generator
        if self.seed is None:
            return None
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    @abstractmethod
    def sample(self, images: Tensor, generator: torch.Generator | None = None) -> Any:
        """Draw the parameters for ``images`` as tensors on its device."""

    @abstractmethod
    def apply(self, images: Tensor, targets: Tensor, params: Any) -> tuple[Tensor, Tensor]:
        """Apply ``params`` to ``images`` and ``targets``; return (images, soft targets (B, C))."""

    def __call__(
        self, images: Tensor, targets: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sample parameters for this batch and apply them; see ``sample`` and ``apply``."""
        return self.apply(images, targets, self.sample(images, generator))


class Augmentation(BatchOp):
    """Base of the single operators (Mixup, CutMix, Cutout, SaliencyMix).

    Subclasses draw their parameters in ``_sample`` and move pixels in ``_apply_images``; targets
    become soft targets here and are mixed by ``_mix_targets``.

    Args:
        p: probability of applying the operator. A sample that is not mixed gets λ = 1 (an empty box
            for box operators), which is the identity, so no host-side branch depends on a random
            number; p = 0 skips the work altogether.
        num_classes: number of classes; required when targets are class indices.
        label_smoothing: s in [0, 1); see ``soft_targets``.
        inplace: write into ``images`` instead of returning a new tensor.
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
        if not isinstance(inplace, bool):
            raise TypeError(f"inplace must be a bool, got {type(inplace).__name__}")
        self.inplace = inplace

    def sample(self, images: Tensor, generator: torch.Generator | None = None) -> Params:
        """Draw this batch's parameters as tensors on the images' device.

        Args:
            images: float tensor (N, C, H, W).
            generator: optional ``torch.Generator`` on the images' device.

        Returns:
            The operator's params dataclass.
        """
        check_images(images)
        return self._sample(images, self.generator_for(images.device, generator))

    def apply(self, images: Tensor, targets: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        """Apply ``params`` (from ``sample``) to a batch.

        Args:
            images: float tensor (N, C, H, W), modified in place when ``inplace``.
            targets: int class indices (N,) or float soft targets (N, C).
            params: the params object ``sample`` returned for a batch of this shape.

        Returns:
            ``(images, soft_targets)``, soft targets of shape (N, C).
        """
        soft = self._soft_targets(images, targets)
        return self._apply_images(images, params), self._mix_targets(soft, params)

    def __call__(
        self, images: Tensor, targets: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sample parameters for this batch and apply them.

        Args:
            images: float tensor (N, C, H, W) on any device.
            targets: int class indices (N,) or float soft targets (N, C) on the same device.
            generator: optional ``torch.Generator`` on the images' device.

        Returns:
            ``(images, soft_targets)``, soft targets of shape (N, C).
        """
        if self.p == 0.0:
            return check_images(images), self._soft_targets(images, targets)
        return super().__call__(images, targets, generator=generator)

    def _soft_targets(self, images: Tensor, targets: Tensor) -> Tensor:
        check_images(images)
        soft = soft_targets(targets, self.num_classes, self.label_smoothing)
        if soft.shape[0] != images.shape[0]:
            raise ValueError(f"targets hold {soft.shape[0]} samples but images hold {images.shape[0]}")
        if soft.device != images.device:
            raise ValueError(f"targets are on {soft.device} but images are on {images.device}")
        return soft

    def _applied(self, n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
        """Bernoulli(p) flags (n,) on the device: which samples (or the batch, n = 1) get mixed."""
        return torch.rand(n, generator=generator, device=device) < self.p

    @abstractmethod
    def _sample(self, images: Tensor, generator: torch.Generator | None) -> Params: ...

    @abstractmethod
    def _apply_images(self, images: Tensor, params: Params) -> Tensor: ...

    def _mix_targets(self, soft: Tensor, params: Params) -> Tensor:
        return soft


# --- choosing among operators --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChoiceParams(Params):
    """Which operator ``RandomChoice`` picked (a host int) and that operator's params."""

    index: int
    params: Any


class RandomChoice(BatchOp):
    """Apply one operator picked at random per batch, e.g. Mixup or CutMix as in timm's switch_prob.

    The pick is one per batch, drawn on the host (from a CPU generator) so that choosing which
    kernels to launch never waits for the device; the chosen operator then draws its own parameters
    on the batch's device. A per-sample choice would need every operator run on every batch.

    Args:
        ops: the operators to choose from (any ``BatchOp``, including another ``RandomChoice``).
        p: their probabilities (non-negative, summing to 1); ``None`` picks uniformly.
        seed: seeds the CPU generator of the pick. A CPU ``generator`` passed to a call is used for
            the pick too; any call ``generator`` is handed on to the chosen operator.

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
        if isinstance(ops, BatchOp) or not isinstance(ops, Sequence) or len(ops) == 0:
            raise TypeError("ops must be a non-empty sequence of batch operators")
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
        self._weights = torch.tensor(weights, dtype=torch.float64)

    def sample(self, images: Tensor, generator: torch.Generator | None = None) -> ChoiceParams:
        """Pick an operator (on the host) and draw its parameters.

        Args:
            images: float tensor (N, C, H, W).
            generator: optional ``torch.Generator`` on the images' device, handed to the chosen op.

        Returns:
            ``ChoiceParams(index, params)``.
        """
        check_images(images)
        on_cpu = generator is not None and torch.device(generator.device).type == "cpu"
        picker = self.generator_for(torch.device("cpu"), generator if on_cpu else None)
        index = int(torch.multinomial(self._weights, 1, generator=picker))
        return ChoiceParams(index, self.ops[index].sample(images, generator))

    def apply(self, images: Tensor, targets: Tensor, params: ChoiceParams) -> tuple[Tensor, Tensor]:
        """Apply the picked operator with its params; returns (images, soft targets (N, C))."""
        return self.ops[params.index].apply(images, targets, params.params)

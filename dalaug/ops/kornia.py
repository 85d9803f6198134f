"""kornia's 2-D augmentations as label-preserving batch operators.

Riba, Mishkin, Ponsa, Rublee, Bradski, "Kornia: an Open Source Differentiable Computer Vision
Library for PyTorch", WACV 2020. kornia's catalogue (blur, noise, colour, affine, perspective,
elastic, solarize, ...) draws per-sample parameters and applies them to a batch tensor on its
device, the same split as dalaug's operators (``forward_parameters``, then ``forward(x, params=)``).
:class:`KorniaOp` wraps one module, or an ``AugmentationSequential`` of them, so that it goes
wherever dalaug's operators go: ``Loader(operators=...)``, ``Phase(operators=...)``,
``RandomChoice([...])``, ``measure_gap``. Those places wrap a kornia module themselves
(:func:`as_operator`); name the class only to give it arguments of its own.

Seeding. kornia draws its parameters from torch's global CPU generator and takes no generator of
its own. ``sample`` takes one seed from the operator's generator (the one the Trainer and the
loader checkpoint), seeds the global CPU generator with it inside ``torch.random.fork_rng`` and
lets kornia draw: a resumed run draws the same, and the caller's global RNG state is as before.
Only the CPU generator is touched (``torch.default_generator.manual_seed``, not
``torch.manual_seed``, which would also reseed every CUDA generator, dropout's included).

Host syncs. The adapter adds none on CUDA: the seed is a CPU draw, kornia's draw stays on the
host, and the dtype and layout conversions are kernels. What kornia 0.9.0 itself does, as read in
its source (not measured: no GPU was at hand; ``benchmarks/bench_ops.py`` counts syncs on CUDA):
its parameters reach the device through ``_to_device_nonblocking``, non-blocking copies from
pageable memory, which do not wait for queued kernels; ``RandomGaussianBlur`` checks its sigma on
the host copy (older kornia built the kernel on the host and copied it blocking, which is what
``dalaug.ops.saliency`` notes); its gates blend with ``torch.where``. Only a module that changes
the batch's shape with ``p < 1`` reads ``to_apply.any()`` on the host, and those are refused here.

Not taken: kornia's mixing modules (``RandomMixUpV2``, ``RandomCutMixV2``, ``RandomMosaic``, ...),
3-D and video augmentations, its auto-augment policies, ``RandomDissolving`` (it draws during
application), and containers holding anything else. Each is refused by class name; see
:func:`check_kornia` for why the mixing modules are refused rather than translated.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from dalaug.ops.base import BatchOp, Params, check_count, check_images, check_real, soft_targets
from dalaug.ops.sampling import host_seed

# The global CPU generator is one per process: two adapters drawing in two threads (two loaders
# mixing at once) must not seed it between each other's draws. kornia called by hand in another
# thread at the same moment can still interleave; that is kornia's global RNG, not ours.
_GLOBAL_RNG = threading.Lock()
_CPU = torch.device("cpu")
# kornia computes in the input's dtype. In bfloat16 its sampling grids and colour conversions
# lose most of their precision (measured on the CPU, 8x3x32x32 in [0, 1], the same draw: the
# bfloat16 RandomPerspective is 0.11 off the float32 one, 30 times the 0.0036 of computing in
# float32 and rounding once; ColorJiggle 0.05 against 0.007): so half-precision batches go
# through kornia in float32 and come back rounded once.
_COMPUTE_IN_FLOAT32 = (torch.float16, torch.bfloat16)

# kornia's mixing modules, refused: what dalaug's own does instead (see check_kornia).
_MIXING_INSTEAD = {
    "RandomMixUpV2": (
        "use dalaug.Mixup(alpha=1.0, per_sample=True, partner='permute', num_classes=...): kornia's λ ~ "
        "Uniform(0, 1) is Beta(1, 1), and dalaug's returns soft targets (B, C) instead of (B, 3) rows "
        "[label, partner, λ]"
    ),
    "RandomCutMixV2": (
        "use dalaug.CutMix(alpha=1.0, per_sample=True, partner='permute', num_classes=...): soft "
        "targets (B, C) with λ the kept share of pixels; kornia's (num_mix, B, 3) rows carry λ as the "
        "partner's weight unless use_correct_lambda=True (kornia issue 3077), and it costs 61 ms a batch "
        "where dalaug's CutMix takes 0.4 ms (BENCHMARKS.md, H200)"
    ),
}


@dataclasses.dataclass(frozen=True)
class KorniaParams(Params):
    """kornia's own draw for one batch: its params dict (one module) or list of ``ParamItem``
    (a container), on the host as kornia makes them; ``module(images, params=drawn)`` replays it."""

    drawn: Any


class KorniaOp(BatchOp):
    """A kornia 2-D augmentation (or ``AugmentationSequential`` of them) as a batch operator.

    Each image keeps its own label. The targets come back as they were given (the loader, a
    Schedule and ``measure_gap`` hand soft targets (B, C) over), or, with ``num_classes`` or
    ``label_smoothing``, as soft targets (B, C) like every dalaug operator's: give it where the
    operator is called on class indices beside mixing ones (in a ``RandomChoice`` called by hand),
    so that every pick returns the same kind of targets. The images come back on their
    device, in their dtype and memory format: kornia returns contiguous NCHW from most modules, so a
    channels_last batch is converted back, and a float16 or bfloat16 batch is computed in float32
    (kornia's grids and colour maths lose too much in half precision). A module that would change
    the batch's shape (a crop or resize to another size) is refused at its first call.

    Values: dalaug's loaders hand over normalized images (ImageNet mean and std by default). kornia's
    geometric ops, blur and noise do not care; its colour and intensity ops (ColorJiggle, RandomSolarize,
    RandomEqualize, RandomPosterize, ...) expect [0, 1]. For those, build the loader with
    ``mean=(0, 0, 0), std=(1, 1, 1)`` and end the sequence with ``kornia.augmentation.Normalize``.

    Args:
        module: a ``kornia.augmentation`` 2-D augmentation, or an ``AugmentationSequential`` /
            ``ImageSequential`` of them (nested ones too); anything else raises TypeError naming it.
        num_classes: turn class indices into soft targets (B, C); None passes them through.
        label_smoothing: s in [0, 1) for the soft targets (see ``soft_targets``).
        seed: seeds the operator's own CPU generator (see ``BatchOp``); a generator passed to a call
            (the loader's, the Trainer's) wins.

    Attributes:
        p: the module's own ``p`` (read and written through), so that ``Fade(op, "p")`` fades it;
            None for a container, which has none.

    ``sample`` returns ``KorniaParams``. Parameters are drawn on the CPU whatever device the
    module was moved to: a module moved to CUDA (``aug.cuda()``) would draw from the CUDA
    generator, which no checkpoint of dalaug's holds, so its samplers are put back on the CPU.

    Example:
        >>> import kornia.augmentation as K
        >>> blur = KorniaOp(K.RandomGaussianBlur((5, 5), (0.1, 2.0), p=1.0), seed=0)
        >>> images, soft = blur(torch.rand(8, 3, 32, 32), torch.eye(10)[:8])
        >>> images.shape, soft.shape
        (torch.Size([8, 3, 32, 32]), torch.Size([8, 10]))
    """

    mixes = False  # each image keeps its own label

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed=seed)
        self._augmentations = check_kornia(module)
        self.module = module
        self.num_classes = None if num_classes is None else check_count("num_classes", num_classes)
        smoothing = check_real("label_smoothing", label_smoothing)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {smoothing}")
        self.label_smoothing = smoothing

    @property
    def p(self) -> float | None:
        return getattr(self.module, "p", None)

    @p.setter
    def p(self, value: float) -> None:
        self.module.p = value

    @property
    def active(self) -> bool:
        """``enabled``, and the module's ``p`` (if it has one) above 0."""
        return super().active and (self.p is None or self.p > 0)

    def sample(self, images: Tensor, generator: torch.Generator | None = None) -> KorniaParams:
        """Let kornia draw this batch's parameters, its global CPU generator seeded from ours.

        Args:
            images: float tensor (N, C, H, W); only its shape is read.
            generator: optional CPU ``torch.Generator``.

        Returns:
            ``KorniaParams`` holding kornia's draw.
        """
        check_images(images)
        seed = host_seed(self.generator_for(generator))
        for augmentation in self._augmentations:
            if augmentation.device != _CPU:  # moved with the module: draw on the CPU again
                augmentation.set_rng_device_and_dtype(_CPU, augmentation.dtype)
        with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return KorniaParams(self.module.forward_parameters(images.shape))

    def apply(self, images: Tensor, targets: Tensor, params: KorniaParams) -> tuple[Tensor, Tensor]:
        """Apply kornia's draw to ``images``; the targets keep their labels.

        Args:
            images: float tensor (N, C, H, W) on any device.
            targets: class indices (N,) or soft targets (N, C).
            params: what ``sample`` returned for a batch of this shape.

        Returns:
            ``(images, targets)``: images in the input's dtype and memory format; targets as
            given, or soft targets (N, C) with ``num_classes`` or ``label_smoothing``.
        """
        check_images(images)
        work = images.float() if images.dtype in _COMPUTE_IN_FLOAT32 else images  # keeps the layout
        out = self._replay(work, params.drawn)
        if out.shape != images.shape:
            raise ValueError(
                f"operators: kornia's {type(self.module).__name__} turned a batch of {tuple(images.shape)} "
                f"into {tuple(out.shape)}; batch operators keep the batch's size (crop and resize in the "
                "loader)"
            )
        layout = torch.channels_last if _channels_last(images) else torch.contiguous_format
        if out.dtype != images.dtype or not out.is_contiguous(memory_format=layout):
            out = out.to(images.dtype, memory_format=layout)  # one copy for both
        return out, self._targets(targets)

    def passthrough(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """The images unchanged and the targets as ``apply`` returns them: a call when it is off."""
        return check_images(images), self._targets(targets)

    def _targets(self, targets: Tensor) -> Tensor:
        if self.num_classes is None and self.label_smoothing == 0.0:
            return targets
        return soft_targets(targets, self.num_classes, self.label_smoothing)

    def __copy__(self) -> KorniaOp:
        # Fade sets p on a copy: the copy gets a module of its own, so the one passed in keeps its p.
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.module = copy.copy(self.module)
        clone._augmentations = check_kornia(clone.module)
        return clone

    def _replay(self, images: Tensor, drawn: Any) -> Tensor:
        import kornia.augmentation as K  # loaded already: a lookup

        if isinstance(self.module, K.AugmentationSequential):  # built perhaps with masks or boxes too
            return self.module(images, params=drawn, data_keys=["input"])
        return self.module(images, params=drawn)


def is_kornia(obj: object) -> bool:
    """Whether ``obj`` is an instance of a kornia class (a subclass of one included), found
    without importing kornia: a process that never made a kornia object does not pay for it."""
    return any(cls.__module__.partition(".")[0] == "kornia" for cls in type(obj).__mro__)


def as_operator(op: Callable[..., Any]) -> Callable[..., Any]:
    """``op`` as a batch operator: a kornia module wrapped in :class:`KorniaOp` (or refused by
    name), anything else as it is. Every place that takes operators calls this.

    Example:
        >>> import kornia.augmentation as K
        >>> as_operator(K.RandomSolarize(p=1.0)).mixes
        False
    """
    if isinstance(op, BatchOp) or not is_kornia(op):
        return op
    return KorniaOp(op)


def check_kornia(module: object, inside: str = "") -> list[torch.nn.Module]:
    """The augmentations inside ``module`` (itself, or a container's leaves), or TypeError naming
    what is not a 2-D per-sample augmentation.

    kornia's ``RandomMixUpV2`` and ``RandomCutMixV2`` are refused by name, not translated to soft
    targets. Beyond their defaults a translation would be an approximation: MixUpV2's
    ``lambda_val=(a, b)`` draws λ uniformly on [a, b], which no Beta(α, α) is, and CutMixV2's
    ``num_mix > 1`` pastes several boxes, which dalaug's CutMix does not. At their defaults it
    would be a second, slower way to what dalaug's own do (λ ~ Uniform(0, 1) is Beta(1, 1); per
    sample, random partner), with one more place for CutMixV2's reversed λ (kornia issue 3077).
    BENCHMARKS.md, H200, 256x3x224x224 float32: kornia's CutMixV2 61 ms a batch against dalaug's
    CutMix 0.4 ms, MixUpV2 1.1 ms against Mixup 0.4 ms. The error says which dalaug operator to use.
    """
    import kornia.augmentation as K  # only reached with a kornia object in hand: kornia is loaded
    from kornia.augmentation.auto.base import PolicyAugmentBase

    name = type(module).__name__ + inside
    if isinstance(module, K.MixAugmentationBaseV2):
        instead = _MIXING_INSTEAD.get(
            type(module).__name__, "dalaug mixes with its own Mixup, CutMix, SaliencyMix"
        )
        raise TypeError(
            f"operators: kornia's {name} mixes samples and is not taken as a batch operator; {instead}"
        )
    if isinstance(module, PolicyAugmentBase):
        raise TypeError(
            f"operators: kornia's {name} is an augmentation policy; give the loader policy='autoaugment', "
            "'randaugment' or 'trivialaugment' (DALI's, per image) instead"
        )
    if isinstance(module, K.RandomDissolving):
        raise TypeError(
            f"operators: kornia's {name} draws its latents while it applies, outside the parameters it "
            "returns, so the operator's generator cannot replay it"
        )
    if isinstance(module, K.VideoSequential | K.PatchSequential) or not isinstance(
        module, K.AugmentationBase2D | K.ImageSequential
    ):
        raise TypeError(
            f"operators: {type(module).__module__}.{name} is not a kornia 2-D per-sample augmentation; "
            "batch operators take kornia.augmentation's 2-D augmentations and AugmentationSequential "
            "(or ImageSequential) of them"
        )
    if isinstance(module, K.AugmentationBase2D):
        return [module]
    within = f" (inside {type(module).__name__}{inside})"
    return [leaf for child in module.children() for leaf in check_kornia(child, within)]


def _channels_last(images: Tensor) -> bool:
    # A batch contiguous both ways (C == 1, or H == W == 1) counts as NCHW, as suggest_memory_format has it.
    return images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()

"""The distribution-gap monitor: a model's loss on clean and on augmented versions of the same samples.

He et al., "Data Augmentation Revisited: Rethinking the Distribution Gap between Clean and Augmented
Data" (2019), Table 2: the cross-entropy of a trained model on the augmented training data,
R̂(f|P_aug), stays far above its cross-entropy on the clean training data, R̂(f|P), after heavy
augmentation (Mixup most of all), and both fall during the clean refinement phase. Logging
:func:`measure_gap` once per epoch on a few fixed training batches shows that gap and what the
clean refinement phase does to both losses (in EXPERIMENTS.md the clean loss falls faster than the
augmented one, so the difference can grow even while both fall).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dalaug.compose import apply_operators, leaf_operators
from dalaug.ops.kornia import as_operator
from dalaug.ops.manifold import ManifoldMixup


@dataclass(frozen=True)
class Gap:
    """Mean cross-entropies of one model on the same samples, clean and augmented.

    Attributes:
        clean: mean loss on the clean samples, R̂(f|P) in the paper.
        augmented: mean loss on their augmented version (soft targets), R̂(f|P_aug).
        samples: how many samples the means are over.
    """

    clean: float
    augmented: float
    samples: int

    @property
    def gap(self) -> float:
        """``augmented - clean``: how much harder the augmented samples are for the model."""
        return self.augmented - self.clean


def measure_gap(
    model: torch.nn.Module,
    clean: Iterable[tuple[Tensor, Tensor]],
    operators: Sequence[Callable[..., Any]] = (),
    *,
    augmented: Iterable[tuple[Tensor, Tensor]] | None = None,
    seed: int = 0,
    recalibrate_bn: bool = False,
) -> Gap:
    """The model's mean loss on clean batches and on the augmented version of the same samples.

    The model runs in eval mode without gradients (its mode is restored afterwards); a
    :class:`~dalaug.ops.ManifoldMixup` among the operators mixes the hidden states of the augmented
    forward all the same (``mixing_in_eval``), with BatchNorm in eval mode. The
    augmented version of a batch is the matching ``augmented`` batch (the pipeline with the
    policy), or the clean batch itself, passed through ``operators`` in order. The operators draw
    from a generator seeded with ``seed``, so repeated measurements see the same mixing and the
    operators' own random streams, which training uses, are left untouched.

    Use whole, small iterables: a list of batches, or a dedicated Loader over a few hundred
    training samples. Not the training loader itself: breaking off its epoch ends that epoch.

    Args:
        model: the classifier; its logits' width is the number of classes.
        clean: batches ``(images, targets)`` of the clean pipeline, targets int64 (B,).
        operators: batch operators, e.g. the heavy phase's Mixup (not :class:`~dalaug.Fade`
            wrappers: pass ``fade.op``), kornia augmentation modules included. Empty: the
            augmentation is the ``augmented`` pipeline's.
        augmented: batches of the same samples, in the same order, through the augmented
            pipeline: e.g. a Loader with the policy and the clean one's seed, set to the same
            epoch. None: the operators act on the clean batches.
        seed: seed of the operators' generator.
        recalibrate_bn: measure a copy of the model whose BatchNorm running statistics are
            re-estimated on the clean batches (``torch.optim.swa_utils.update_bn``). In eval mode
            a model normalises with the statistics it gathered in training: after a phase of
            mixed images those are the mixed images' (lower variance), which sharpens its logits
            on clean images and lowers their loss. Comparing a model trained with mixing to the
            end with a refined one is fair only with statistics of the same data (EXPERIMENTS.md
            shows both). The clean batches are then iterated twice: pass a list.

    Returns:
        A :class:`Gap` with both mean losses and the sample count.

    Example:
        >>> import torch
        >>> from dalaug.ops import Mixup
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
        >>> batches = [(torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))) for _ in range(2)]
        >>> gap = measure_gap(model, batches, [Mixup(alpha=1.0, num_classes=4)])
        >>> gap.samples
        32
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(operators, (str, bytes)) or not isinstance(operators, Sequence):
        raise TypeError(f"operators: expected a list of batch operators, got {operators!r}")
    for op in operators:
        if not callable(op):
            raise TypeError(f"operators: expected batch operators (callables), got {op!r}")
    operators = [as_operator(op) for op in operators]  # kornia's modules: wrapped, seeded from ours
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {seed!r}")
    lengths = (_length(clean), None if augmented is None else _length(augmented))
    if None not in lengths and lengths[0] != lengths[1]:
        raise ValueError(
            f"augmented: {lengths[1]} batches, but clean has {lengths[0]}; give both the same samples"
        )
    if not isinstance(recalibrate_bn, bool):
        raise TypeError(f"recalibrate_bn: expected a bool, got {recalibrate_bn!r}")
    device = next((p.device for p in model.parameters()), None)
    if recalibrate_bn:
        clean = list(clean)
        model = copy.deepcopy(model)  # the caller's model and its statistics stay as they are
        torch.optim.swa_utils.update_bn(clean, model, device)
    # Operators draw their parameters on the host: one CPU generator serves every device.
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    # Manifold Mixup mixes inside the model's forward, which it skips in eval mode unless told.
    manifold = [op for op in leaf_operators(operators) if isinstance(op, ManifoldMixup)]
    clean_sum = augmented_sum = None
    samples = 0
    try:
        with torch.no_grad(), contextlib.ExitStack() as stack:
            for op in manifold:
                stack.enter_context(op.mixing_in_eval())
            others = iter(augmented) if augmented is not None else None
            for index, (images, targets) in enumerate(clean):
                images, targets = _to(images, device), _to(targets, device)
                if others is None:  # a copy: an in-place operator must not write into the caller's batch
                    aug_images, aug_targets = images.clone(), targets
                else:
                    aug_images, aug_targets = _matching(index, targets, others, clean, augmented)
                    aug_images, aug_targets = _to(aug_images, device), _to(aug_targets, device)
                # The clean forward first: a Manifold Mixup call arms the model's next forward.
                logits = model(images)
                # As the Loader hands them over: soft targets, then each operator in turn.
                aug_images, aug_targets = apply_operators(
                    operators, aug_images, aug_targets, num_classes=logits.shape[1], generator=generator
                )
                # Unchanged images (no operator changed a pixel): the same logits, not a second
                # forward pass, whose rounding may differ (oneDNN picks kernels by buffer alignment).
                unchanged = others is None and not manifold and torch.equal(aug_images, images)
                aug_logits = logits if unchanged else model(aug_images)
                # Sums stay on the device; one read at the end instead of a sync per batch.
                clean_loss = _loss_sum(logits, targets)
                augmented_loss = _loss_sum(aug_logits, aug_targets)
                clean_sum = clean_loss if clean_sum is None else clean_sum + clean_loss
                augmented_sum = augmented_loss if augmented_sum is None else augmented_sum + augmented_loss
                samples += images.shape[0]
    finally:
        model.train(was_training)
    if samples == 0:
        raise ValueError("clean: no batches to measure")
    return Gap(float(clean_sum) / samples, float(augmented_sum) / samples, samples)


def _loss_sum(logits: Tensor, targets: Tensor) -> Tensor:
    """Summed cross-entropy against class indices (B,) or soft targets (B, C)."""
    logits = logits.float()
    if not targets.is_floating_point():
        # One formula for both kinds, so one-hot soft targets give exactly the indices' loss.
        targets = targets[:, None] == torch.arange(logits.shape[1], device=logits.device)
    return -(targets.float() * F.log_softmax(logits, dim=1)).sum()


def _matching(index: int, targets: Tensor, others, clean, augmented) -> tuple[Tensor, Tensor]:
    """The augmented batch ``index``, checked to hold the clean batch's samples."""
    try:
        aug_images, aug_targets = next(others)
    except StopIteration:
        raise ValueError(f"augmented: ran out after {index} batches; give both the same samples") from None
    if aug_targets.shape != targets.shape:
        raise ValueError(
            f"augmented: batch {index} has targets shaped {tuple(aug_targets.shape)}, the clean one "
            f"{tuple(targets.shape)}; give both class indices (or both soft targets)"
        )
    ids, aug_ids = getattr(clean, "sample_ids", None), getattr(augmented, "sample_ids", None)
    same_ids = ids is None or aug_ids is None or torch.equal(ids, aug_ids)
    same_labels = aug_targets.shape == targets.shape and torch.equal(aug_targets.to(targets.device), targets)
    if not (same_ids and same_labels):
        raise ValueError(
            f"augmented: batch {index} holds other samples than the clean one; build both loaders "
            "with the same seed and set them to the same epoch"
        )
    return aug_images, aug_targets


def _to(tensor: Tensor, device: torch.device | None) -> Tensor:
    return tensor if device is None else tensor.to(device, non_blocking=True)


def _length(batches: object) -> int | None:
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        return None

"""Batch operators applied in order to a batch: the one place that turns labels into soft targets.

The Loader (its ``operators=``), the phased loader of a Schedule and the training loop all mix
batches the same way: class indices become soft targets (B, C), then each operator takes the
previous one's output. dalaug's operators draw their parameters from the generator given (on the
host, so nothing waits for the device); any other callable ``op(images, soft)`` is called as is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from dalaug.ops import BatchOp, RandomChoice, soft_targets


def apply_operators(
    operators: Sequence[Callable[..., Any]],
    images: Tensor,
    targets: Tensor,
    *,
    num_classes: int,
    generator: torch.Generator,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """``(images, soft targets (B, C))`` after every operator in order (none: just soft targets).

    Example:
        >>> import dalaug
        >>> mix = dalaug.Mixup(alpha=1.0, num_classes=3)
        >>> images, soft = apply_operators([mix], torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]),
        ...                                num_classes=3, generator=torch.Generator().manual_seed(0))
        >>> soft.shape
        torch.Size([4, 3])
    """
    return run_operators(operators, images, soft_targets(targets, num_classes, label_smoothing), generator)


def run_operators(
    operators: Sequence[Callable[..., Any]], images: Tensor, targets: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Each operator on the previous one's output, dalaug's drawing from ``generator``."""
    for op in operators:
        if isinstance(op, BatchOp):
            images, targets = op(images, targets, generator=generator)
        else:
            images, targets = op(images, targets)
    return images, targets


def changes_labels(operators: Iterable[Callable[..., Any]]) -> bool:
    """Whether the operators give each sample a label other than its own class: one mixes samples
    (Mixup, CutMix, ...; any callable not dalaug's is taken to) or smooths the labels."""
    return any(getattr(op, "mixes", True) or getattr(op, "label_smoothing", 0.0)
               for op in leaf_operators(operators))  # fmt: skip


def leaf_operators(operators: Iterable[Callable[..., Any]]) -> Iterator[Callable[..., Any]]:
    """Every operator in ``operators``, a ``RandomChoice`` followed by each of its choices (for
    what needs each one: a Manifold Mixup to attach to the model, a class count to check)."""
    for op in operators:
        yield op
        if isinstance(op, RandomChoice):
            yield from leaf_operators(op.ops)

"""Who mixes with whom: partner indices, and in-place mixing with the mirror image.

The default pairing is the mirror, sample i with N - 1 - i (timm's ``x.flip(0)``). In place it
needs no full-batch copy of the partners: the two halves of the batch are each other's partners,
so half-size temporaries suffice. On the CPU that matters more than the bytes: every fresh
allocation of a whole batch is page-faulted in again (about as costly as two passes over it).
On CUDA the bytes moved are the same either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

Partner = Literal["flip", "permute"]

# mix(own, other, index, out): the mixed block for samples `index` (K,), given their pixels `own`
# and their partners' `other` (both (K, C, H, W)); written into `out` when given, else new.
Mix = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]


def check_partner(partner: object) -> Partner:
    """Return ``partner`` if it is "flip" or "permute", else raise naming it."""
    if partner not in ("flip", "permute"):
        raise ValueError(f"partner must be 'flip' or 'permute', got {partner!r}")
    return partner  # type: ignore[return-value]


def sample_partner(
    batch: int, mode: Partner, device: torch.device, generator: torch.Generator | None
) -> Tensor:
    """Index (B,) of the image each sample is mixed with: its mirror, or a random permutation."""
    if mode == "flip":
        return torch.arange(batch - 1, -1, -1, device=device)
    return torch.randperm(batch, generator=generator, device=device)


def mix_with_mirror_(images: Tensor, mix: Mix) -> Tensor:
    """In place, set ``images[i] = mix(images[i], images[N - 1 - i])`` for every i.

    The two halves of the batch are each other's partners, so half-size temporaries suffice. An
    odd batch's middle sample is its own partner and is not touched.

    Returns:
        ``images``.
    """
    batch = images.shape[0]
    half = batch // 2
    reverse = torch.arange(half - 1, -1, -1, device=images.device)
    first, second = images[:half], images[batch - half :]
    mirrored = second.index_select(0, reverse)  # mirrored[i] is image N - 1 - i
    # The second half's new pixels (in mirrored order) are computed before `first` changes.
    new_mirrored = mix(mirrored, first, (batch - 1) - torch.arange(half, device=images.device), None)
    mix(first, mirrored, torch.arange(half, device=images.device), first)
    second.index_copy_(0, reverse, new_mirrored)
    return images


def take_partner(own: Tensor, other: Tensor, index: Tensor, out: Tensor | None) -> Tensor:
    """A ``Mix`` that replaces each sample by its partner: ``mix_with_mirror_`` then swaps."""
    return other.clone() if out is None else out.copy_(other)

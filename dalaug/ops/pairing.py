"""Who mixes with whom: partner indices drawn on the host, and the partners' pixels on the device.

The default pairing is the mirror, sample i with N - 1 - i (timm's ``x.flip(0)``): the partners'
batch is one ``flip``, with no index to ship. "permute" draws a random permutation on the host;
"roll" pairs sample i with i - 1 (torchvision v2's ``MixUp`` and ``CutMix``: ``batch.roll(1, 0)``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from dalaug.ops.sampling import to_device

Partner = Literal["flip", "permute", "roll"]


def check_partner(partner: object) -> Partner:
    """Return ``partner`` if it is "flip", "permute" or "roll", else raise naming it."""
    if partner not in ("flip", "permute", "roll"):
        raise ValueError(f"partner must be 'flip', 'permute' or 'roll', got {partner!r}")
    return partner  # type: ignore[return-value]


def draw_partner(batch: int, mode: Partner, rng: np.random.Generator) -> np.ndarray:
    """int64 (B,) index of the image each sample is mixed with: its mirror, or a permutation."""
    if mode == "flip":
        return np.arange(batch - 1, -1, -1, dtype=np.int64)
    if mode == "roll":
        return np.roll(np.arange(batch, dtype=np.int64), 1)
    return rng.permutation(batch).astype(np.int64)


def partner_tensor(partner: np.ndarray, mode: Partner, device: torch.device) -> Tensor:
    """``partner`` on ``device``. On the CPU the host array is the tensor; elsewhere the mirror is
    one ``arange`` on the device, which costs less host time than a copy."""
    if mode == "flip" and device.type != "cpu":
        return _mirror(partner.shape[0], device)
    return to_device([partner], device)[0]


@functools.lru_cache(maxsize=64)
def _mirror(batch: int, device: torch.device) -> Tensor:
    """The mirror pairing on ``device``, made once per batch size: no launch per call."""
    return torch.arange(batch - 1, -1, -1, device=device)


def partner_images(images: Tensor, partner: Tensor, mirrored: bool) -> Tensor:
    """A new batch holding each sample's partner, in the input's memory format.

    Args:
        images: (N, C, H, W), or any view of it such as a patch.
        partner: int64 (N,) on the images' device: whose pixels each sample gets.
        mirrored: ``partner`` is the mirror pairing i <-> N - 1 - i, which is one ``flip``.
    """
    if mirrored:
        return images.flip(0)
    # index_select alone returns contiguous NCHW; writing into empty_like keeps channels_last.
    return into(torch.empty_like(images), torch.index_select, images, 0, partner)


def into(out: Tensor, op: Callable[..., Tensor], *args: object) -> Tensor:
    """``op(*args, out=out)``: the operators' results land in a batch they choose (the input when
    in place, or a fresh batch in the input's memory format).

    Autograd cannot record an ``out=`` call. When it tracks one of ``args`` (features mixed inside
    a model, an adversarial batch), the result is made anew and copied into ``out``: the same
    values, one copy more, and the gradient flows."""
    if torch.is_grad_enabled() and any(isinstance(arg, Tensor) and arg.requires_grad for arg in args):
        return out.copy_(op(*args))
    return op(*args, out=out)

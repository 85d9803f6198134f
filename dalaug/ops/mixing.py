"""Mixup and CutMix on batched tensors, with soft targets.

- mixup: Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: Beyond Empirical Risk Minimization", ICLR 2018.
- CutMix: Yun, Han, Oh, Chun, Choe, Yoo, "CutMix: Regularization Strategy to Train Strong
  Classifiers with Localizable Features", ICCV 2019.

Both pair every sample with a partner from the same batch (its mirror, ``flip``, as in timm, or a
random permutation) and draw λ ~ Beta(α, α) on the host, one per batch or one per sample (see
``dalaug.ops.sampling``). One λ for the batch stays a Python float: Mixup is then one ``flip`` and
one ``lerp`` over the batch, and CutMix with one box copies just the patch. Per-sample λ and boxes
reach the device in one non-blocking copy and are applied with one ``lerp`` or one ``where`` over
the batch. On CUDA the mirror pairing goes further: one kernel reads each pair once and writes both
(``dalaug.ops.fused``). Nothing waits for the device.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from dalaug.ops.base import Augmentation, Params, check_bool, check_positive, mixed_soft_targets
from dalaug.ops.boxes import (
    HostBox,
    box_mask,
    boxes_around,
    cut_sizes,
    kept_fraction,
    paste_box,
    paste_masked,
)
from dalaug.ops.fused import blend_mirrored, exchange_mirrored_boxes
from dalaug.ops.pairing import Partner, check_partner, draw_partner, into, partner_images, partner_tensor
from dalaug.ops.sampling import to_device


@dataclasses.dataclass(frozen=True)
class MixupParams(Params):
    """Mixup's parameters for one batch of N images.

    Attributes:
        lam: weight of each image's own pixels: a float (one λ for the batch) or float32 (N,) on
            the batch's device; 1 where the sample was not mixed.
        label_lam: weight of each image's own label, of the same kind; ``lam`` unless ``label_alpha``.
        partner: int64 (N,) on the batch's device, the image each sample is mixed with.
        mirrored: True when ``partner`` is the mirror pairing i <-> N - 1 - i ("flip"), which is
            applied as one ``flip`` of the batch instead of a gather.
    """

    lam: float | Tensor
    label_lam: float | Tensor
    partner: Tensor
    mirrored: bool = False


@dataclasses.dataclass(frozen=True)
class BoxParams(Params):
    """CutMix's (and SaliencyMix's) parameters for one batch of N images.

    Attributes:
        boxes: one box for the whole batch as ints on the host ``(top, bottom, left, right)``,
            pasted by slicing; or int64 (1, 4) or (N, 4) on the batch's device, pasted through a
            mask. Bottom/right exclusive, clipped; empty where the sample was not mixed.
        lam: the exact share of each image's pixels kept from itself: a float with a host box,
            else float32 (N,) on the batch's device.
        partner: int64 (N,) on the batch's device, the image each sample takes its patch from.
        mirrored: True when ``partner`` is the mirror pairing i <-> N - 1 - i ("flip").
    """

    boxes: HostBox | Tensor
    lam: float | Tensor
    partner: Tensor
    mirrored: bool = False


def exact_weight(lam: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """Round λ to a multiple of the dtype's spacing in [0.5, 1), so λ and 1 - λ are exact in it.

    The pixels are blended in the image dtype (bf16 keeps 8 significant bits); rounding λ first
    means the labels carry exactly the weight the pixels got.
    """
    steps = 2.0 / torch.finfo(dtype).eps
    return np.rint(lam * steps) / steps  # np.round's rounding at a tenth of its cost on a scalar


class Mixup(Augmentation):
    """Blend each image and its label with a partner's: ``x' = λ·x + (1 - λ)·x_partner``.

    Args:
        alpha: λ ~ Beta(alpha, alpha); alpha > 0.
        num_classes: number of classes; required when targets are class indices.
        p: probability of mixing (per batch, or per sample when ``per_sample``).
        label_smoothing: s in [0, 1) for the soft targets.
        per_sample: one λ per sample instead of one per batch.
        partner: "flip" pairs sample i with N - 1 - i (timm); "permute" uses a random permutation
            (a sample can then be its own partner).
        label_alpha: if set, the labels use their own λ' ~ Beta(label_alpha, label_alpha), drawn
            independently of the pixels' λ; otherwise the labels use λ.
        inplace: blend into ``images`` instead of returning a new tensor.
        seed: seeds the operator's CPU generator (see ``BatchOp``).

    ``sample`` returns ``MixupParams``. λ is rounded so that it is exact in the image dtype. With
    the mirror pairing a CUDA batch is blended in one pass (``dalaug.ops.fused``).

    Example:
        >>> import torch
        >>> from dalaug.ops import Mixup
        >>> mix = Mixup(alpha=1.0, num_classes=10, seed=0)
        >>> images, soft = mix(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        >>> images.shape, soft.shape
        (torch.Size([8, 3, 32, 32]), torch.Size([8, 10]))
    """

    def __init__(
        self,
        alpha: float = 1.0,
        num_classes: int | None = None,
        *,
        p: float = 1.0,
        label_smoothing: float = 0.0,
        per_sample: bool = False,
        partner: Partner = "flip",
        label_alpha: float | None = None,
        inplace: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            p=p,
            num_classes=num_classes,
            label_smoothing=label_smoothing,
            inplace=inplace,
            seed=seed,
        )
        self.alpha = check_positive("alpha", alpha)
        self.label_alpha = None if label_alpha is None else check_positive("label_alpha", label_alpha)
        self.per_sample = check_bool("per_sample", per_sample)
        self.partner = check_partner(partner)

    def _sample(self, images: Tensor, rng: np.random.Generator) -> MixupParams:
        batch = images.shape[0]
        size = batch if self.per_sample else None  # scalars for one λ per batch: less host time
        applied = rng.random(size) < self.p
        lam = np.where(applied, exact_weight(rng.beta(self.alpha, self.alpha, size), images.dtype), 1.0)
        label_lam = lam
        if self.label_alpha is not None:
            label_lam = np.where(applied, rng.beta(self.label_alpha, self.label_alpha, size), 1.0)
        partner = draw_partner(batch, self.partner, rng)
        mirrored = self.partner == "flip"
        if not self.per_sample:
            partner_t = partner_tensor(partner, self.partner, images.device)
            return MixupParams(float(lam), float(label_lam), partner_t, mirrored)
        lam_t, label_t, partner_t = to_device(
            [lam.astype(np.float32), label_lam.astype(np.float32), partner], images.device
        )
        return MixupParams(lam_t, label_t, partner_t, mirrored)

    def _apply_images(self, images: Tensor, params: MixupParams) -> Tensor:
        # Every path computes lerp(x, x_partner, 1 - λ), which returns x exactly at weight 0, so
        # unmixed samples come back bit for bit. Mirrored pairs on CUDA: one pass that reads each
        # pair once. Otherwise two: the partners' copy, then the blend.
        if not isinstance(params.lam, Tensor) and params.lam == 1.0:
            return images
        if params.mirrored:
            blended = blend_mirrored(images, params.lam, inplace=self.inplace)
            if blended is not None:
                return blended
        if isinstance(params.lam, Tensor):
            weight: float | Tensor = (1.0 - params.lam).to(images.dtype).view(-1, 1, 1, 1)
        else:
            weight = 1.0 - params.lam
        donors = partner_images(images, params.partner, params.mirrored)
        if self.inplace:
            return images.lerp_(donors, weight)
        # Blend into the partners' copy: one batch-sized allocation, not two.
        return into(donors, torch.lerp, images, donors, weight)

    def _mix_targets(self, targets: Tensor, smoothing: float, params: MixupParams) -> Tensor:
        return mixed_soft_targets(
            targets, self.num_classes, smoothing, params.label_lam, params.partner, params.mirrored
        )


class CutMix(Augmentation):
    """Paste a box from a partner image; mix labels by the exact share of pixels kept.

    The box has sides ``floor(sqrt(1 - λ)·H)`` and ``floor(sqrt(1 - λ)·W)`` with λ ~ Beta(α, α), its
    centre is uniform over the image, and it is clipped at the borders; λ is then recomputed as the
    exact fraction of pixels that stayed from the original image. One box for the batch is a host
    box, and only the patch is copied; per-sample boxes select the partner's pixels with one
    broadcast mask. With the mirror pairing a CUDA batch is mixed in one pass (``dalaug.ops.fused``).

    Args:
        alpha: λ ~ Beta(alpha, alpha); alpha > 0.
        num_classes: number of classes; required when targets are class indices.
        p: probability of mixing (per batch, or per sample when ``per_sample``).
        label_smoothing: s in [0, 1) for the soft targets.
        per_sample: one λ and one box per sample instead of one for the batch.
        partner: "flip" (sample i takes from N - 1 - i) or "permute" (a random permutation).
        inplace: paste into ``images`` instead of returning a new tensor.
        seed: seeds the operator's CPU generator (see ``BatchOp``).

    ``sample`` returns ``BoxParams``.

    Example:
        >>> import torch
        >>> from dalaug.ops import CutMix
        >>> cutmix = CutMix(alpha=1.0, num_classes=10, seed=0)
        >>> images, soft = cutmix(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        >>> torch.allclose(soft.sum(1), torch.ones(8))
        True
    """

    def __init__(
        self,
        alpha: float = 1.0,
        num_classes: int | None = None,
        *,
        p: float = 1.0,
        label_smoothing: float = 0.0,
        per_sample: bool = False,
        partner: Partner = "flip",
        inplace: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            p=p,
            num_classes=num_classes,
            label_smoothing=label_smoothing,
            inplace=inplace,
            seed=seed,
        )
        self.alpha = check_positive("alpha", alpha)
        self.per_sample = check_bool("per_sample", per_sample)
        self.partner = check_partner(partner)

    def _draw_sizes(
        self, images: Tensor, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Box sides, 0 where not applied, and the partners (B,), on the host: arrays (B,) per
        sample, or scalars for one box per batch (numpy on scalars costs a fraction of size-1 arrays,
        and host time is what a call costs on the GPU)."""
        size = images.shape[0] if self.per_sample else None
        applied = rng.random(size) < self.p
        box_h, box_w = cut_sizes(rng.beta(self.alpha, self.alpha, size), *images.shape[-2:])
        return box_h * applied, box_w * applied, draw_partner(images.shape[0], self.partner, rng)

    def _sample(self, images: Tensor, rng: np.random.Generator) -> BoxParams:
        height, width = images.shape[-2:]
        box_h, box_w, partner = self._draw_sizes(images, rng)
        size = images.shape[0] if self.per_sample else None
        centre_y, centre_x = rng.integers(0, height, size), rng.integers(0, width, size)
        boxes = boxes_around(centre_y, centre_x, box_h, box_w, height, width)
        mirrored = self.partner == "flip"
        if not self.per_sample:
            partner_t = partner_tensor(partner, self.partner, images.device)
            box = tuple(int(edge) for edge in boxes)
            return BoxParams(box, float(kept_fraction(boxes, height, width)), partner_t, mirrored)
        boxes_t, lam_t, partner_t = to_device(
            [boxes, kept_fraction(boxes, height, width), partner], images.device
        )
        return BoxParams(boxes_t, lam_t, partner_t, mirrored)

    def _apply_images(self, images: Tensor, params: BoxParams) -> Tensor:
        if params.mirrored:  # on CUDA one pass over the pairs (dalaug.ops.fused)
            exchanged = exchange_mirrored_boxes(images, params.boxes, inplace=self.inplace)
            if exchanged is not None:
                return exchanged
        if isinstance(params.boxes, tuple):
            return paste_box(images, params.boxes, params.partner, params.mirrored, inplace=self.inplace)
        mask = box_mask(params.boxes, *images.shape[-2:])[:, None]
        return paste_masked(images, mask, params.partner, params.mirrored, inplace=self.inplace)

    def _mix_targets(self, targets: Tensor, smoothing: float, params: BoxParams) -> Tensor:
        return mixed_soft_targets(
            targets, self.num_classes, smoothing, params.lam, params.partner, params.mirrored
        )

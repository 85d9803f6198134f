"""Mixup and CutMix on batched tensors, with soft targets.

- mixup: Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: Beyond Empirical Risk Minimization", ICLR 2018.
- CutMix: Yun, Han, Oh, Chun, Choe, Yoo, "CutMix: Regularization Strategy to Train Strong
  Classifiers with Localizable Features", ICCV 2019.

Both pair every sample with a partner from the same batch (its mirror, ``flip``, as in timm, or a
random permutation) and draw λ ~ Beta(α, α) from the operator's generator, one per batch or one per
sample. All parameters are tensors on the batch's device and nothing on CUDA waits for the device.
On the CPU, where reading a parameter on the host is free, CutMix slices its single box to copy
only the patch. The mirror pairing mixes blocks of pairs in place (see ``dalaug.ops.pairing``).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from dalaug.ops.base import Augmentation, Params, check_positive, mix_soft_targets
from dalaug.ops.boxes import boxes_around, cut_sizes, kept_fraction, paste_boxes
from dalaug.ops.pairing import Partner, check_partner, mix_with_mirror_, sample_partner
from dalaug.ops.sampling import sample_beta


@dataclasses.dataclass(frozen=True)
class MixupParams(Params):
    """Mixup's parameters for one batch of N images.

    Attributes:
        lam: float32 (N,), weight of each image's own pixels (1 where the sample was not mixed).
        label_lam: float32 (N,), weight of each image's own label; ``lam`` unless ``label_alpha``.
        partner: int64 (N,), the image each sample is mixed with.
        mirrored: True when ``partner`` is the mirror pairing i <-> N - 1 - i ("flip"), which
            lets the in-place path swap batch halves instead of copying the whole batch.
    """

    lam: Tensor
    label_lam: Tensor
    partner: Tensor
    mirrored: bool = False


@dataclasses.dataclass(frozen=True)
class BoxParams(Params):
    """CutMix's (and SaliencyMix's) parameters for one batch of N images.

    Attributes:
        boxes: int64 (1, 4), one box for the whole batch, or (N, 4); rows (top, bottom, left,
            right), bottom/right exclusive, clipped. Empty where the sample was not mixed.
        lam: float32 (N,), the exact share of each image's pixels kept from itself.
        partner: int64 (N,), the image each sample takes its patch from.
        mirrored: True when ``partner`` is the mirror pairing i <-> N - 1 - i ("flip").
    """

    boxes: Tensor
    lam: Tensor
    partner: Tensor
    mirrored: bool = False


def exact_weight(lam: Tensor, dtype: torch.dtype) -> Tensor:
    """Round λ to a multiple of the dtype's spacing in [0.5, 1), so λ and 1 - λ are exact in it.

    The pixels are blended in the image dtype (bf16 keeps 8 significant bits); rounding λ first
    means the labels carry exactly the weight the pixels got.
    """
    steps = 2.0 / torch.finfo(dtype).eps
    return torch.round(lam * steps) / steps


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
        seed: seeds the operator's generators (see ``BatchOp``).

    ``sample`` returns ``MixupParams``. λ is rounded so that it is exact in the image dtype.

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
        self.per_sample = bool(per_sample)
        self.partner = check_partner(partner)

    def _sample(self, images: Tensor, generator: torch.Generator | None) -> MixupParams:
        batch, device = images.shape[0], images.device
        n = batch if self.per_sample else 1
        lam = sample_beta(self.alpha, self.alpha, n, device=device, generator=generator)
        label_lam = lam
        if self.label_alpha is not None:
            label_lam = sample_beta(self.label_alpha, self.label_alpha, n, device=device, generator=generator)
        applied = self._applied(n, device, generator)
        lam = exact_weight(torch.where(applied, lam, 1.0), images.dtype)
        label_lam = lam if self.label_alpha is None else torch.where(applied, label_lam, 1.0)
        partner = sample_partner(batch, self.partner, device, generator)
        mirrored = self.partner == "flip"
        return MixupParams(lam.expand(batch), label_lam.expand(batch), partner, mirrored)

    def _apply_images(self, images: Tensor, params: MixupParams) -> Tensor:
        # Every path computes lerp(x, x_partner, 1 - λ), which returns x exactly at weight 0 (so
        # unmixed samples come back bit for bit) and rounds the same way in each path.
        weight = (1.0 - params.lam).to(images.dtype).view(-1, 1, 1, 1)
        if params.mirrored:

            def blend(own: Tensor, other: Tensor, index: Tensor, out: Tensor | None) -> Tensor:
                return torch.lerp(own, other, weight.index_select(0, index), out=out)

            return mix_with_mirror_(images if self.inplace else images.clone(), blend)
        donors = images.index_select(0, params.partner)
        if self.inplace:
            return images.lerp_(donors, weight)
        # Blend into the partner copy: one batch-sized allocation, not two.
        return torch.lerp(images, donors, weight, out=donors)

    def _mix_targets(self, soft: Tensor, params: MixupParams) -> Tensor:
        return mix_soft_targets(soft, params.label_lam, params.partner)


class CutMix(Augmentation):
    """Paste a box from a partner image; mix labels by the exact share of pixels kept.

    The box has sides ``floor(sqrt(1 - λ)·H)`` and ``floor(sqrt(1 - λ)·W)`` with λ ~ Beta(α, α), its
    centre is uniform over the image, and it is clipped at the borders; λ is then recomputed as the
    exact fraction of pixels that stayed from the original image. Only the patch is copied when one
    box serves the batch on the CPU; otherwise a broadcast mask selects the partner's pixels.

    Args:
        alpha: λ ~ Beta(alpha, alpha); alpha > 0.
        num_classes: number of classes; required when targets are class indices.
        p: probability of mixing (per batch, or per sample when ``per_sample``).
        label_smoothing: s in [0, 1) for the soft targets.
        per_sample: one λ and one box per sample instead of one for the batch.
        partner: "flip" (sample i takes from N - 1 - i) or "permute" (a random permutation).
        inplace: paste into ``images`` instead of returning a new tensor.
        seed: seeds the operator's generators (see ``BatchOp``).

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
        self.per_sample = bool(per_sample)
        self.partner = check_partner(partner)

    def _sample(self, images: Tensor, generator: torch.Generator | None) -> BoxParams:
        batch, device = images.shape[0], images.device
        height, width = images.shape[-2:]
        n = batch if self.per_sample else 1
        lam = sample_beta(self.alpha, self.alpha, n, device=device, generator=generator)
        applied = self._applied(n, device, generator)
        box_h, box_w = cut_sizes(lam, height, width)
        box_h, box_w = box_h * applied, box_w * applied  # not applied: an empty box
        partner = sample_partner(batch, self.partner, device, generator)
        centre_y, centre_x = self._centres(images, partner, n, generator)
        boxes = boxes_around(centre_y, centre_x, box_h, box_w, height, width)
        lam = kept_fraction(boxes, height, width).expand(batch)
        return BoxParams(boxes, lam, partner, self.partner == "flip")

    def _centres(
        self, images: Tensor, partner: Tensor, n: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """Box centres (n,) each: uniform over the image, as in the CutMix paper."""
        height, width = images.shape[-2:]
        centre_y = torch.randint(0, height, (n,), generator=generator, device=images.device)
        centre_x = torch.randint(0, width, (n,), generator=generator, device=images.device)
        return centre_y, centre_x

    def _apply_images(self, images: Tensor, params: BoxParams) -> Tensor:
        return paste_boxes(
            images, params.partner, params.boxes, inplace=self.inplace, mirrored=params.mirrored
        )

    def _mix_targets(self, soft: Tensor, params: BoxParams) -> Tensor:
        return mix_soft_targets(soft, params.lam, params.partner)

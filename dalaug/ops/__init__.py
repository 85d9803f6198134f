"""Batch operators on image tensors: Mixup, CutMix, Cutout, RandomErasing, SaliencyMix, RandomChoice,
and kornia's 2-D augmentations through KorniaOp.

Each takes ``(images (N, C, H, W) float, targets)`` with integer class indices (N,) or soft targets
(N, C) and returns ``(images, soft_targets (N, C))``; see ``dalaug.ops.base`` for the protocol.
"""

from dalaug.ops.base import Augmentation, BatchOp, ChoiceParams, RandomChoice, soft_targets
from dalaug.ops.cutout import Cutout, CutoutParams
from dalaug.ops.erasing import RandomErasing
from dalaug.ops.kornia import KorniaOp, KorniaParams, as_operator
from dalaug.ops.manifold import ManifoldHandle, ManifoldMixup, ManifoldParams
from dalaug.ops.mixing import BoxParams, CutMix, Mixup, MixupParams
from dalaug.ops.saliency import SaliencyMix, saliency_peaks, spectral_residual_saliency

__all__ = [
    "Augmentation",
    "BatchOp",
    "BoxParams",
    "ChoiceParams",
    "CutMix",
    "Cutout",
    "CutoutParams",
    "KorniaOp",
    "KorniaParams",
    "ManifoldHandle",
    "ManifoldMixup",
    "ManifoldParams",
    "Mixup",
    "MixupParams",
    "RandomChoice",
    "RandomErasing",
    "SaliencyMix",
    "as_operator",
    "saliency_peaks",
    "soft_targets",
    "spectral_residual_saliency",
]

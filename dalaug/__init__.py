"""dalaug: DALI loaders, GPU batch mixing and a clean refinement phase for image classification.

>>> import dalaug
>>> train = dalaug.Loader("data/train", batch_size=64, train=True, policy="autoaugment")  # doctest: +SKIP
>>> mix = dalaug.Mixup(alpha=1.0, num_classes=1000)  # doctest: +SKIP
>>> for images, targets in train:  # doctest: +SKIP
...     images, soft = mix(images, targets)
"""

from dalaug import checkpoint
from dalaug.cifar import convert_cifar
from dalaug.config import LoaderConfig
from dalaug.gap import Gap, measure_gap
from dalaug.loader import IMAGENET_MEAN, IMAGENET_STD, DecodeError, Loader
from dalaug.ops import (
    CutMix,
    Cutout,
    ManifoldMixup,
    Mixup,
    RandomChoice,
    RandomErasing,
    SaliencyMix,
    soft_targets,
)
from dalaug.policies import AutoAugment, RandAugment, TimmRandAugment, TrivialAugment
from dalaug.schedule import Fade, Phase, PhasedLoader, Schedule, early_stop, fade_out, refine
from dalaug.verify import VerifyReport, verify

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AutoAugment",
    "CutMix",
    "Cutout",
    "DecodeError",
    "Fade",
    "Gap",
    "Loader",
    "ManifoldMixup",
    "LoaderConfig",
    "Mixup",
    "Phase",
    "PhasedLoader",
    "RandAugment",
    "RandomChoice",
    "RandomErasing",
    "SaliencyMix",
    "Schedule",
    "TimmRandAugment",
    "TrivialAugment",
    "VerifyReport",
    "checkpoint",
    "convert_cifar",
    "early_stop",
    "fade_out",
    "measure_gap",
    "refine",
    "soft_targets",
    "verify",
]

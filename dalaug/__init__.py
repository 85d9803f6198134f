"""dalaug: DALI loaders, GPU batch mixing and a clean refinement phase for image classification.

>>> import dalaug
>>> train = dalaug.Loader("data/train", batch_size=64, policy="autoaugment")  # doctest: +SKIP
"""

from dalaug.loader import IMAGENET_MEAN, IMAGENET_STD, Loader
from dalaug.policies import AutoAugment, RandAugment, TrivialAugment

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AutoAugment",
    "Loader",
    "RandAugment",
    "TrivialAugment",
]

"""dalaug: DALI loaders, GPU batch mixing and a clean refinement phase for image classification.

>>> import dalaug
>>> train = dalaug.Loader("data/train", batch_size=64, train=True, policy="autoaugment")  # doctest: +SKIP
>>> mix = dalaug.Mixup(alpha=1.0, num_classes=1000)  # doctest: +SKIP
>>> for images, targets in train:  # doctest: +SKIP
...     images, soft = mix(images, targets)
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what editors and type checkers see; at run time __getattr__ imports these
    from dalaug import checkpoint
    from dalaug.cifar import convert_cifar
    from dalaug.config import LoaderConfig
    from dalaug.dropin import DataLoader
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
    from dalaug.reading.verification import VerifyReport, verify
    from dalaug.schedule import Fade, Phase, PhasedLoader, Schedule, early_stop, fade_out, refine

# Where each public name lives. Imported on first use (PEP 562), so a process that needs one small
# module (the file-reading workers import dalaug.reading.workers) does not pay for torch and DALI.
_EXPORTS = {
    "dalaug.cifar": ("convert_cifar",),
    "dalaug.config": ("LoaderConfig",),
    "dalaug.dropin": ("DataLoader",),
    "dalaug.gap": ("Gap", "measure_gap"),
    "dalaug.loader": ("IMAGENET_MEAN", "IMAGENET_STD", "DecodeError", "Loader"),
    "dalaug.ops": ("CutMix", "Cutout", "ManifoldMixup", "Mixup", "RandomChoice", "RandomErasing",
                   "SaliencyMix", "soft_targets"),
    "dalaug.policies": ("AutoAugment", "RandAugment", "TimmRandAugment", "TrivialAugment"),
    "dalaug.schedule": ("Fade", "Phase", "PhasedLoader", "Schedule", "early_stop", "fade_out", "refine"),
    "dalaug.reading.verification": ("VerifyReport", "verify"),
}  # fmt: skip
_HOMES = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name != "checkpoint" and name not in _HOMES:
        raise AttributeError(f"module 'dalaug' has no attribute {name!r}")
    home = "dalaug.checkpoint" if name == "checkpoint" else _HOMES[name]  # checkpoint: a module
    try:
        module = importlib.import_module(home)
    except AttributeError as error:  # raised here it would read as "no attribute {name}"
        raise ImportError(f"importing {home} for dalaug.{name} failed: {error}") from error
    value = module if name == "checkpoint" else getattr(module, name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AutoAugment",
    "CutMix",
    "Cutout",
    "DataLoader",
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

"""Tiny-ImageNet (200 classes, 64x64), PreActResNet-18, Manifold Mixup (gamma = 0.2) then
refinement: He et al., Table 4 (best/last 63.66/63.28 -> 64.54/64.33). The gamma = 0.5 row is
``tiny_imagenet_manifold_mixup_05.py``.

As ``tiny_imagenet_mixup.py`` (400 + 50 epochs, the CIFAR settings of ``cifar100_mixup.py``), with
Manifold Mixup in place of Mixup: mixing at the input or at the output of the first or second
stage, drawn per batch.

Data: ``--data PATH`` with ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (val re-filed by class).
"""

from pathlib import Path

import dalaug
from dalaug.ops import ManifoldMixup
from train.recipe import load_recipe

NUM_CLASSES = 200
heavy = dalaug.Phase(
    400, operators=[ManifoldMixup(alpha=0.2, num_classes=NUM_CLASSES)], name="manifold_mixup"
)
recipe = load_recipe(Path(__file__).with_name("tiny_imagenet_mixup.py")).replace(
    name="tiny_imagenet_manifold_mixup",
    phases=dalaug.refine(heavy, epochs=50, name="refine"),
)

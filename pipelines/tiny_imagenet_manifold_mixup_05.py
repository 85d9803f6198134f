"""Tiny-ImageNet, PreActResNet-18, Manifold Mixup with gamma = 0.5 then refinement: He et al.,
Table 4 (best/last 64.88/64.43 -> 65.98/65.80).

As ``tiny_imagenet_manifold_mixup.py`` (gamma = 0.2) with gamma = 0.5.

Data: ``--data PATH`` with ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (val re-filed by class).
"""

from pathlib import Path

import dalaug
from dalaug.ops import ManifoldMixup
from train.recipe import load_recipe

NUM_CLASSES = 200
heavy = dalaug.Phase(
    400, operators=[ManifoldMixup(alpha=0.5, num_classes=NUM_CLASSES)], name="manifold_mixup"
)
recipe = load_recipe(Path(__file__).with_name("tiny_imagenet_manifold_mixup.py")).replace(
    name="tiny_imagenet_manifold_mixup_05",
    phases=dalaug.refine(heavy, epochs=50, name="refine"),
)

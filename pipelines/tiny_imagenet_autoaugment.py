"""Tiny-ImageNet, PreActResNet-18, AutoAugment (CIFAR policy) + Cutout 32x32, then refinement:
He et al., Table 4. Everything else as ``tiny_imagenet_mixup.py``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

NUM_CLASSES = 200
heavy = dalaug.Phase(
    400,
    policy=dalaug.AutoAugment("cifar10"),
    operators=[dalaug.Cutout(size=32, num_classes=NUM_CLASSES)],
    name="autoaugment",
)
recipe = load_recipe(Path(__file__).with_name("tiny_imagenet_mixup.py")).replace(
    name="tiny_imagenet_autoaugment",
    phases=dalaug.refine(heavy, epochs=50, name="refine"),
)

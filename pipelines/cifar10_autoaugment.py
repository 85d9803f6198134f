"""CIFAR-10, PreActResNet-18, AutoAugment (CIFAR-10 policy) + Cutout 16x16 then refinement:
He et al., Table 1 (96.0 -> 96.2).

As ``cifar100_autoaugment.py`` with 10 classes.

Data: ``python -m dalaug convert-cifar PATH/cifar-10-batches-py data/cifar10``, then
``python -m train --recipe pipelines/cifar10_autoaugment.py --data data/cifar10``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

NUM_CLASSES = 10
heavy = dalaug.Phase(
    400,
    policy=dalaug.AutoAugment("cifar10"),
    operators=[dalaug.Cutout(size=16, num_classes=NUM_CLASSES)],
    name="autoaugment",
)
recipe = load_recipe(Path(__file__).with_name("cifar100_mixup.py")).replace(
    name="cifar10_autoaugment",
    phases=dalaug.refine(heavy, epochs=50, name="refine"),
)

"""CIFAR-100, Shake-Shake 26 2x96d, AutoAugment (CIFAR-10 policy) + Cutout 16x16 then
refinement: He et al., Table 1 (85.7 -> 86.1).

As ``cifar100_shake_mixup.py``: 1800 epochs, cosine from 0.01, then 200 clean epochs at 1e-4.

Data: ``python -m dalaug convert-cifar PATH/cifar-100-python data/cifar100``, then
``python -m train --recipe pipelines/cifar100_shake_autoaugment.py --data data/cifar100``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

NUM_CLASSES = 100
heavy = dalaug.Phase(
    1800,
    policy=dalaug.AutoAugment("cifar10"),
    operators=[dalaug.Cutout(size=16, num_classes=NUM_CLASSES)],
    name="autoaugment",
)
recipe = load_recipe(Path(__file__).with_name("cifar100_shake_mixup.py")).replace(
    name="cifar100_shake_autoaugment",
    phases=dalaug.refine(heavy, epochs=200, lr=1e-4, name="refine"),
)

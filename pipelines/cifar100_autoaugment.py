"""CIFAR-100, PreActResNet-18, AutoAugment (CIFAR-10 policy) + Cutout 16x16, then refinement:
He et al., Table 1 (79.3 -> 80.0) and Table 3's N = 400, M = 50 row (Cutout after the policy, as
in Cubuk et al.).

Everything else as ``cifar100_mixup.py``; the refinement drops both the policy and Cutout and keeps
the standard crop + flip.

Data: ``python -m dalaug convert-cifar PATH/cifar-100-python data/cifar100``, then
``python -m train --recipe pipelines/cifar100_autoaugment.py --data data/cifar100``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

NUM_CLASSES = 100
heavy = dalaug.Phase(
    400,
    policy=dalaug.AutoAugment("cifar10"),
    operators=[dalaug.Cutout(size=16, num_classes=NUM_CLASSES)],
    name="autoaugment",
)
recipe = load_recipe(Path(__file__).with_name("cifar100_mixup.py")).replace(
    name="cifar100_autoaugment",
    phases=dalaug.refine(heavy, epochs=50, name="refine"),
)

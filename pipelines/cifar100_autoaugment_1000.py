"""CIFAR-100, PreActResNet-18, AutoAugment + Cutout for N = 1000 epochs, then M = 200 refinement
epochs: He et al., Table 3 (78.5 -> 80.5).

As ``cifar100_autoaugment.py``, longer. The paper does not give this run's milestones; ours keep
the 400-epoch run's proportions (150/400 and 275/400 of 1000), so the refinement runs at 0.001.

Data: ``python -m dalaug convert-cifar PATH/cifar-100-python data/cifar100``, then
``python -m train --recipe pipelines/cifar100_autoaugment_1000.py --data data/cifar100``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

NUM_CLASSES = 100
heavy = dalaug.Phase(
    1000,
    policy=dalaug.AutoAugment("cifar10"),
    operators=[dalaug.Cutout(size=16, num_classes=NUM_CLASSES)],
    name="autoaugment",
)
recipe = load_recipe(Path(__file__).with_name("cifar100_mixup.py")).replace(
    name="cifar100_autoaugment_1000",
    phases=dalaug.refine(heavy, epochs=200, name="refine"),
    milestones=(375, 688),
)

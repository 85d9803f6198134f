"""CIFAR-10, PreActResNet-18, Mixup (gamma = 1) then refinement: He et al., Table 1 (95.9 -> 96.4).

As ``cifar100_mixup.py`` with 10 classes.

Data: ``python -m dalaug convert-cifar PATH/cifar-10-batches-py data/cifar10``, then
``python -m train --recipe pipelines/cifar10_mixup.py --data data/cifar10``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

NUM_CLASSES = 10
heavy = dalaug.Phase(400, operators=[dalaug.Mixup(alpha=1.0, num_classes=NUM_CLASSES)], name="mixup")
recipe = load_recipe(Path(__file__).with_name("cifar100_mixup.py")).replace(
    name="cifar10_mixup",
    phases=dalaug.refine(heavy, epochs=50, name="refine"),
)

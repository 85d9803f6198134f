"""CIFAR-10, PreActResNet-18, CutMix (p = 0.5, alpha = 1) then refinement: He et al., Table 1 (96.3 -> 96.4).

As ``cifar100_cutmix.py`` with 10 classes.

Data: ``python -m dalaug convert-cifar PATH/cifar-10-batches-py data/cifar10``, then
``python -m train --recipe pipelines/cifar10_cutmix.py --data data/cifar10``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

NUM_CLASSES = 10
heavy = dalaug.Phase(400, operators=[dalaug.CutMix(alpha=1.0, num_classes=NUM_CLASSES, p=0.5)], name="cutmix")
recipe = load_recipe(Path(__file__).with_name("cifar100_mixup.py")).replace(
    name="cifar10_cutmix",
    phases=dalaug.refine(heavy, epochs=50, name="refine"),
)

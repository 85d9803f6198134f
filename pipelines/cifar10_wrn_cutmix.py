"""CIFAR-10, WideResNet-28-10, CutMix (p = 0.5, alpha = 1) then refinement: He et al., Table 1 (97.1 -> 97.3).

As ``cifar100_wrn_mixup.py`` (400 + 50 epochs, step schedule, no dropout) with 10 classes.

Data: ``python -m dalaug convert-cifar PATH/cifar-10-batches-py data/cifar10``, then
``python -m train --recipe pipelines/cifar10_wrn_cutmix.py --data data/cifar10``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

NUM_CLASSES = 10
heavy = dalaug.Phase(400, operators=[dalaug.CutMix(alpha=1.0, num_classes=NUM_CLASSES, p=0.5)], name="cutmix")
recipe = load_recipe(Path(__file__).with_name("cifar100_wrn_mixup.py")).replace(
    name="cifar10_wrn_cutmix",
    phases=dalaug.refine(heavy, epochs=50, name="refine"),
)

"""CIFAR-100, PreActResNet-18, CutMix (p = 0.5, alpha = 1) then refinement: He et al., Table 1
(79.8 -> 80.6).

Everything else as ``cifar100_mixup.py``: 400 + 50 epochs, LR 0.1 /10 at 150 and 275, wd 1e-4,
batch 128, refinement at the last stage's rate.

Data: ``python -m dalaug convert-cifar PATH/cifar-100-python data/cifar100``, then
``python -m train --recipe pipelines/cifar100_cutmix.py --data data/cifar100``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

NUM_CLASSES = 100
heavy = dalaug.Phase(400, operators=[dalaug.CutMix(alpha=1.0, num_classes=NUM_CLASSES, p=0.5)], name="cutmix")
recipe = load_recipe(Path(__file__).with_name("cifar100_mixup.py")).replace(
    name="cifar100_cutmix",
    phases=dalaug.refine(heavy, epochs=50, name="refine"),
)

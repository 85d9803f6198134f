"""CIFAR-100, Shake-Shake 26 2x96d, CutMix (p = 0.5, alpha = 1) then refinement: He et al.,
Table 1 (84.5 -> 84.7).

As ``cifar100_shake_mixup.py``: 1800 epochs, cosine from 0.01, then 200 clean epochs at 1e-4.

Data: ``python -m dalaug convert-cifar PATH/cifar-100-python data/cifar100``, then
``python -m train --recipe pipelines/cifar100_shake_cutmix.py --data data/cifar100``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

NUM_CLASSES = 100
heavy = dalaug.Phase(
    1800, operators=[dalaug.CutMix(alpha=1.0, num_classes=NUM_CLASSES, p=0.5)], name="cutmix"
)
recipe = load_recipe(Path(__file__).with_name("cifar100_shake_mixup.py")).replace(
    name="cifar100_shake_cutmix",
    phases=dalaug.refine(heavy, epochs=200, lr=1e-4, name="refine"),
)

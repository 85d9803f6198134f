"""Ablation, "from augmented data to clean data gradually" (He et al.): CIFAR-100, PreActResNet-18,
Mixup (gamma = 1) for 400 epochs, then gamma decays linearly to 0 over 25 epochs, then 25 clean epochs
(450 in all, as ``cifar100_mixup.py``). The paper finds no significant difference from the hard switch.

Data: ``python -m dalaug convert-cifar PATH/cifar-100-python data/cifar100``, then
``python -m train --recipe pipelines/cifar100_mixup_fade.py --data data/cifar100``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

NUM_CLASSES = 100
heavy = dalaug.Phase(400, operators=[dalaug.Mixup(alpha=1.0, num_classes=NUM_CLASSES)], name="mixup")
faded = dalaug.fade_out(heavy, epochs=25, attribute="alpha", name="fade")
recipe = load_recipe(Path(__file__).with_name("cifar100_mixup.py")).replace(
    name="cifar100_mixup_fade",
    phases=[*faded, dalaug.Phase(25, name="refine")],
)

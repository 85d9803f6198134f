"""CIFAR-100, WideResNet-28-10, moderate augmentation (crop + flip) only: He et al., Table 1's "Moderate"
row (81.8; the paper gives no refined figure for it).

As ``cifar100_wrn_mixup.py`` without the heavy augmentation: one clean phase of 400 epochs.

Data: ``python -m dalaug convert-cifar PATH/cifar-100-python data/cifar100``, then
``python -m train --recipe pipelines/cifar100_wrn_moderate.py --data data/cifar100``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

recipe = load_recipe(Path(__file__).with_name("cifar100_wrn_mixup.py")).replace(
    name="cifar100_wrn_moderate",
    phases=[dalaug.Phase(400, name="moderate")],
)

"""CIFAR-10, WideResNet-28-10, moderate augmentation (crop + flip) only: He et al., Table 1's "Moderate"
row (96.2; the paper gives no refined figure for it).

As ``cifar100_wrn_mixup.py`` without the heavy augmentation: one clean phase of 400 epochs.

Data: ``python -m dalaug convert-cifar PATH/cifar-10-batches-py data/cifar10``, then
``python -m train --recipe pipelines/cifar10_wrn_moderate.py --data data/cifar10``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

recipe = load_recipe(Path(__file__).with_name("cifar100_wrn_mixup.py")).replace(
    name="cifar10_wrn_moderate",
    phases=[dalaug.Phase(400, name="moderate")],
)

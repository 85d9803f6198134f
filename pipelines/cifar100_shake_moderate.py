"""CIFAR-100, Shake-Shake 26 2x96d, moderate augmentation (crop + flip) only: He et al., Table 1's
"Moderate" row (82.9; the paper gives no refined figure for it).

As ``cifar100_shake_mixup.py`` without Mixup: 1800 epochs, cosine from 0.01 to 0.

Data: ``python -m dalaug convert-cifar PATH/cifar-100-python data/cifar100``, then
``python -m train --recipe pipelines/cifar100_shake_moderate.py --data data/cifar100``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

recipe = load_recipe(Path(__file__).with_name("cifar100_shake_mixup.py")).replace(
    name="cifar100_shake_moderate",
    phases=[dalaug.Phase(1800, name="moderate")],
)

"""CIFAR-100, WideResNet-28-10, Manifold Mixup (gamma = 1) then refinement: He et al., Table 1
(82.7 -> 84.6).

As ``cifar100_wrn_mixup.py`` (400 + 50 epochs, LR 0.2 /5 at 120, 240 and 320, wd 5e-4, batch
128, no dropout), with Manifold Mixup in place of Mixup: mixing at the input or at the output of
the first or second of the three stages (``layers.3`` and ``layers.7``), drawn per batch.

Data: ``python -m dalaug convert-cifar PATH/cifar-100-python data/cifar100``, then
``python -m train --recipe pipelines/cifar100_wrn_manifold_mixup.py --data data/cifar100``.
"""

from pathlib import Path

import dalaug
from dalaug.ops import ManifoldMixup
from train.recipe import load_recipe

NUM_CLASSES = 100
heavy = dalaug.Phase(
    400, operators=[ManifoldMixup(alpha=1.0, num_classes=NUM_CLASSES)], name="manifold_mixup"
)
recipe = load_recipe(Path(__file__).with_name("cifar100_wrn_mixup.py")).replace(
    name="cifar100_wrn_manifold_mixup",
    phases=dalaug.refine(heavy, epochs=50, name="refine"),
)

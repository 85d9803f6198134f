"""CIFAR-10, PreActResNet-18, Manifold Mixup (gamma = 1) then refinement: He et al., Table 1
(95.8 -> 96.0).

As ``cifar100_manifold_mixup.py`` with 10 classes.

Data: ``python -m dalaug convert-cifar PATH/cifar-10-batches-py data/cifar10``, then
``python -m train --recipe pipelines/cifar10_manifold_mixup.py --data data/cifar10``.
"""

from pathlib import Path

import dalaug
from dalaug.ops import ManifoldMixup
from train.recipe import load_recipe

NUM_CLASSES = 10
heavy = dalaug.Phase(
    400, operators=[ManifoldMixup(alpha=1.0, num_classes=NUM_CLASSES)], name="manifold_mixup"
)
recipe = load_recipe(Path(__file__).with_name("cifar10_mixup.py")).replace(
    name="cifar10_manifold_mixup",
    phases=dalaug.refine(heavy, epochs=50, name="refine"),
)

"""CIFAR-10, PreActResNet-18, moderate augmentation (crop + flip only), then refinement without
any augmentation (no crop, no flip): He et al., Table 1's "Moderate" row (94.6 -> 94.5).

400 + 50 epochs, the rest as ``cifar100_mixup.py``. The "Augmentation" column is this run's
accuracy after epoch 400.

Data: ``python -m dalaug convert-cifar PATH/cifar-10-batches-py data/cifar10``, then
``python -m train --recipe pipelines/cifar10_moderate.py --data data/cifar10``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

heavy = dalaug.Phase(400, name="moderate")
clean = {"flip": False, "scale": (1.0, 1.0), "ratio": (1.0, 1.0)}  # the whole image, as it is
recipe = load_recipe(Path(__file__).with_name("cifar100_mixup.py")).replace(
    name="cifar10_moderate",
    phases=dalaug.refine(heavy, epochs=50, name="refine", options=clean),
)

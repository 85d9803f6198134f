"""Ablation, "learning rate while refining" (He et al.): CIFAR-100, PreActResNet-18, Mixup, then
a refinement that starts at a large rate (0.1) and decays, instead of staying at 0.001. The paper
reports it worse than ``cifar100_mixup.py``'s small constant rate (no figure given).

The decay is a staircase of clean phases (0.1, 0.01, 0.001; 17 + 17 + 16 epochs). Consecutive clean
phases share one loader, so the steps cost no pipeline rebuild.

Data: ``python -m dalaug convert-cifar PATH/cifar-100-python data/cifar100``, then
``python -m train --recipe pipelines/cifar100_mixup_large_lr.py --data data/cifar100``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

NUM_CLASSES = 100
heavy = dalaug.Phase(400, operators=[dalaug.Mixup(alpha=1.0, num_classes=NUM_CLASSES)], name="mixup")
recipe = load_recipe(Path(__file__).with_name("cifar100_mixup.py")).replace(
    name="cifar100_mixup_large_lr",
    phases=[
        heavy,
        dalaug.Phase(17, lr=0.1, name="refine-0.1"),
        dalaug.Phase(17, lr=0.01, name="refine-0.01"),
        dalaug.Phase(16, lr=0.001, name="refine-0.001"),
    ],
)

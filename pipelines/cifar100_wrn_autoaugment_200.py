"""CIFAR-100, WideResNet-28-10, AutoAugment (CIFAR-10 policy) + Cutout 16x16 for 200 epochs, then
50 refinement epochs: He et al., Table 3's N = 200, M = 50 row (83.7 -> 84.2).

Dropout 0.3 and a cosine rate from 0.2 that reaches 0 at epoch 200 (the paper's settings for
AutoAugment); the paper refines cosine-trained models at "a reasonably small value": ours is 0.0016,
the rate the step-trained WideResNets refine at. The rest as ``cifar100_wrn_mixup.py``.

Data: ``python -m dalaug convert-cifar PATH/cifar-100-python data/cifar100``, then
``python -m train --recipe pipelines/cifar100_wrn_autoaugment_200.py --data data/cifar100``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

NUM_CLASSES = 100
heavy = dalaug.Phase(
    200,
    policy=dalaug.AutoAugment("cifar10"),
    operators=[dalaug.Cutout(size=16, num_classes=NUM_CLASSES)],
    name="autoaugment",
)
recipe = load_recipe(Path(__file__).with_name("cifar100_wrn_mixup.py")).replace(
    name="cifar100_wrn_autoaugment_200",
    model_kwargs={"depth": 28, "widen": 10, "dropout": 0.3},
    phases=dalaug.refine(heavy, epochs=50, lr=0.0016, name="refine"),
    lr_schedule="cosine",
    cosine_epochs=200,
    milestones=(),
)

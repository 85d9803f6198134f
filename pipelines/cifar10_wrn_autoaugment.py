"""CIFAR-10, WideResNet-28-10, AutoAugment (CIFAR-10 policy) + Cutout 16x16 for 400 epochs, then
50 refinement epochs: He et al., Table 1 (97.3 -> 97.5).

Dropout 0.3 and a cosine rate from 0.2 that reaches 0 at epoch 400 (the paper's settings for
AutoAugment); the paper refines cosine-trained models at "a reasonably small value": ours is 0.0016,
the rate the step-trained WideResNets refine at. The rest as ``cifar100_wrn_mixup.py``.

Data: ``python -m dalaug convert-cifar PATH/cifar-10-batches-py data/cifar10``, then
``python -m train --recipe pipelines/cifar10_wrn_autoaugment.py --data data/cifar10``.
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

NUM_CLASSES = 10
heavy = dalaug.Phase(
    400,
    policy=dalaug.AutoAugment("cifar10"),
    operators=[dalaug.Cutout(size=16, num_classes=NUM_CLASSES)],
    name="autoaugment",
)
recipe = load_recipe(Path(__file__).with_name("cifar100_wrn_mixup.py")).replace(
    name="cifar10_wrn_autoaugment",
    model_kwargs={"depth": 28, "widen": 10, "dropout": 0.3},
    phases=dalaug.refine(heavy, epochs=50, lr=0.0016, name="refine"),
    lr_schedule="cosine",
    cosine_epochs=400,
    milestones=(),
)

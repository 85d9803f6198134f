"""Tiny-ImageNet, PreActResNet-18, AutoAugment (CIFAR policy) + Cutout 32x32, then refinement:
He et al., Table 4. 400 + 50 epochs, LR 0.1 /10 at 150 and 275, wd 1e-4, batch 128.
"""

import dalaug
from train.recipe import Recipe

NUM_CLASSES = 200
heavy = dalaug.Phase(
    400,
    policy=dalaug.AutoAugment("cifar10"),
    operators=[dalaug.Cutout(size=32, num_classes=NUM_CLASSES)],
    name="autoaugment",
)
recipe = Recipe(
    name="tiny_imagenet_autoaugment",
    model="preact_resnet18",
    crop=64,
    eval_resize=64,
    scale=(0.64, 1.0),
    phases=dalaug.refine(heavy, epochs=50, name="refine"),
    batch_size=128,
    lr=0.1,
    weight_decay=1e-4,
    lr_schedule="step",
    milestones=(150, 275),
)

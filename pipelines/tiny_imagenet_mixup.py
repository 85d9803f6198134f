"""Tiny-ImageNet (200 classes, 64x64), PreActResNet-18, Mixup (gamma = 0.2) then refinement:
He et al., Table 4. 400 + 50 epochs, other settings as on CIFAR (LR 0.1 /10 at 150 and 275, wd 1e-4,
batch 128). Variants in the paper: gamma 0.5; CutMix p in {0.5, 1}; AutoAugment CIFAR or ImageNet
policy (+ Cutout 32 after the CIFAR one): change ``heavy`` below.

Data: ``--data PATH`` with ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (val re-filed by class).
"""

import dalaug
from train.recipe import Recipe

NUM_CLASSES = 200
heavy = dalaug.Phase(400, operators=[dalaug.Mixup(alpha=0.2, num_classes=NUM_CLASSES)], name="mixup")
recipe = Recipe(
    name="tiny_imagenet_mixup",
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

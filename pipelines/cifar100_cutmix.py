"""CIFAR-100, PreActResNet-18, CutMix (p = 0.5, alpha = 1) then refinement: He et al., Table 1.

Same schedule as ``cifar100_mixup.py``: 400 + 50 epochs, LR 0.1 /10 at 150 and 275, wd 1e-4,
batch 128, refinement at the last stage's rate.
"""

import dalaug
from train.recipe import Recipe

NUM_CLASSES = 100
heavy = dalaug.Phase(400, operators=[dalaug.CutMix(alpha=1.0, num_classes=NUM_CLASSES, p=0.5)], name="cutmix")
recipe = Recipe(
    name="cifar100_cutmix",
    model="preact_resnet18",
    crop=32,
    eval_resize=32,
    scale=(0.64, 1.0),
    phases=dalaug.refine(heavy, epochs=50, name="refine"),
    batch_size=128,
    lr=0.1,
    weight_decay=1e-4,
    lr_schedule="step",
    milestones=(150, 275),
)

"""CIFAR-100, PreActResNet-18, AutoAugment (CIFAR-10 policy) + Cutout 16x16, then refinement:
He et al., Table 1 (Cutout after the policy, as in Cubuk et al.).

400 + 50 epochs, LR 0.1 /10 at 150 and 275, wd 1e-4, batch 128; the refinement drops both the
policy and Cutout and keeps the standard crop + flip.
"""

import dalaug
from train.recipe import Recipe

NUM_CLASSES = 100
heavy = dalaug.Phase(
    400,
    policy=dalaug.AutoAugment("cifar10"),
    operators=[dalaug.Cutout(size=16, num_classes=NUM_CLASSES)],
    name="autoaugment",
)
recipe = Recipe(
    name="cifar100_autoaugment",
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

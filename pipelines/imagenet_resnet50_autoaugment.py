"""ImageNet, ResNet-50, AutoAugment (the paper's ImageNet policy) for 300 epochs, then 20 clean
epochs at LR 1e-4: He et al., Table 5. LR 0.1 /10 at 75, 150, 225; the rest as
``imagenet_resnet50_mixup.py`` (batch 256 over 8 GPUs).
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

heavy = dalaug.Phase(300, policy=dalaug.AutoAugment("imagenet"), name="autoaugment")
recipe = load_recipe(Path(__file__).with_name("imagenet_resnet50_mixup.py")).replace(
    name="imagenet_resnet50_autoaugment",
    phases=dalaug.refine(heavy, epochs=20, lr=1e-4, name="refine"),
    milestones=(75, 150, 225),
)

"""ImageNet, ResNet-50, AutoAugment (the paper's ImageNet policy) for 300 epochs, then 20 clean
epochs at LR 1e-4: He et al., Table 5. LR 0.1 /10 at 75, 150, 225; batch 256 over 8 GPUs.
"""

import dalaug
from train.recipe import Recipe

heavy = dalaug.Phase(300, policy=dalaug.AutoAugment("imagenet"), name="autoaugment")
recipe = Recipe(
    name="imagenet_resnet50_autoaugment",
    model="resnet50",
    crop=224,
    phases=dalaug.refine(heavy, epochs=20, lr=1e-4, name="refine"),
    batch_size=32,  # per GPU: 256 in all on 8 GPUs
    lr=0.1,
    weight_decay=1e-4,
    lr_schedule="step",
    milestones=(75, 150, 225),
)

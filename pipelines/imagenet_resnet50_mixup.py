"""ImageNet, ResNet-50, Mixup (gamma = 0.2) for 200 epochs, then 20 clean epochs at LR 1e-4:
He et al., Table 5. LR 0.1 /10 at 60, 120, 180; batch 256 over 8 GPUs (32 per GPU); standard
scale/aspect distortion, crop 224 and flips in every phase.

Run: ``torchrun --nproc_per_node=8 -m train --recipe pipelines/imagenet_resnet50_mixup.py
--data /path/to/imagenet`` (``train/`` and ``val/`` ImageFolders, or WebDataset shards per folder).
"""

import dalaug
from train.recipe import Recipe

NUM_CLASSES = 1000
heavy = dalaug.Phase(200, operators=[dalaug.Mixup(alpha=0.2, num_classes=NUM_CLASSES)], name="mixup")
recipe = Recipe(
    name="imagenet_resnet50_mixup",
    model="resnet50",
    crop=224,
    phases=dalaug.refine(heavy, epochs=20, lr=1e-4, name="refine"),
    batch_size=32,  # per GPU: 256 in all on 8 GPUs
    lr=0.1,
    weight_decay=1e-4,
    lr_schedule="step",
    milestones=(60, 120, 180),
    precision="bf16",
    channels_last=True,
)

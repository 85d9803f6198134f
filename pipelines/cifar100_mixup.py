"""CIFAR-100, PreActResNet-18, Mixup (gamma = 1) then refinement: He et al., Table 1 (78.8 -> 80.8).

400 epochs of Mixup, then 50 clean epochs at the last stage's rate (0.001). LR 0.1 divided by 10
at epochs 150 and 275, weight decay 1e-4, batch 128. The paper's "standard" CIFAR augmentation
(pad 4 + random 32 crop + flip) stays on in every phase; dalaug's random-resized-crop with area
(0.64, 1) and ratio (3/4, 4/3) stands in for the pad-and-crop. The "Augmentation" column of the
table is this run's accuracy after epoch 400 (the first 400 epochs are the unrefined run).

Data: ``python -m dalaug convert-cifar PATH/cifar-100-python data/cifar100``, then
``python -m train --recipe pipelines/cifar100_mixup.py --data data/cifar100``.
"""

import dalaug
from train.recipe import Recipe

NUM_CLASSES = 100
heavy = dalaug.Phase(400, operators=[dalaug.Mixup(alpha=1.0, num_classes=NUM_CLASSES)], name="mixup")
recipe = Recipe(
    name="cifar100_mixup",
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

"""CIFAR-100, WideResNet-28-10, Mixup (gamma = 1) then refinement: He et al., Table 1 (82.5 -> 84.6).

400 epochs of Mixup, then 50 clean epochs at the last stage's rate (0.2 / 5**3 = 0.0016). LR 0.2
divided by 5 at epochs 120, 240 and 320, weight decay 5e-4, batch 128, no dropout; standard crop +
flip in every phase (as ``cifar100_mixup.py``). The "Augmentation" column is this run's accuracy
after epoch 400.

Data: ``python -m dalaug convert-cifar PATH/cifar-100-python data/cifar100``, then
``python -m train --recipe pipelines/cifar100_wrn_mixup.py --data data/cifar100``.
"""

import dalaug
from train.recipe import Recipe

NUM_CLASSES = 100
heavy = dalaug.Phase(400, operators=[dalaug.Mixup(alpha=1.0, num_classes=NUM_CLASSES)], name="mixup")
recipe = Recipe(
    name="cifar100_wrn_mixup",
    model="wide_resnet",
    model_kwargs={"depth": 28, "widen": 10, "dropout": 0.0},
    crop=32,
    eval_resize=32,
    scale=(0.64, 1.0),
    phases=dalaug.refine(heavy, epochs=50, name="refine"),
    batch_size=128,
    lr=0.2,
    weight_decay=5e-4,
    lr_schedule="step",
    milestones=(120, 240, 320),
    gamma=0.2,
)

"""CIFAR-100, Shake-Shake 26 2x96d, Mixup (gamma = 1) then refinement: He et al., Table 1
(84.2 -> 85.2).

1800 epochs of Mixup with a cosine rate from 0.01 to 0 (no restart), weight decay 1e-3, batch 128
(the paper: 2 GPUs of 64; under ``torchrun --nproc_per_node=2`` pass ``--batch-size 64``), then
200 clean epochs. The paper refines cosine-trained models at "a reasonably small value": ours is
1e-4, the start rate / 100 as on the step-trained PreActResNet. Standard crop + flip throughout.

Data: ``python -m dalaug convert-cifar PATH/cifar-100-python data/cifar100``, then
``python -m train --recipe pipelines/cifar100_shake_mixup.py --data data/cifar100``.
"""

import dalaug
from train.recipe import Recipe

NUM_CLASSES = 100
heavy = dalaug.Phase(1800, operators=[dalaug.Mixup(alpha=1.0, num_classes=NUM_CLASSES)], name="mixup")
recipe = Recipe(
    name="cifar100_shake_mixup",
    model="shake_shake",
    model_kwargs={"depth": 26, "width": 96},
    crop=32,
    eval_resize=32,
    scale=(0.64, 1.0),
    phases=dalaug.refine(heavy, epochs=200, lr=1e-4, name="refine"),
    batch_size=128,
    lr=0.01,
    weight_decay=1e-3,
    lr_schedule="cosine",
    cosine_epochs=1800,
)

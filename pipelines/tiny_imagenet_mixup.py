"""Tiny-ImageNet (200 classes, 64x64), PreActResNet-18, Mixup (gamma = 0.2) then refinement:
He et al., Table 4. 400 + 50 epochs, the other settings as on CIFAR (``cifar100_mixup.py``: LR 0.1
/10 at 150 and 275, wd 1e-4, batch 128). The paper's other variants: gamma 0.5, CutMix p in
{0.5, 1}, AutoAugment ImageNet policy; change ``heavy`` below.

Data: ``--data PATH`` with ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (val re-filed by class).
"""

from pathlib import Path

import dalaug
from train.recipe import load_recipe

NUM_CLASSES = 200
heavy = dalaug.Phase(400, operators=[dalaug.Mixup(alpha=0.2, num_classes=NUM_CLASSES)], name="mixup")
recipe = load_recipe(Path(__file__).with_name("cifar100_mixup.py")).replace(
    name="tiny_imagenet_mixup",
    crop=64,
    eval_resize=64,
    phases=dalaug.refine(heavy, epochs=50, name="refine"),
)

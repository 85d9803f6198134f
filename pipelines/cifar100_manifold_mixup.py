"""CIFAR-100, PreActResNet-18, Manifold Mixup (gamma = 1) then refinement: He et al., Table 1
(80.4 -> 81.5); its Table 2 measures the gap of this run.

As ``cifar100_mixup.py`` (400 + 50 epochs, LR 0.1 /10 at 150 and 275, wd 1e-4, batch 128), with
Manifold Mixup (Verma et al., ICML 2019) in place of Mixup: per batch, mixing at the input or at
the output of the first or second stage, drawn uniformly (the reference's k in {0, 1, 2}), with a
random permutation as partners. He et al. use gamma = 1 for Mixup and Manifold Mixup on CIFAR
(Verma et al. used alpha = 2). The trainer attaches the operator's hooks to the model.

Data: ``python -m dalaug convert-cifar PATH/cifar-100-python data/cifar100``, then
``python -m train --recipe pipelines/cifar100_manifold_mixup.py --data data/cifar100``.
"""

from pathlib import Path

import dalaug
from dalaug.ops import ManifoldMixup
from train.recipe import load_recipe

NUM_CLASSES = 100
heavy = dalaug.Phase(
    400, operators=[ManifoldMixup(alpha=1.0, num_classes=NUM_CLASSES)], name="manifold_mixup"
)
recipe = load_recipe(Path(__file__).with_name("cifar100_mixup.py")).replace(
    name="cifar100_manifold_mixup",
    phases=dalaug.refine(heavy, epochs=50, name="refine"),
)

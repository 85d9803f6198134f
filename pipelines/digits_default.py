"""The embedded default: scikit-learn's handwritten digits (written once as a JPEG ImageFolder, no
network), a PreActResNet-18, heavy augmentation then a clean refinement phase (He et al.).

Run: ``python -m train`` (or ``make train``).
"""

import dalaug
from train.recipe import Recipe

NUM_CLASSES = 10
heavy = dalaug.Phase(
    epochs=9,
    policy=dalaug.RandAugment(n=2, m=9),
    operators=[
        dalaug.RandomChoice(
            [
                dalaug.Mixup(alpha=1.0, num_classes=NUM_CLASSES),
                dalaug.CutMix(alpha=1.0, num_classes=NUM_CLASSES),
            ],
            p=[0.5, 0.5],
        )
    ],
    name="augmented",
)
recipe = Recipe(
    name="digits_default",
    data=None,  # the embedded digits
    model="preact_resnet18",
    model_kwargs={"width": 16},
    crop=32,
    eval_resize=32,
    scale=(0.5, 1.0),
    flip=False,  # a mirrored digit is another symbol
    phases=dalaug.refine(heavy, epochs=3, name="refine"),
    batch_size=64,
    lr=0.1,
    weight_decay=5e-4,
    lr_schedule="cosine",
    warmup_epochs=1,
    gap_samples=256,
)

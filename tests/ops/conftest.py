"""Batches and operator factories shared by the ops tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from dalaug.ops import Augmentation, CutMix, Cutout, Mixup, RandomErasing, SaliencyMix

NUM_CLASSES = 10
SHAPE = (8, 3, 32, 32)

# Every single operator in its main modes; each factory takes the shared keyword arguments.
FACTORIES: dict[str, Callable[..., Augmentation]] = {
    "mixup": lambda **kw: Mixup(alpha=1.0, num_classes=NUM_CLASSES, **kw),
    "mixup_per_sample": lambda **kw: Mixup(
        alpha=0.4, num_classes=NUM_CLASSES, per_sample=True, partner="permute", **kw
    ),
    "cutmix": lambda **kw: CutMix(alpha=1.0, num_classes=NUM_CLASSES, **kw),
    "cutmix_per_sample": lambda **kw: CutMix(alpha=1.0, num_classes=NUM_CLASSES, per_sample=True, **kw),
    "cutmix_permute": lambda **kw: CutMix(alpha=1.0, num_classes=NUM_CLASSES, partner="permute", **kw),
    "cutout": lambda **kw: Cutout(size=12, num_holes=2, num_classes=NUM_CLASSES, **kw),
    "cutout_noise": lambda **kw: Cutout(scale=(0.05, 0.3), fill="noise", num_classes=NUM_CLASSES, **kw),
    "erasing": lambda **kw: RandomErasing(**{"p": 1.0, **kw}, value="random", num_classes=NUM_CLASSES),
    "saliencymix": lambda **kw: SaliencyMix(alpha=1.0, num_classes=NUM_CLASSES, **kw),
    "saliencymix_official": lambda **kw: SaliencyMix(
        alpha=1.0, num_classes=NUM_CLASSES, per_sample=False, partner="permute", **kw
    ),
}


@pytest.fixture(params=sorted(FACTORIES))
def make_op(request) -> Callable[..., Augmentation]:
    return FACTORIES[request.param]


def _make_batch(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    shape: tuple[int, ...] = SHAPE,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images (values exact in every dtype tested) and integer targets."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(shape, generator=g).to(dtype).to(device)
    targets = torch.randint(0, NUM_CLASSES, (shape[0],), generator=g).to(device)
    return images, targets


@pytest.fixture
def make_batch() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    return _make_batch


@pytest.fixture
def batch(device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return _make_batch(device, dtype)


@pytest.fixture
def num_classes() -> int:
    return NUM_CLASSES

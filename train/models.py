"""Models by name: torchvision's, a PreActResNet-18 for 32/64-px inputs, and timm's when installed.

PreActResNet: He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016; the CIFAR/Tiny-
ImageNet backbone of the refinement paper (He et al., "Data Augmentation Revisited").
"""

from __future__ import annotations

import importlib.util

import torch
import torchvision
from torch import nn


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        # the projection shortcut sees the pre-activated input, as in the paper's Figure 4(e)
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreActResNet-18 for small images: 3x3 stem, no max-pool, four stages of two blocks.

    Args:
        num_classes: size of the output layer.
        width: channels of the first stage (64 in the paper; smaller for quick runs).

    Example:
        >>> PreActResNet18(10, width=8)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        layers, in_planes = [], width
        for stage, stride in enumerate((1, 2, 2, 2)):
            planes = width * 2**stage
            layers += [PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)]
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.layers(self.stem(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


LOCAL_MODELS = {
    "preact_resnet18": lambda num_classes, **kw: PreActResNet18(num_classes, **kw),
}


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build ``name`` with a ``num_classes``-way head: ours, torchvision's, then timm's.

    Raises:
        ValueError: the name is known to none of them.
    """
    if name in LOCAL_MODELS:
        return LOCAL_MODELS[name](num_classes, **kwargs)
    if name in torchvision.models.list_models(module=torchvision.models):
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if importlib.util.find_spec("timm") is not None:
        import timm

        if timm.is_model(name):
            return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    raise ValueError(
        f"model: unknown name {name!r}; use {sorted(LOCAL_MODELS)}, a torchvision classification "
        "model (e.g. resnet18, resnet50), or a timm model name with timm installed"
    )

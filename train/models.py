"""Models by name: torchvision's, the refinement paper's CIFAR models, and timm's when installed.

The CIFAR/Tiny-ImageNet backbones of He et al., "Data Augmentation Revisited" (Tables 1-4):

- PreActResNet-18: He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016.
- WideResNet-28-10: Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016 (CIFAR variant).
- Shake-Shake 26 2x96d: Gastaldi, "Shake-Shake regularization", arXiv:1705.07485, 2017.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable

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


class WideBlock(nn.Module):
    """Pre-activation basic block of a WideResNet: BN-ReLU-conv3x3, dropout, BN-ReLU-conv3x3."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(self.dropout(out))))
        return out + shortcut


class WideResNet(nn.Module):
    """WideResNet-depth-widen for 32-px inputs: a 16-channel stem, three stages of widths
    16k, 32k, 64k (k = ``widen``), ``(depth - 4) / 6`` pre-activation blocks each.

    Args:
        num_classes: size of the output layer.
        depth: 28 in the paper; ``6n + 4`` (16 for a small test model).
        widen: the width factor k (10 in the paper).
        dropout: dropout rate between the two convolutions of a block (the paper: 0.3 with
            AutoAugment, 0 with Mixup and CutMix).

    Example:
        >>> WideResNet(10, depth=16, widen=2)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int, depth: int = 28, widen: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth: expected 6n + 4 with n >= 1 (e.g. 16, 28), got {depth!r}")
        if not isinstance(widen, int) or widen < 1:
            raise ValueError(f"widen: expected a positive int, got {widen!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout: expected a rate in [0, 1), got {dropout!r}")
        blocks = (depth - 4) // 6
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        layers, in_planes = [], 16
        for stage, stride in enumerate((1, 2, 2)):
            planes = 16 * widen * 2**stage
            for i in range(blocks):
                layers.append(WideBlock(in_planes, planes, stride if i == 0 else 1, dropout))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.layers(self.stem(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


class _Shake(torch.autograd.Function):
    """``alpha * a + (1 - alpha) * b`` forward; the gradient split by ``beta`` backward."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor):
        ctx.save_for_backward(beta)
        return b + alpha * (a - b)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (beta,) = ctx.saved_tensors
        return grad * beta, grad * (1 - beta), None, None


def shake(a: torch.Tensor, b: torch.Tensor, training: bool) -> torch.Tensor:
    """Combine two branches the Shake-Shake way ("Shake-Shake-Image": one coefficient per sample).

    In training, ``alpha`` (forward) and ``beta`` (backward) are drawn uniformly in [0, 1] per
    sample, independently of each other; in evaluation the branches are averaged.

    Args:
        a, b: the branches' outputs, (B, ...), same shape.
        training: draw the coefficients (True) or average (False).

    Returns:
        The combination, shaped as ``a``.

    Example:
        >>> shake(torch.ones(2, 3), torch.zeros(2, 3), training=False)
        tensor([[0.5000, 0.5000, 0.5000],
                [0.5000, 0.5000, 0.5000]])
    """
    if not training:
        return 0.5 * (a + b)
    shape = (a.shape[0],) + (1,) * (a.dim() - 1)
    alpha = torch.rand(shape, device=a.device, dtype=a.dtype)
    beta = torch.rand(shape, device=a.device, dtype=a.dtype)
    return _Shake.apply(a, b, alpha, beta)


class ShakeBranch(nn.Sequential):
    """ReLU-conv3x3-BN-ReLU-conv3x3-BN, one of a Shake-Shake block's two residual branches."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(),
            nn.Conv2d(planes, planes, 3, 1, 1, bias=False),
            nn.BatchNorm2d(planes),
        )


class ShakeShortcut(nn.Module):
    """Gastaldi's downsampling shortcut: two strided 1x1 paths, the second shifted by one pixel so
    the two see complementary pixels, concatenated and batch-normalised."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_planes, planes // 2, 1, bias=False)
        self.conv2 = nn.Conv2d(in_planes, planes - planes // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(x)
        shifted = nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        first = self.conv1(nn.functional.avg_pool2d(x, 1, self.stride))
        second = self.conv2(nn.functional.avg_pool2d(shifted, 1, self.stride))
        return self.bn(torch.cat([first, second], dim=1))


class ShakeBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.branch1 = ShakeBranch(in_planes, planes, stride)
        self.branch2 = ShakeBranch(in_planes, planes, stride)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = ShakeShortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return shortcut + shake(self.branch1(x), self.branch2(x), self.training)


class ShakeShake(nn.Module):
    """Shake-Shake depth 2xWd for 32-px inputs: a 16-channel stem, three stages of widths W, 2W,
    4W with ``(depth - 2) / 6`` two-branch blocks each.

    Args:
        num_classes: size of the output layer.
        depth: 26 in the paper; ``6n + 2`` (8 or 14 for small models).
        width: the first stage's channels per branch (96 in the paper's 26 2x96d; 32 for 2x32d).

    Example:
        >>> ShakeShake(10, depth=8, width=8)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int, depth: int = 26, width: int = 96) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth: expected 6n + 2 with n >= 1 (e.g. 8, 26), got {depth!r}")
        if not isinstance(width, int) or width < 2:
            raise ValueError(f"width: expected an int >= 2, got {width!r}")
        blocks = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        layers, in_planes = [], 16
        for stage, stride in enumerate((1, 2, 2)):
            planes = width * 2**stage
            for i in range(blocks):
                layers.append(ShakeBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.layers(self.stem(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


LOCAL_MODELS = {
    "preact_resnet18": PreActResNet18,
    "wide_resnet": WideResNet,
    "shake_shake": ShakeShake,
}


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build ``name`` with a ``num_classes``-way head: ours, torchvision's, then timm's.

    Raises:
        ValueError: the name is known to none of them, or its constructor refuses ``kwargs``.
    """
    build = _constructor(name, num_classes)
    try:
        return build(**kwargs)
    except (TypeError, ValueError) as error:
        reason = (str(error).splitlines() or [""])[0]  # one line: it ends up in an `error:` line
        raise ValueError(
            f"model: {name!r} (--model or the recipe's model) cannot be built with model_kwargs={kwargs}: "
            f"{type(error).__name__}: {reason}"
        ) from error


def _constructor(name: str, num_classes: int) -> Callable[..., nn.Module]:
    if name in LOCAL_MODELS:
        return functools.partial(LOCAL_MODELS[name], num_classes)
    if name in torchvision.models.list_models(module=torchvision.models):
        return functools.partial(torchvision.models.get_model, name, weights=None, num_classes=num_classes)
    if importlib.util.find_spec("timm") is not None:
        import timm

        if timm.is_model(name):
            return functools.partial(timm.create_model, name, pretrained=False, num_classes=num_classes)
    raise ValueError(
        f"model: unknown name {name!r} (--model or the recipe's model); use {sorted(LOCAL_MODELS)}, a "
        "torchvision classification model (e.g. resnet18, resnet50), or a timm model name with timm installed"
    )

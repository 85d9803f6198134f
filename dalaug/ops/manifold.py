"""Manifold Mixup: Mixup of hidden states at a layer drawn per batch, through forward hooks.

Verma, Lamb, Beckham, Najafi, Mitliagkas, Lopez-Paz, Bengio, "Manifold Mixup: Better
Representations by Interpolating Hidden States", ICML 2019.

The reference code (``supervised/models/preresnet.py``) mixes inside the model's ``forward``: per
batch it draws k among the input (k = 0) and the outputs of the first stages, λ ~ Beta(α, α) and a
permutation, and blends ``λ·h + (1 - λ)·h[perm]`` at layer k. Here the model is left as it is:
``attach`` puts forward hooks on the eligible layers, a call draws k, λ and the pairing on the
host exactly as ``Mixup`` draws them, mixes the images itself when k is the input, and otherwise
arms the hook of layer k, which blends that layer's output in the next training forward and then
disarms. The soft targets returned by the call are mixed with the same λ, whatever the layer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from dalaug.ops.mixing import Mixup, MixupParams, exact_weight
from dalaug.ops.pairing import Partner

INPUT = "input"


@dataclasses.dataclass(frozen=True)
class ManifoldParams(MixupParams):
    """Mixup's parameters and the layer they apply at: ``"input"`` or a module name."""

    layer: str = INPUT


class ManifoldHandle:
    """The hooks that ``ManifoldMixup.attach`` put on one model; ``detach()`` removes them all.

    A context manager: ``with op.attach(model): ...`` detaches on exit.

    Attributes:
        layers: the eligible layers, ``"input"`` and/or names from ``model.named_modules()``.
        armed: the params the next training forward applies, or None.
        in_eval: whether eval-mode forwards mix too (inside ``mixing_in_eval()``).
    """

    def __init__(self, model: nn.Module, layers: tuple[str, ...]) -> None:
        self.model = model
        self.layers = layers
        self.armed: ManifoldParams | None = None
        self.in_eval = False
        modules = dict(model.named_modules())
        # torch.compile runs the hooks outside its graphs: traced, their state (which layer, λ)
        # becomes guards, and the model recompiles step after step until dynamo gives up on it.
        self._hooks: list[RemovableHandle] = [
            modules[name].register_forward_hook(torch.compiler.disable(functools.partial(self._mix, name)))
            for name in layers
            if name != INPUT
        ]
        # Disarm at the end of every training forward, so that a mix never outlives its forward
        # (a forward that skipped the drawn layer leaves nothing behind).
        self._hooks.append(model.register_forward_hook(torch.compiler.disable(self._disarm)))

    @property
    def attached(self) -> bool:
        return bool(self._hooks)

    def detach(self) -> None:
        """Remove every hook; the operator refuses calls until attached again."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self.armed = None

    def __enter__(self) -> ManifoldHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.detach()

    @contextlib.contextmanager
    def mixing_in_eval(self) -> Iterator[ManifoldHandle]:
        """Within the block, calls draw and arm and forwards mix as in training, in eval mode too.

        For measuring the loss on mixed batches (``dalaug.measure_gap``): the hidden states are
        mixed while BatchNorm and Dropout stay in eval mode.
        """
        self.in_eval = True
        try:
            yield self
        finally:
            self.in_eval, self.armed = False, None

    def _mixes(self, module: nn.Module) -> bool:
        """Whether a forward of ``module`` mixes (and a call arms): in training, or in ``mixing_in_eval``."""
        return module.training or self.in_eval

    def _mix(self, name: str, module: nn.Module, args: tuple, output: object) -> Tensor | None:
        params = self.armed
        if params is None or params.layer != name or not self._mixes(module):
            return None
        self.armed = None
        if not isinstance(output, Tensor) or not output.is_floating_point():
            raise TypeError(f"layers: {name!r} returned {type(output).__name__}, not a float tensor to mix")
        if output.shape[0] != params.partner.shape[0]:
            raise ValueError(
                f"the forward after ManifoldMixup's call carried {output.shape[0]} samples at "
                f"{name!r}, but the call mixed a batch of {params.partner.shape[0]}"
            )
        # Out of place: autograd may have saved ``output``, and the gradient flows through both
        # terms, as in the reference. lerp keeps the dtype (fp16/bf16 under autocast).
        return torch.lerp(output, _partner_rows(output, params), 1.0 - params.lam)

    def _disarm(self, module: nn.Module, args: tuple, output: object) -> None:
        if self._mixes(module):
            self.armed = None


class ManifoldMixup(Mixup):
    """Mixup at a layer drawn per batch among the input and a model's hidden layers.

    Attach it to the model first: ``op.attach(model)``. Each call then draws the layer (uniformly
    among the attached ones), λ ~ Beta(alpha, alpha) and the pairing on the host from the same
    generator as ``Mixup``, with the same draws in the same order; it returns the mixed images when
    the layer is the input, otherwise the images unchanged with the hook of that layer armed for
    the model's next training forward, and always the mixed soft targets. The model mixes nothing
    in eval mode (evaluation), nor in forwards that no call armed. A call while the model is in
    eval mode returns the images and soft targets unmixed, like a disabled operator; within
    ``handle.mixing_in_eval()`` it mixes as in training, which ``dalaug.measure_gap`` uses for the
    loss on mixed batches (He et al.'s Table 2 measures the gap of Manifold Mixup runs).

    At a hidden layer λ is rounded to a multiple of 1/256, so that λ and 1 - λ are exact in
    float16 and bfloat16 too (the hidden state's dtype under autocast is not known at the call).

    Args:
        alpha: λ ~ Beta(alpha, alpha); Verma et al. use 2.0 on CIFAR, He et al. 1.0 (Tables 1, 2)
            and 0.2 or 0.5 on Tiny-ImageNet (Table 4).
        num_classes: number of classes; required when targets are class indices.
        layers: the eligible layers ``attach`` uses when given none: ``"input"`` and module names
            as in ``model.named_modules()`` (of the model itself, not of a DDP or compiled wrapper).
            None: see ``default_layers``.
        p: probability of mixing a batch.
        label_smoothing: s in [0, 1) for the soft targets.
        partner: "permute" (a random permutation, as in the reference) or "flip" (i with N - 1 - i).
        seed: seeds the operator's CPU generator (see ``BatchOp``).

    ``sample`` returns ``ManifoldParams`` (``MixupParams`` and the layer's name).

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10)
        >>> op = ManifoldMixup(alpha=2.0, num_classes=10, seed=0)
        >>> with op.attach(model) as handle:
        ...     images, soft = op(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
        ...     logits = model(images)  # mixed at the drawn layer
        >>> handle.layers, soft.shape
        (('input', 'layer1', 'layer2'), torch.Size([4, 10]))
    """

    def __init__(
        self,
        alpha: float = 2.0,
        num_classes: int | None = None,
        *,
        layers: Sequence[str] | None = None,
        p: float = 1.0,
        label_smoothing: float = 0.0,
        partner: Partner = "permute",
        seed: int | None = None,
    ) -> None:
        super().__init__(alpha, num_classes, p=p, label_smoothing=label_smoothing, partner=partner, seed=seed)
        self.layers = None if layers is None else _check_layer_names(layers)
        # Shared by the shallow copies that Fade makes each epoch: they arm the same hooks.
        self._handle: ManifoldHandle | None = None

    def attach(self, model: nn.Module, layers: Sequence[str] | None = None) -> ManifoldHandle:
        """Put forward hooks on ``model``'s eligible layers; return the handle that removes them.

        Args:
            model: the classifier. A DistributedDataParallel or ``torch.compile`` wrapper is
                unwrapped: the hooks go on the module it runs, so they fire under either.
            layers: ``"input"`` and module names of ``model``; None: the operator's ``layers``,
                else ``default_layers(model)``.

        Returns:
            A ``ManifoldHandle``; ``handle.detach()`` (or leaving its ``with`` block) removes the
            hooks.
        """
        if self._handle is not None and self._handle.attached:
            raise RuntimeError("ManifoldMixup is attached already: call detach() on its handle first")
        model = unwrap(model)
        if layers is None:
            layers = self.layers if self.layers is not None else default_layers(model)
        layers = _check_layer_names(layers)
        names = {name for name, _ in model.named_modules() if name}
        unknown = [name for name in layers if name != INPUT and name not in names]
        if unknown:
            raise ValueError(
                f"layers: {unknown} are not modules of {type(model).__name__} (use 'input' or names "
                f"from model.named_modules(), e.g. {sorted(names)[:4]})"
            )
        self._handle = ManifoldHandle(model, layers)
        return self._handle

    @property
    def active(self) -> bool:
        """Whether a call draws and mixes: enabled, p > 0, and the model in training mode (or
        within ``mixing_in_eval()``)."""
        if not super().active:
            return False
        handle = self._attached()
        return handle._mixes(handle.model)

    def apply(self, images: Tensor, targets: Tensor, params: MixupParams) -> tuple[Tensor, Tensor]:
        """Mix the images (layer "input") or arm the layer's hook, and mix the soft targets.

        With the model in eval mode outside ``mixing_in_eval()`` it mixes and arms nothing and
        returns ``passthrough``, however it was reached (a call, or ``RandomChoice``).
        """
        handle = self._attached()
        if not handle._mixes(handle.model):
            return self.passthrough(images, targets)
        return super().apply(images, targets, params)

    def passthrough(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """The images unchanged and their soft targets; disarms the hooks, so that a mix armed by
        an earlier call never lands in a forward after a call that mixed nothing."""
        if self._handle is not None:
            self._handle.armed = None
        return super().passthrough(images, targets)

    def _sample(self, images: Tensor, rng: np.random.Generator) -> ManifoldParams:
        layers = self._attached().layers
        mixup = super()._sample(images, rng)  # Mixup's draws first: the same stream as Mixup's
        layer = layers[int(rng.integers(len(layers)))]
        lam = mixup.lam if layer == INPUT else float(exact_weight(np.float64(mixup.lam), torch.bfloat16))
        return ManifoldParams(lam, lam, mixup.partner, mixup.mirrored, layer)

    def _apply_images(self, images: Tensor, params: ManifoldParams) -> Tensor:
        handle = self._attached()
        if params.layer == INPUT:
            handle.armed = None
            return super()._apply_images(images, params)
        if params.layer not in handle.layers:
            raise ValueError(f"params: layer {params.layer!r} is not among the attached {handle.layers}")
        handle.armed = None if params.lam == 1.0 else params
        return images

    def mixing_in_eval(self) -> contextlib.AbstractContextManager[ManifoldHandle]:
        """The attached handle's ``mixing_in_eval()``: mix in eval mode too, within the block."""
        return self._attached().mixing_in_eval()

    def _attached(self) -> ManifoldHandle:
        if self._handle is None or not self._handle.attached:
            raise RuntimeError("ManifoldMixup is not attached to a model: call op.attach(model) first")
        return self._handle


def unwrap(model: nn.Module) -> nn.Module:
    """The module that a DDP/DataParallel or ``torch.compile`` wrapper runs (``model`` if none)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def default_layers(model: nn.Module) -> tuple[str, ...]:
    """The input and the outputs of the model's first two stages, as the reference mixes at.

    A stage is a run of blocks at one resolution. Models with ``layer1`` and ``layer2`` children
    (torchvision's ResNets, ResNeXts and Wide ResNets) have them as stages. Models that keep their
    blocks in one ``layers`` Sequential (``train.models``' PreActResNet18, WideResNet, ShakeShake)
    start a new stage at every block holding a strided convolution.

    Raises:
        ValueError: the model has neither form; name its layers in ``attach(model, layers=...)``.
    """
    children = dict(model.named_children())
    if "layer1" in children and "layer2" in children:
        return INPUT, "layer1", "layer2"
    blocks = children.get("layers")
    if isinstance(blocks, nn.Sequential) and len(blocks) > 0:
        stage_ends = [
            f"layers.{index - 1}" for index, block in enumerate(blocks) if index > 0 and _strided(block)
        ]
        return INPUT, *stage_ends[:2]
    raise ValueError(
        f"layers: no default for {type(model).__name__}; name them, e.g. "
        "attach(model, layers=['input', 'features.3'])"
    )


def _partner_rows(hidden: Tensor, params: MixupParams) -> Tensor:
    """Each sample's partner's hidden state, differentiable, in ``hidden``'s memory format."""
    if params.mirrored:
        return hidden.flip(0)  # flip keeps the memory format
    if (
        hidden.dim() == 4
        and not hidden.is_contiguous()
        and hidden.is_contiguous(memory_format=torch.channels_last)
    ):
        # Gather along N of the NHWC view: the result is channels_last, with no extra copy.
        return hidden.permute(0, 2, 3, 1).index_select(0, params.partner).permute(0, 3, 1, 2)
    return hidden.index_select(0, params.partner)


def _strided(block: nn.Module) -> bool:
    return any(isinstance(module, nn.Conv2d) and max(module.stride) > 1 for module in block.modules())


def _check_layer_names(layers: object) -> tuple[str, ...]:
    if isinstance(layers, str) or not isinstance(layers, Sequence) or len(layers) == 0:
        raise TypeError(f"layers: expected a non-empty list of layer names, got {layers!r}")
    if not all(isinstance(name, str) and name for name in layers):
        raise TypeError(f"layers: expected names ('input' or module names), got {layers!r}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers: each layer may appear once, got {layers!r}")
    return tuple(layers)

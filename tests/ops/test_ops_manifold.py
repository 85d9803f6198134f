"""Manifold Mixup: the drawn layer's output is what Mixup would make of it, in one training forward only."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import scipy.stats
import torch
import torchvision
from torch import nn

import dalaug.ops.manifold
from dalaug.ops import ManifoldMixup, Mixup, RandomChoice, soft_targets
from dalaug.ops.manifold import default_layers
from dalaug.schedule import Fade
from train.models import PreActResNet18, ShakeShake, WideResNet

NUM_CLASSES = 10


def _preact() -> nn.Module:
    return PreActResNet18(NUM_CLASSES, width=4)


def _resnet18() -> nn.Module:
    return torchvision.models.resnet18(num_classes=NUM_CLASSES)


def _preact_16() -> nn.Module:
    # 16 channels at least before each strided 1x1 shortcut: torch 2.14's oneDNN writes past its
    # workspace in a channels-last strided 1x1 convolution's backward with fewer input channels than
    # its block (8 on AVX2, 16 on AVX-512; oneDNN issue 6035); on this project's AMD EPYC runners
    # width 4 hung the suite in backward(), both OpenMP threads spinning.
    return PreActResNet18(NUM_CLASSES, width=16)


MODELS = {"preact_resnet18": (_preact_16, "layers.1"), "resnet18": (_resnet18, "layer1")}


def _batch(device="cpu", dtype=torch.float32, batch: int = 8, size: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=g).to(device, dtype)
    return images, torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)


class Capture:
    """A forward hook, registered after the operator's, that keeps what the next module receives."""

    def __init__(self, module: nn.Module) -> None:
        self.outputs: list[torch.Tensor] = []
        self.handle = module.register_forward_hook(
            lambda m, a, out: self.outputs.append(out.detach().clone())
        )


def _hidden_params(op: ManifoldMixup, images: torch.Tensor, layer: str):
    """Draws until the layer is ``layer`` and λ < 1: the same sampler, only the case under test."""
    generator = torch.Generator().manual_seed(1)
    while (params := op.sample(images, generator)).layer != layer or params.lam == 1.0:
        pass
    return params


@pytest.mark.parametrize("partner", ["flip", "permute"])
def test_at_the_input_it_is_mixup_with_the_same_draws(device, dtype, partner):
    images, targets = _batch(device, dtype)
    model = nn.Conv2d(3, 4, 3).to(device)
    op = ManifoldMixup(alpha=2.0, num_classes=NUM_CLASSES, partner=partner, seed=3)
    mixup = Mixup(alpha=2.0, num_classes=NUM_CLASSES, partner=partner, seed=3)
    with op.attach(model, layers=["input"]):
        for _ in range(4):  # successive calls: the two streams stay in step
            mixed, soft = op(images, targets)
            expected, expected_soft = mixup(images, targets)
            assert torch.equal(mixed, expected) and torch.equal(soft, expected_soft)


@pytest.mark.parametrize(
    ("name", "partner", "memory_format"),
    [
        ("preact_resnet18", "flip", torch.contiguous_format),
        ("preact_resnet18", "permute", torch.channels_last),
        ("resnet18", "permute", torch.contiguous_format),
        ("resnet18", "flip", torch.channels_last),
    ],
    ids=["preact-flip-nchw", "preact-permute-nhwc", "resnet18-permute-nchw", "resnet18-flip-nhwc"],
)
def test_the_hooked_activation_is_the_blend_of_the_clean_ones(device, name, partner, memory_format):
    build, layer = MODELS[name]
    model = build().to(device, memory_format=memory_format).train()
    images, targets = _batch(device)
    images = images.contiguous(memory_format=memory_format)
    op = ManifoldMixup(alpha=2.0, num_classes=NUM_CLASSES, partner=partner, layers=["input", layer])
    with op.attach(model) as handle:
        capture = Capture(model.get_submodule(layer))
        model(images)  # not armed: the clean hidden state
        params = _hidden_params(op, images, layer)
        same, soft = op.apply(images, targets, params)
        assert same is images and handle.armed is params
        logits = model(images)
        model(images)  # the one after: clean again
        capture.handle.remove()
    clean, mixed, after = capture.outputs
    expected = params.lam * clean + (1 - params.lam) * clean[params.partner]
    torch.testing.assert_close(mixed, expected, rtol=1e-6, atol=1e-6)
    assert mixed.is_contiguous(memory_format=memory_format)
    assert torch.equal(after, clean) and handle.armed is None
    one_hot = soft_targets(targets, NUM_CLASSES)
    torch.testing.assert_close(soft, params.lam * one_hot + (1 - params.lam) * one_hot[params.partner])
    logits.sum().backward()  # the blend is part of the graph
    assert all(p.grad is not None for p in model.parameters())


def test_eval_mode_never_mixes_and_does_not_use_up_the_armed_mix():
    model, layer = _preact(), "layers.1"
    images, targets = _batch(size=16)
    op = ManifoldMixup(num_classes=NUM_CLASSES, layers=[layer])
    with op.attach(model) as handle:
        capture = Capture(model.get_submodule(layer))
        model.eval()
        model(images)
        model.train()
        op.apply(images, targets, _hidden_params(op, images, layer))
        model.eval()
        model(images)  # e.g. the evaluation, or the gap monitor, between the call and the step
        model.train()
        model(images)
        assert handle.armed is None
    clean, in_eval, trained = capture.outputs
    assert torch.equal(in_eval, clean) and not torch.allclose(trained, clean)


def test_a_call_in_eval_mode_mixes_nothing():
    model = _preact().eval()
    images, targets = _batch(size=16)
    op = ManifoldMixup(num_classes=NUM_CLASSES, label_smoothing=0.1, seed=0)
    with op.attach(model) as handle:
        for _ in range(8):
            out, soft = op(images, targets)
            assert out is images and handle.armed is None
            assert torch.equal(soft, soft_targets(targets, NUM_CLASSES, 0.1))


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_detach_removes_every_hook_and_then_calls_are_refused():
    model = _preact()
    images, targets = _batch(size=16)
    op = ManifoldMixup(num_classes=NUM_CLASSES)
    with op.attach(model) as handle:
        assert _hook_count(model) == len(handle.layers)  # the hidden layers and the model's own
        with pytest.raises(RuntimeError, match="attached already"):
            op.attach(model)
    assert _hook_count(model) == 0
    with pytest.raises(RuntimeError, match=r"op.attach\(model\)"):
        op(images, targets)
    handle = op.attach(model)  # attachable again
    handle.detach()
    assert _hook_count(model) == 0


def test_a_call_before_attach_names_attach():
    with pytest.raises(RuntimeError, match=r"attach\(model\)"):
        ManifoldMixup(num_classes=NUM_CLASSES)(*_batch(size=16))


def test_the_layer_is_drawn_uniformly():
    model = _preact()
    images, _ = _batch(size=8)
    op = ManifoldMixup(num_classes=NUM_CLASSES, seed=0)
    draws = 3000
    with op.attach(model) as handle:
        generator = torch.Generator().manual_seed(0)
        layers = [op.sample(images, generator).layer for _ in range(draws)]
    counts = [layers.count(name) for name in handle.layers]
    assert sum(counts) == draws
    assert scipy.stats.chisquare(counts).pvalue > 1e-4


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_soft_targets_are_distributions_at_every_layer(smoothing):
    model = _preact()
    images, targets = _batch(size=16)
    op = ManifoldMixup(alpha=0.5, num_classes=NUM_CLASSES, label_smoothing=smoothing, seed=0)
    layers = set()
    with op.attach(model) as handle:
        for _ in range(20):
            params = op.sample(images)
            _, soft = op.apply(images, targets, params)
            layers.add(params.layer)
            torch.testing.assert_close(soft.sum(1), torch.ones(len(targets)))
            assert (soft >= 0).all()
    assert layers == set(handle.layers)


def test_hidden_lambda_is_exact_in_16_bit_floats():
    model = _preact()
    images, _ = _batch(size=8)
    op = ManifoldMixup(num_classes=NUM_CLASSES, layers=["layers.1"], seed=0)
    with op.attach(model):
        lams = np.array([op.sample(images).lam for _ in range(100)])
    assert np.array_equal(lams * 256, np.round(lams * 256))


def test_default_layers_are_the_input_and_the_first_two_stages():
    assert default_layers(_resnet18()) == ("input", "layer1", "layer2")
    cases = [
        (_preact(), ("input", "layers.1", "layers.3")),
        (WideResNet(NUM_CLASSES, depth=16, widen=1), ("input", "layers.1", "layers.3")),
        (ShakeShake(NUM_CLASSES, depth=14, width=4), ("input", "layers.1", "layers.3")),
    ]
    images, _ = _batch(batch=2, size=16)
    for model, expected in cases:
        assert default_layers(model) == expected
        # Each is the last block at its resolution: the next one halves it.
        sizes = [Capture(block) for block in model.layers]
        model(images)
        width = [capture.outputs[0].shape[-1] for capture in sizes]
        for name in expected[1:]:
            index = int(name.removeprefix("layers."))
            assert width[index] == width[index - 1] == 2 * width[index + 1]


def test_bad_layers_are_named():
    model = _preact()
    with pytest.raises(ValueError, match="layers: .*'layer9'"):
        ManifoldMixup(num_classes=NUM_CLASSES).attach(model, layers=["input", "layer9"])
    with pytest.raises(TypeError, match="layers"):
        ManifoldMixup(num_classes=NUM_CLASSES, layers="input")
    with pytest.raises(ValueError, match="layers"):
        ManifoldMixup(num_classes=NUM_CLASSES, layers=["input", "input"])
    with pytest.raises(ValueError, match="layers: no default for Sequential"):
        ManifoldMixup(num_classes=NUM_CLASSES).attach(nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_a_faded_copy_arms_the_same_hooks():
    model, layer = _preact(), "layers.1"
    images, targets = _batch(size=16)
    op = ManifoldMixup(alpha=1.0, num_classes=NUM_CLASSES, layers=[layer])
    with op.attach(model) as handle:
        faded = Fade(op, "alpha").at(1, 4)  # as the Schedule does each epoch
        assert faded.alpha == 0.75
        faded(images, targets, generator=torch.Generator().manual_seed(0))
        assert handle.armed is not None and handle.armed.layer == layer


def test_under_autocast_the_hidden_state_keeps_its_dtype():
    model, layer = _preact(), "layers.1"
    images, targets = _batch(size=16)
    op = ManifoldMixup(num_classes=NUM_CLASSES, layers=[layer])
    with op.attach(model), torch.autocast("cpu", torch.bfloat16):
        capture = Capture(model.get_submodule(layer))
        model(images)
        params = _hidden_params(op, images, layer)
        op.apply(images, targets, params)
        model(images)
    clean, mixed = capture.outputs
    assert mixed.dtype == torch.bfloat16
    expected = params.lam * clean.float() + (1 - params.lam) * clean.float()[params.partner]
    torch.testing.assert_close(mixed.float(), expected, rtol=1e-2, atol=1e-2)


def test_hooks_fire_through_a_ddp_wrapper(tmp_path):
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already running in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model, layer = _preact(), "layers.1"
        ddp = nn.parallel.DistributedDataParallel(model)
        images, targets = _batch(size=16)
        op = ManifoldMixup(num_classes=NUM_CLASSES)
        with op.attach(ddp) as handle:  # names are the wrapped model's
            assert handle.layers == ("input", "layers.1", "layers.3")
            capture = Capture(model.get_submodule(layer))
            ddp(images)
            op.apply(images, targets, _hidden_params(op, images, layer))
            ddp(images).sum().backward()
        clean, mixed = capture.outputs
        assert not torch.allclose(mixed, clean)
    finally:
        dist.destroy_process_group()


def test_a_compiled_model_mixes_as_the_eager_one():
    model, layer = _preact(), "layers.1"
    images, targets = _batch(size=16)
    op = ManifoldMixup(num_classes=NUM_CLASSES)
    with op.attach(model):
        compiled = torch.compile(model, backend="eager")
        params = _hidden_params(op, images, layer)
        clean = model(images)
        op.apply(images, targets, params)
        eager = model(images)
        for _ in range(2):  # a second λ must not need a new graph to be right
            op.apply(images, targets, params)
            torch.testing.assert_close(compiled(images), eager)
        params = _hidden_params(op, images, "layers.3")
        op.apply(images, targets, params)
        assert not torch.allclose(compiled(images), eager)
    assert not torch.allclose(eager, clean)


def test_repr_and_docstring_examples():
    op = ManifoldMixup(alpha=2.0, num_classes=NUM_CLASSES, layers=["input", "layer1"])
    assert repr(op) == (
        "ManifoldMixup(alpha=2.0, num_classes=10, layers=('input', 'layer1'), p=1.0, "
        "label_smoothing=0.0, partner='permute', seed=None)"
    )
    assert doctest.testmod(dalaug.ops.manifold).failed == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("partner", ["flip", "permute"])
def test_a_training_step_never_syncs_the_host(partner):
    model = _preact().cuda().to(memory_format=torch.channels_last)
    images, targets = _batch("cuda")
    images = images.contiguous(memory_format=torch.channels_last)
    op = ManifoldMixup(num_classes=NUM_CLASSES, partner=partner, seed=0)
    generator = torch.Generator().manual_seed(0)
    with op.attach(model):
        for _ in range(6):  # warm up every layer's path
            mixed, soft = op(images.clone(), targets, generator=generator)
            model(mixed).sum().backward()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(6):
                mixed, soft = op(images.clone(), targets, generator=generator)
                with torch.autocast("cuda", torch.bfloat16):
                    logits = model(mixed)
                (logits.float().log_softmax(1) * soft).sum().backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_in_eval_mode_apply_and_random_choice_mix_nothing_and_leave_nothing_armed():
    model = _preact()
    images, targets = _batch(size=16)
    op = ManifoldMixup(num_classes=NUM_CLASSES, layers=["layers.1"], seed=0)
    choice = RandomChoice([op], seed=0)
    clean = soft_targets(targets, NUM_CLASSES)
    with op.attach(model) as handle:
        params = _hidden_params(op, images, "layers.1")
        op.apply(images, targets, params)
        assert handle.armed is params
        model.eval()
        routes = (
            lambda: op(images, targets),
            lambda: op.apply(images, targets, params),
            lambda: choice(images, targets),
        )
        for route in routes:
            handle.armed = params  # armed by a training call before the switch to eval mode
            out, soft = route()
            assert out is images and torch.equal(soft, clean) and handle.armed is None
        with op.mixing_in_eval():  # where eval-mode calls do mix
            assert choice.sample(images).params is not None

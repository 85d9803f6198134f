"""Invariants every operator keeps: soft targets, identity at p = 0, seeding, in-place, memory format,
devices, host syncs, the on/off switch and the repr."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

from dalaug.ops import BoxParams, CutMix, CutoutParams, Mixup, MixupParams, RandomChoice, soft_targets


def _support(targets: torch.Tensor, params) -> torch.Tensor:
    """(B, C) bool: the classes a soft row may put more than the smoothing floor on."""
    own = soft_targets(targets, num_classes=10) > 0
    if isinstance(params, CutoutParams):
        return own
    return own | own.index_select(0, params.partner)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_soft_rows_sum_to_one_with_the_right_support(make_op, batch, smoothing, num_classes):
    images, targets = batch
    op = make_op(label_smoothing=smoothing, seed=0)
    params = op.sample(images)
    _, soft = op.apply(images, targets, params)
    assert soft.shape == (images.shape[0], num_classes)
    assert soft.dtype == torch.float32
    torch.testing.assert_close(soft.sum(1), torch.ones(images.shape[0], device=images.device))
    floor = smoothing / num_classes
    outside = ~_support(targets, params)
    torch.testing.assert_close(soft[outside], torch.full_like(soft[outside], floor))
    assert bool((soft >= floor - 1e-7).all())


def test_p_zero_is_the_identity(make_op, batch):
    images, targets = batch
    op = make_op(p=0.0, seed=0)
    out, soft = op(images.clone(), targets)
    assert torch.equal(out, images)
    assert torch.equal(soft, soft_targets(targets, num_classes=10))
    # The sampled path (λ = 1, empty boxes) is the identity too, not only the shortcut.
    out, soft = op.apply(images.clone(), targets, op.sample(images))
    assert torch.equal(out, images)
    assert torch.equal(soft, soft_targets(targets, num_classes=10))


def test_same_seed_same_output_and_different_seeds_differ(make_op, batch):
    images, targets = batch
    first = make_op(seed=1)(images.clone(), targets)
    again = make_op(seed=1)(images.clone(), targets)
    other = make_op(seed=2)(images.clone(), targets)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_call_generator_gives_the_same_output_as_a_seeded_op(make_op, batch):
    images, targets = batch
    seeded = make_op(seed=5)(images.clone(), targets)
    g = torch.Generator().manual_seed(5)  # a CPU generator, whatever the batch's device
    passed = make_op()(images.clone(), targets, generator=g)
    assert torch.equal(seeded[0], passed[0]) and torch.equal(seeded[1], passed[1])


def test_inplace_writes_into_the_input_and_matches_out_of_place(make_op, batch):
    images, targets = batch
    original = images.clone()
    params = make_op(seed=3).sample(images)
    expected, expected_soft = make_op().apply(images, targets, params)
    assert torch.equal(images, original)  # out of place leaves its input alone
    assert not torch.equal(expected, original)
    out, soft = make_op(inplace=True).apply(images, targets, params)
    assert out.data_ptr() == images.data_ptr()
    assert torch.equal(out, expected) and torch.equal(soft, expected_soft)


def test_soft_targets_in_pass_through(make_op, batch, num_classes):
    """Soft targets are accepted and give the same result as the integer targets they encode."""
    images, targets = batch
    params = make_op(seed=0).sample(images)
    _, from_int = make_op().apply(images, targets, params)
    _, from_soft = make_op().apply(images, soft_targets(targets, num_classes), params)
    torch.testing.assert_close(from_soft, from_int)


@pytest.mark.parametrize(
    "module", ["base", "boxes", "cutout", "erasing", "mixing", "pairing", "saliency", "sampling"]
)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(f"dalaug.ops.{module}"))
    assert result.failed == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_apply_the_same_params_identically(make_op, dtype):
    images, targets = _cpu_batch(dtype)
    op = make_op(seed=0)
    params = op.sample(images)
    cpu = op.apply(images, targets, params)
    cuda = op.apply(images.cuda(), targets.cuda(), params.to("cuda"))
    torch.testing.assert_close(cuda[0].cpu(), cpu[0])
    torch.testing.assert_close(cuda[1].cpu(), cpu[1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("inplace", [False, True])
def test_cuda_ops_never_sync_with_the_host(make_op, dtype, inplace):
    images, targets = _cpu_batch(dtype)
    images, targets = images.cuda(), targets.cuda()
    images = images.contiguous(memory_format=torch.channels_last)
    soft = soft_targets(targets, num_classes=10)
    op = make_op(seed=0, inplace=inplace)
    generator = torch.Generator().manual_seed(0)
    op(images.clone(), targets)  # warm up: kernels, the pinned-memory pool
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        op(images.clone(), targets)
        op(images.clone(), soft, generator=generator)
        op.apply(images.clone(), targets, op.sample(images))
        op.enabled = False
        op(images, targets)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_seed_draws_the_same_parameters_on_cpu_and_cuda(make_op):
    images, _ = _cpu_batch(torch.float32)
    on_cpu = make_op(seed=4).sample(images)
    on_cuda = make_op(seed=4).sample(images.cuda()).to("cpu")
    for name, value in vars(on_cpu).items():
        if name == "noise":  # drawn on the batch's device, from a host-drawn seed
            continue
        other = getattr(on_cuda, name)
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_generator_is_refused():
    with pytest.raises(ValueError, match="generator must be a CPU torch.Generator"):
        Mixup(num_classes=10)(
            torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]), generator=torch.Generator("cuda")
        )


def _cpu_batch(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 32, 32, generator=g).to(dtype), torch.randint(0, 10, (8,), generator=g)


def test_params_are_host_numbers_or_tensors_on_the_batch_device(make_op, batch):
    images, _ = batch
    params = make_op(seed=0).sample(images)
    assert isinstance(params, MixupParams | BoxParams | CutoutParams)
    for value in vars(params).values():
        if isinstance(value, torch.Tensor):
            assert value.device == images.device
        else:
            assert value is None or isinstance(value, bool | float | tuple)


def test_one_value_per_batch_stays_on_the_host(make_batch):
    """Per-batch λ and boxes are Python numbers, so the operator launches without reading back."""
    images, _ = make_batch()
    mixup = Mixup(num_classes=10, seed=0).sample(images)
    assert isinstance(mixup.lam, float) and isinstance(mixup.label_lam, float)
    cutmix = CutMix(num_classes=10, seed=0).sample(images)
    assert isinstance(cutmix.lam, float)
    assert isinstance(cutmix.boxes, tuple) and all(isinstance(edge, int) for edge in cutmix.boxes)


@pytest.mark.parametrize("inplace", [False, True])
def test_channels_last_in_channels_last_out(make_op, batch, inplace):
    images, targets = batch
    images = images.contiguous(memory_format=torch.channels_last)
    expected, _ = make_op(seed=6)(images.contiguous(), targets)
    out, _ = make_op(seed=6, inplace=inplace)(images.clone(memory_format=torch.channels_last), targets)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_a_batch_autograd_tracks_is_mixed_alike_and_its_gradient_flows(make_op, make_batch, inplace, layout):
    """Features mixed inside a model, or an adversarial batch, carry a gradient through the op."""
    images, targets = make_batch()
    images = images.contiguous(memory_format=layout)
    op = make_op(seed=4, inplace=inplace)
    params = op.sample(images)
    expected, expected_soft = op.apply(images.clone(), targets, params)
    leaf = images.clone().requires_grad_()
    tracked = leaf * 1 if inplace else leaf  # in place on a non-leaf, as torch's own in-place ops
    out, soft = op.apply(tracked, targets, params)
    assert torch.equal(out.detach(), expected) and torch.equal(soft, expected_soft)
    assert out.is_contiguous(memory_format=layout)
    probe = torch.randn_like(images)
    (out * probe).sum().backward()
    # With its parameters fixed the op is affine in the pixels, out = L(x) + op(0), and the
    # gradient is L's adjoint applied to the probe: <L(x), probe> = <x, gradient>.
    offset, _ = op.apply(torch.zeros_like(images), targets, params)
    moved = ((out.detach() - offset).double() * probe).sum()
    gradient = leaf.grad.double()  # computed in float32, as the op's own arithmetic: a loose tolerance
    torch.testing.assert_close(moved, (images.double() * gradient).sum(), rtol=1e-5, atol=1e-4)


def test_disabled_op_returns_the_images_and_soft_targets(make_op, batch):
    images, targets = batch
    op = make_op(seed=0, label_smoothing=0.1)
    op.enabled = False
    out, soft = op(images.clone(), targets)
    assert torch.equal(out, images)
    assert torch.equal(soft, soft_targets(targets, 10, label_smoothing=0.1))


def test_timm_style_loop_turns_mixing_off_through_mixup_enabled(make_batch):
    """A loop shaped like timm's train.py: at its mixup-off epoch it sets ``mixup_enabled = False``."""
    images, targets = make_batch()
    mixup = RandomChoice([Mixup(num_classes=10), CutMix(num_classes=10)], seed=0)
    mixup_off_epoch = 3
    for epoch in range(5):
        if epoch >= mixup_off_epoch and mixup.mixup_enabled:
            mixup.mixup_enabled = False
        mixed, soft = mixup(images.clone(), targets)
        assert torch.equal(mixed, images) == (epoch >= mixup_off_epoch)
        assert bool((soft.amax(1) == 1).all()) == (epoch >= mixup_off_epoch)
    assert mixup.enabled is False and "enabled=False" in repr(mixup)


def test_repr_shows_the_arguments():
    mixup = Mixup(alpha=0.2, num_classes=1000, p=0.5, seed=3)
    assert repr(mixup).startswith("Mixup(alpha=0.2, num_classes=1000, p=0.5, label_smoothing=0.0,")
    assert "seed=3" in repr(mixup)
    choice = RandomChoice([mixup, CutMix(alpha=1.0, num_classes=1000)], p=[0.5, 0.5])
    assert repr(choice).startswith("RandomChoice(ops=[Mixup(alpha=0.2,")
    assert "CutMix(alpha=1.0, num_classes=1000, p=1.0," in repr(choice) and "p=[0.5, 0.5]" in repr(choice)


def test_mixup_p_half_leaves_unmixed_samples_untouched(make_batch):
    images, targets = make_batch()
    op = Mixup(alpha=1.0, num_classes=10, p=0.5, per_sample=True, seed=0)
    params = op.sample(images)
    out, soft = op.apply(images, targets, params)
    kept = params.lam == 1
    assert 0 < int(kept.sum()) < images.shape[0]
    assert torch.equal(out[kept], images[kept])
    assert torch.equal(soft[kept], soft_targets(targets, 10)[kept])

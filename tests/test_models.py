"""The refinement paper's CIFAR models: sizes as published, shapes, and Shake-Shake's shake."""

from __future__ import annotations

import pytest
import torch

from train.models import create_model, shake


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "num_classes", "expected"),
    [
        # Zagoruyko & Komodakis: WRN-28-10, 36.5M; the exact counts of the reference implementation.
        ("wide_resnet", 10, 36_479_194),
        ("wide_resnet", 100, 36_536_884),
        # Gastaldi: Shake-Shake 26 2x96d, 26.2M.
        ("shake_shake", 10, 26_192_922),
        ("shake_shake", 100, 26_227_572),
    ],
)
def test_full_size_models_have_the_published_parameter_counts(name, num_classes, expected):
    assert parameters(create_model(name, num_classes)) == expected


def test_shake_shake_2x32d_has_the_published_size():
    assert round(parameters(create_model("shake_shake", 10, width=32)) / 1e6, 1) == 2.9  # Gastaldi: 2.9M


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("wide_resnet", {"depth": 16, "widen": 2}),
        ("wide_resnet", {"depth": 16, "widen": 2, "dropout": 0.3}),
        ("shake_shake", {"depth": 8, "width": 16}),
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_small_variants_map_32px_images_to_logits(name, kwargs, training):
    model = create_model(name, 7, **kwargs).train(training)
    logits = model(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 7) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_dropout_is_active_in_training_only():
    model = create_model("wide_resnet", 5, depth=10, widen=1, dropout=0.5)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("wide_resnet", {"depth": 27}, "depth"),
        ("wide_resnet", {"widen": 0}, "widen"),
        ("wide_resnet", {"dropout": 1.0}, "dropout"),
        ("shake_shake", {"depth": 25}, "depth"),
        ("shake_shake", {"width": 1}, "width"),
    ],
)
def test_bad_sizes_are_named(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model(name, 10, **kwargs)


def test_shake_shake_at_evaluation_is_the_deterministic_average_of_its_branches():
    model = create_model("shake_shake", 10, depth=8, width=8).eval()
    block = model.layers[0]
    x = torch.randn(3, 16, 32, 32)
    with torch.no_grad():
        expected = block.shortcut(x) + 0.5 * (block.branch1(x) + block.branch2(x))
        assert torch.allclose(block(x), expected, atol=1e-6)
        assert torch.equal(model(torch.ones(2, 3, 32, 32)), model(torch.ones(2, 3, 32, 32)))


def test_shake_draws_one_forward_and_an_independent_backward_coefficient_per_sample():
    batch = 256
    a = torch.ones(batch, 4, 5, 5, requires_grad=True)
    b = torch.zeros(batch, 4, 5, 5, requires_grad=True)
    out = shake(a, b, training=True)  # = alpha per sample, as a is 1 and b is 0
    out.sum().backward()
    alpha, beta = out[:, 0, 0, 0].detach(), a.grad[:, 0, 0, 0]
    # one coefficient per sample, in both directions
    assert torch.equal(out.detach(), alpha.view(-1, 1, 1, 1).expand_as(out))
    assert torch.equal(a.grad, beta.view(-1, 1, 1, 1).expand_as(a.grad))
    assert torch.allclose(a.grad + b.grad, torch.ones_like(a.grad))  # the gradient is split, not scaled
    assert 0 <= alpha.min() and alpha.max() <= 1 and 0 <= beta.min() and beta.max() <= 1
    assert alpha.unique().numel() == batch  # drawn per sample, not per batch
    assert not torch.allclose(alpha, beta)  # backward does not reuse the forward coefficient
    # independent uniforms: the correlation is near 0 (|r| < 0.25 with 256 samples: ~4 sigma)
    assert abs(torch.corrcoef(torch.stack([alpha, beta]))[0, 1]) < 0.25
    assert abs(alpha.mean() - 0.5) < 0.1 and abs(beta.mean() - 0.5) < 0.1


def test_a_shake_shake_block_in_training_backpropagates_a_different_mix_than_it_computes():
    block = create_model("shake_shake", 10, depth=14, width=8).layers[1].train()  # identity shortcut
    outputs = {}
    for name in ("branch1", "branch2"):
        getattr(block, name).register_forward_hook(lambda m, i, out, name=name: outputs.update({name: out}))
    x = torch.randn(64, 8, 32, 32)
    y = block(x)
    for h in outputs.values():
        h.retain_grad()
    y.sum().backward()
    h1, h2 = outputs["branch1"], outputs["branch2"]
    # forward: y - x = alpha * h1 + (1 - alpha) * h2, so alpha per sample by least squares
    d, r = (h1 - h2).detach().flatten(1), (y - x - h2).detach().flatten(1)
    alpha = (d * r).sum(1) / (d * d).sum(1)
    assert torch.allclose(y - x, h2 + alpha.view(-1, 1, 1, 1) * (h1 - h2), atol=1e-4)
    beta = h1.grad.flatten(1)[:, 0]
    assert torch.equal(h1.grad, beta.view(-1, 1, 1, 1).expand_as(h1.grad))
    assert torch.allclose(h1.grad + h2.grad, torch.ones_like(h1.grad))
    assert not torch.allclose(alpha, beta, atol=1e-2)

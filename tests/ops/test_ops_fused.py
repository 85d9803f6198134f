"""The one-pass mirrored-pair kernel (dalaug.ops.fused) gives what torch ops give.

On a CUDA machine these tests run the compiled kernel through the operators. Elsewhere the same
tests run on CPU batches under Triton's interpreter (``TRITON_INTERPRET=1``), in a child pytest:
Triton reads that switch when it builds the kernel, so it cannot be turned on in this process.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dalaug.ops import CutMix, Cutout, Mixup, RandomErasing, soft_targets
from dalaug.ops.base import mix_soft_targets, smoothed_one_hot
from dalaug.ops.boxes import box_mask
from dalaug.ops.fused import blend_mirrored, exchange_mirrored_boxes, fill_holes, mix_one_hot

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
KERNEL_DEVICES = (
    ["cpu"]
    if INTERPRETED
    else [
        pytest.param(
            "cuda",
            marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")],
        )
    ]
)
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


@pytest.fixture(params=KERNEL_DEVICES)
def kernel_device(request) -> torch.device:
    return torch.device(request.param)


def _batch(device: torch.device, dtype: torch.dtype, size: int, layout: str, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, 12, 10, generator=generator).to(dtype)
    targets = torch.randint(0, 10, (size,), generator=generator)
    images = images.to(device).contiguous(memory_format=LAYOUTS[layout])
    return images, targets.to(device)


def test_the_kernel_under_triton_s_interpreter_on_the_cpu():
    if INTERPRETED:
        pytest.skip("this is the interpreted run")
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__))],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stdout[-4000:] + child.stderr[-2000:]
    assert " passed" in child.stdout


def _ptx(kernel, signature: dict, constexprs: dict, aligned: tuple[int, ...], capability: int) -> str:
    """PTX of ``kernel`` from Triton's own compiler (and ptxas) for a GPU of ``capability``, with
    the arguments at ``aligned`` known divisible by 16, as Triton's launcher proves for a dense
    batch (its pointers and sample stride)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = signature | dict.fromkeys(constexprs, "constexpr")
    attrs = {(index,): [["tt.divisibility", 16]] for index in aligned}
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", capability, 32)).asm["ptx"]


@pytest.mark.parametrize("capability", [80, 90], ids=["ampere", "hopper"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_the_kernels_compile_for_data_centre_gpus_with_vector_loads(capability, dtype):
    """For A100 and H100/H200: whole images are read and written in 128-bit vectors (Mixup, and
    per-sample boxes out of place); a patch's rows go through their strides."""
    if INTERPRETED:
        pytest.skip("compiles, does not interpret")
    pytest.importorskip("triton")
    from dalaug.ops.triton_kernels import blend_pairs, exchange_boxes, exchange_patch, mixed_one_hot
    from dalaug.ops.triton_kernels import fill_holes as fill_holes_kernel

    def vectorised(ptx: str) -> bool:
        return "ld.global.v4" in ptx and "st.global.v4" in ptx

    images = {"src": f"*{dtype}", "dst": f"*{dtype}"}
    for per_sample in (False, True):
        signature = images | {"lam": "*fp32", "weight": "fp32", "batch": "i32", "sample": "i32"}
        constexprs = {"PER_SAMPLE": per_sample, "BLOCK": 1024}
        assert vectorised(_ptx(blend_pairs, signature, constexprs, (0, 1, 2, 5), capability))
    for channels_last in (False, True):
        for inplace in (False, True):
            ints = ["box_stride", "batch", "sample", "channels", "height", "width"]
            signature = images | {"boxes": "*i64"} | dict.fromkeys(ints, "i32")
            constexprs = {"CHANNELS_LAST": channels_last, "INPLACE": inplace, "BLOCK": 1024}
            ptx = _ptx(exchange_boxes, signature, constexprs, (0, 1, 2, 5), capability)
            assert vectorised(ptx) or inplace  # in place, the box edges cut the vectors
    ints = ["batch", "sample", "rows_per_channel", "cols", "start", "stride_c", "stride_h"]
    signature = {"images": f"*{dtype}"} | dict.fromkeys(ints, "i32")
    assert "st.global" in _ptx(exchange_patch, signature, {"BLOCK": 128}, (0, 2), capability)
    for noise in (False, True):
        for inplace in (False, True):
            signature = images | {"noise": f"*{dtype}", "boxes": "*i64", "holes": "i32", "fill": "fp32"}
            signature |= dict.fromkeys(["sample", "channels", "height", "width"], "i32")
            constexprs = {"NOISE": noise, "CHANNELS_LAST": True, "INPLACE": inplace, "BLOCK": 1024}
            ptx = _ptx(fill_holes_kernel, signature, constexprs, (0, 1, 2, 3, 6), capability)
            assert vectorised(ptx) or inplace
    for mirrored in (False, True):
        signature = {"targets": "*i64", "partner": "*i64", "lam": "*fp32", "out": "*fp32", "weight": "fp32"}
        signature |= {"batch": "i32", "classes": "i32", "on": "fp32", "off": "fp32"}
        constexprs = {"MIRRORED": mirrored, "PER_SAMPLE": True, "BLOCK": 1024}
        assert "st.global" in _ptx(mixed_one_hot, signature, constexprs, (0, 1, 2, 3), capability)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("size", [1, 7, 8])
def test_mixup_blends_each_mirrored_pair(kernel_device, dtype, layout, inplace, size):
    images, targets = _batch(kernel_device, dtype, size, layout)
    op = Mixup(alpha=1.0, num_classes=10, inplace=inplace, seed=0)
    params = op.sample(images)
    assert blend_mirrored(images.clone(), params.lam, inplace=True) is not None  # the kernel runs
    out, soft = op.apply(images.clone(), targets, params)
    expected = torch.lerp(images, images.flip(0), 1.0 - params.lam)
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=LAYOUTS[layout])
    torch.testing.assert_close(soft.sum(1), torch.ones(size, device=kernel_device))
    if size % 2:  # the middle sample is its own partner
        assert torch.equal(out[size // 2], images[size // 2])


@pytest.mark.parametrize("inplace", [False, True])
def test_per_sample_mixup_leaves_unmixed_samples_bit_for_bit(kernel_device, inplace):
    images, targets = _batch(kernel_device, torch.bfloat16, 9, "channels_last")
    op = Mixup(alpha=0.4, num_classes=10, p=0.5, per_sample=True, inplace=inplace, seed=1)
    params = op.sample(images)
    out, _ = op.apply(images.clone(), targets, params)
    weight = (1.0 - params.lam).to(images.dtype).view(-1, 1, 1, 1)
    torch.testing.assert_close(out, torch.lerp(images, images.flip(0), weight))
    unmixed = (params.lam == 1.0).cpu()
    assert 0 < int(unmixed.sum()) < 9
    assert torch.equal(out.cpu()[unmixed], images.cpu()[unmixed])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("inplace", [False, True])
def test_cutmix_exchanges_the_patches_of_mirrored_pairs_exactly(kernel_device, dtype, layout, inplace):
    images, targets = _batch(kernel_device, dtype, 7, layout)
    op = CutMix(alpha=1.0, num_classes=10, inplace=inplace, seed=0)
    for _ in range(3):
        params = op.sample(images)
        top, bottom, left, right = params.boxes
        assert exchange_mirrored_boxes(images.clone(), params.boxes, inplace=True) is not None
        out, _ = op.apply(images.clone(), targets, params)
        expected = images.clone()
        expected[:, :, top:bottom, left:right] = images.flip(0)[:, :, top:bottom, left:right]
        assert torch.equal(out, expected)
        assert out.is_contiguous(memory_format=LAYOUTS[layout])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("size", [1, 7, 8])
def test_per_sample_boxes_take_the_mirror_s_pixels_exactly(kernel_device, dtype, layout, inplace, size):
    images, targets = _batch(kernel_device, dtype, size, layout)
    op = CutMix(alpha=1.0, num_classes=10, p=0.7, per_sample=True, inplace=inplace, seed=2)
    for _ in range(3):
        params = op.sample(images)
        assert exchange_mirrored_boxes(images.clone(), params.boxes, inplace=True) is not None
        out, _ = op.apply(images.clone(), targets, params)
        inside = box_mask(params.boxes, *images.shape[-2:])[:, None]
        assert torch.equal(out, torch.where(inside, images.flip(0), images))
        assert out.is_contiguous(memory_format=LAYOUTS[layout])


def test_one_box_as_a_tensor_serves_the_whole_batch(kernel_device):
    images, _ = _batch(kernel_device, torch.float32, 6, "channels_last")
    box = torch.tensor([[2, 9, 1, 4]], device=kernel_device)
    out = exchange_mirrored_boxes(images, box, inplace=False)
    expected = images.clone()
    expected[:, :, 2:9, 1:4] = images.flip(0)[:, :, 2:9, 1:4]
    assert torch.equal(out, expected)


def test_one_image_whatever_its_batch_stride(kernel_device):
    """torch calls a batch of one contiguous whatever its batch stride: the kernels address an
    image by C*H*W, so an image from HWC memory, or a slice of a wider batch, mixes right."""
    hwc = torch.randn(12, 10, 3, generator=torch.Generator().manual_seed(0)).to(kernel_device)
    wide = torch.randn(1, 4, 12, 10, generator=torch.Generator().manual_seed(1)).to(kernel_device)
    targets = torch.zeros(1, dtype=torch.int64, device=kernel_device)
    for images in (hwc.permute(2, 0, 1).unsqueeze(0), wide[:, :3]):
        for op in (Mixup(num_classes=10, seed=0), CutMix(num_classes=10, per_sample=True, seed=0)):
            out, _ = op(images, targets)
            assert torch.equal(out, images)  # a lone image is its own mirror


def test_a_host_box_that_is_not_clipped_goes_to_torch_ops(kernel_device):
    images, targets = _batch(kernel_device, torch.float32, 4, "nchw")
    height, width = images.shape[-2:]
    for box in ((4, height + 3, 0, 5), (-1, 3, 0, 5), (5, 2, 0, 5)):
        assert exchange_mirrored_boxes(images.clone(), box, inplace=True) is None
    assert exchange_mirrored_boxes(images, (3, 3, 0, 5), inplace=False) is images  # empty: nothing moves


@pytest.mark.parametrize("shape", [(2, 1, 5, 4), (3, 3, 1, 4), (2, 3, 5, 1), (5, 2, 5, 4)], ids=str)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_patches_at_the_borders_and_odd_shapes(kernel_device, shape, layout):
    """One channel, one row or one column, two images, odd batches; whole-image, corner and edge
    boxes: every exchange exact, as host box and as per-sample boxes."""
    generator = torch.Generator().manual_seed(0)
    images = (
        torch.randn(shape, generator=generator).to(kernel_device).contiguous(memory_format=LAYOUTS[layout])
    )
    height, width = shape[-2:]
    for box in [
        (0, height, 0, width),
        (0, 1, 0, 1),
        (height - 1, height, width - 1, width),
        (0, height, 1, width),
    ]:
        top, bottom, left, right = box
        expected = images.clone()
        expected[:, :, top:bottom, left:right] = images.flip(0)[:, :, top:bottom, left:right]
        per_sample = torch.tensor([box] * shape[0], device=kernel_device)
        for boxes in (box, np.array(box), per_sample):  # a box of numpy ints is taken as ints
            for inplace in (False, True):
                out = exchange_mirrored_boxes(images.clone(), boxes, inplace=inplace)
                assert out is not None and torch.equal(out, expected), (box, type(boxes), inplace)


@pytest.mark.parametrize("op", ["mixup", "mixup_per_sample", "mixup_permute", "cutmix", "cutmix_per_sample"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_soft_targets_are_mixed_in_one_kernel(kernel_device, op, smoothing):
    images, targets = _batch(kernel_device, torch.float32, 7, "nchw")
    kind, _, variant = op.partition("_")
    options = {"per_sample": True} if variant == "per_sample" else {"partner": "permute"} if variant else {}
    operator = (Mixup if kind == "mixup" else CutMix)(
        alpha=1.0, num_classes=10, label_smoothing=smoothing, seed=0, **options
    )
    params = operator.sample(images)
    lam = params.label_lam if kind == "mixup" else params.lam
    assert mix_one_hot(targets, 10, smoothing, lam, params.partner, params.mirrored) is not None
    _, soft = operator.apply(images, targets, params)
    expected = mix_soft_targets(soft_targets(targets, 10, smoothing), lam, params.partner, params.mirrored)
    torch.testing.assert_close(soft, expected)
    torch.testing.assert_close(soft.sum(1), torch.ones(7, device=kernel_device))


def test_out_of_range_labels_give_nan_rows_as_the_torch_ops_do(kernel_device):
    targets = torch.tensor([3, 12, 0, -1, 5], device=kernel_device)
    partner = torch.tensor([1, 0, 2, 4, 3], device=kernel_device)
    for lam, mirrored in ((0.75, True), (0.75, False), (torch.tensor([1.0, 0.5, 0.25, 1.0, 0.5]), False)):
        lam = lam.to(kernel_device) if isinstance(lam, torch.Tensor) else lam
        mixed = mix_one_hot(targets, 10, 0.1, lam, partner, mirrored)
        rows = smoothed_one_hot(targets, 10, 0.1, mark_invalid=True)
        torch.testing.assert_close(mixed, mix_soft_targets(rows, lam, partner, mirrored), equal_nan=True)
    assert mix_one_hot(soft_targets(targets[:1], 10), 10, 0.0, 0.5, partner, True) is None  # soft already


ERASERS = {
    "cutout": lambda **kw: Cutout(size=5, num_holes=2, fill=0.1, num_classes=10, **kw),
    "cutout_noise": lambda **kw: Cutout(scale=(0.05, 0.3), fill="noise", num_classes=10, **kw),
    "erasing": lambda **kw: RandomErasing(p=0.7, value=-1.5, num_classes=10, **kw),
    "erasing_random": lambda **kw: RandomErasing(p=1.0, value="random", num_classes=10, **kw),
}


@pytest.mark.parametrize("name", sorted(ERASERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("inplace", [False, True])
def test_holes_are_filled_in_one_kernel_exactly(kernel_device, name, dtype, layout, inplace):
    images, targets = _batch(kernel_device, dtype, 5, layout)
    op = ERASERS[name](inplace=inplace, seed=0)
    for _ in range(2):
        params = op.sample(images)
        fill = params.noise if params.noise is not None else getattr(op, "fill", getattr(op, "value", None))
        assert fill_holes(images.clone(), params.holes, fill, inplace=True) is not None
        out, _ = op.apply(images.clone(), targets, params)
        erased = box_mask(params.holes, *images.shape[-2:]).any(1, keepdim=True)
        expected = (
            images.masked_fill(erased, fill) if isinstance(fill, float) else torch.where(erased, fill, images)
        )
        assert torch.equal(out, expected)
        assert out.is_contiguous(memory_format=LAYOUTS[layout])


def test_an_in_place_mix_is_seen_by_autograd(kernel_device):
    """The kernels write where torch does not look: they bump the version counter as torch's
    in-place ops do, so a backward through a tensor saved before the write is refused."""
    images, targets = _batch(kernel_device, torch.float32, 4, "nchw")
    weight = torch.ones(1, device=kernel_device, requires_grad=True)
    loss = (weight * images).sum()  # saves images for the backward
    Mixup(num_classes=10, inplace=True, seed=0)(images, targets)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_a_patch_with_non_finite_pixels_comes_over_exactly(kernel_device):
    images, _ = _batch(kernel_device, torch.float32, 4, "nchw")
    images[0, 0, 1, 1], images[3, 0, 1, 2] = math.inf, math.nan
    out = exchange_mirrored_boxes(images, (0, 3, 0, 3), inplace=False)
    expected = images.clone()
    expected[:, :, 0:3, 0:3] = images.flip(0)[:, :, 0:3, 0:3]
    torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)


def test_batches_the_kernels_do_not_take_go_to_torch_ops(kernel_device):
    images, targets = _batch(kernel_device, torch.float32, 8, "nchw")
    strided = images[..., ::2]  # a view with holes
    assert blend_mirrored(strided, 0.5, inplace=False) is None
    assert blend_mirrored(images.double(), 0.5, inplace=False) is None
    assert blend_mirrored(images[:, :, :0], 0.5, inplace=False) is None  # empty images
    boxes = torch.zeros(8, 4, dtype=torch.int64, device=kernel_device)
    assert exchange_mirrored_boxes(strided, boxes, inplace=True) is None
    assert blend_mirrored(images, torch.rand(8, device=kernel_device).requires_grad_(), inplace=False) is None
    lam = torch.rand(16, device=kernel_device)[::2]  # a λ with holes
    assert blend_mirrored(images, lam, inplace=False) is None
    op = Mixup(num_classes=10, per_sample=True, seed=0)
    params = op.sample(images)
    params = type(params)(lam, lam, params.partner, params.mirrored)
    out, _ = op.apply(images, targets, params)
    torch.testing.assert_close(out, torch.lerp(images, images.flip(0), (1.0 - lam).view(-1, 1, 1, 1)))
    tall = torch.zeros(2, 3, 21846, 1, device=kernel_device)  # 3 x 21846 patch rows: past CUDA's grid
    assert exchange_mirrored_boxes(tall, (0, 21846, 0, 1), inplace=True) is None
    tracked = images.clone().requires_grad_()  # the kernels have no backward
    assert blend_mirrored(tracked, 0.5, inplace=False) is None
    with torch.no_grad():
        assert blend_mirrored(tracked, 0.5, inplace=False) is not None

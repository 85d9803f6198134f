"""The eval resize + centre crop lands where torchvision's does; interpolation names resolve."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nvidia.dali import fn, pipeline_def, types
from PIL import Image
from torchvision.transforms import CenterCrop, InterpolationMode, Resize
from torchvision.transforms import functional as F

from dalaug.geometry import eval_resize_crop, resolve_interpolation

# (width, height, resize, crop), chosen so that torchvision's truncated long side differs from a
# rounded one, and its half-to-even crop offset from a half-up one, in both orientations.
CASES = [
    (159, 100, 64, 56),  # long 101.76 -> 101 (rounding: 102); offset 22.5 -> 22 (half up: 23)
    (100, 159, 64, 56),  # the same, portrait
    (100, 171, 64, 48),  # offset 30.5 -> 30
    (231, 150, 96, 90),  # long 147.84 -> 147; offset 28.5 -> 28
    (120, 90, 61, 56),  # odd short-side difference: offset 2.5 -> 2
    (123, 77, 50, 44),  # long 79.87 -> 79: the rounded size would move the window
    (80, 80, 64, 56),  # square, even differences
]


def ramp(width: int, height: int) -> np.ndarray:
    """Red rises along x, green along y: a linear image, so any normalised symmetric resampling
    filter keeps each output pixel's value equal to the ramp at the source point it maps to."""
    x = np.round(np.arange(width) * 255 / (width - 1))
    y = np.round(np.arange(height) * 255 / (height - 1))
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = x[None, :]
    image[..., 1] = y[:, None]
    return image


@pipeline_def(num_threads=1, seed=0)
def _eval_graph(paths, resize: int, crop: int, decode_device: str):
    encoded = fn.external_source(source=lambda: [np.fromfile(p, np.uint8) for p in paths], batch=True)
    images = fn.decoders.image(encoded, device=decode_device, output_type=types.RGB)
    return eval_resize_crop(images, resize, crop, "bilinear")


def run_one(path, resize: int, crop: int, device: torch.device) -> np.ndarray:
    gpu = device.type == "cuda"
    pipe = _eval_graph(
        [path], resize, crop, "mixed" if gpu else "cpu",
        batch_size=1, device_id=0 if gpu else None,
    )  # fmt: skip
    pipe.build()
    (out,) = pipe.run()
    return np.array(out.as_cpu()[0])


def offset_px(ours: np.ndarray, theirs: np.ndarray, channel: int, axis: int) -> float:
    """How far (in output pixels, along ``axis``) ``ours`` samples the ramp from ``theirs``."""
    ours, theirs = ours[..., channel].astype(np.float64), theirs[..., channel].astype(np.float64)
    along = np.moveaxis(theirs, axis, -1)
    slope = np.mean((along[..., -1] - along[..., 0]) / (along.shape[-1] - 1))  # levels per pixel
    return float(np.mean(ours - theirs) / slope)


@pytest.mark.parametrize(("width", "height", "resize", "crop"), CASES)
def test_eval_crop_window_lands_on_torchvisions_pixel(tmp_path, device, width, height, resize, crop):
    path = tmp_path / "ramp.png"  # lossless: the decoded pixels are the ramp
    Image.fromarray(ramp(width, height)).save(path)
    ours = run_one(path, resize, crop, device)
    assert ours.shape == (crop, crop, 3)

    tensor = torch.from_numpy(ramp(width, height)).permute(2, 0, 1)
    resized = Resize(resize, InterpolationMode.BILINEAR, antialias=True)(tensor)
    theirs = CenterCrop(crop)(resized).permute(1, 2, 0).numpy()
    for channel, axis in ((0, 1), (1, 0)):  # red measures x, green measures y
        assert abs(offset_px(ours, theirs, channel, axis)) < 0.2, (channel, axis)

    # The measure sees a one-pixel shift of the window: the comparison above can fail.
    top = int(round((resized.shape[1] - crop) / 2.0))
    left = int(round((resized.shape[2] - crop) / 2.0))
    shifted = F.crop(resized, top, left + 1, crop, crop).permute(1, 2, 0).numpy()
    assert abs(offset_px(ours, shifted, 0, 1) + 1.0) < 0.2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bilinear", types.INTERP_LINEAR),
        ("BICUBIC", types.INTERP_CUBIC),
        ("nearest", types.INTERP_NN),
        ("lanczos", types.INTERP_LANCZOS3),
        (InterpolationMode.BILINEAR, types.INTERP_LINEAR),
        (InterpolationMode.BICUBIC, types.INTERP_CUBIC),
        (InterpolationMode.NEAREST, types.INTERP_NN),
        (InterpolationMode.NEAREST_EXACT, types.INTERP_NN),
        (InterpolationMode.LANCZOS, types.INTERP_LANCZOS3),
        (types.INTERP_CUBIC, types.INTERP_CUBIC),
    ],
)
def test_interpolation_names_resolve(value, expected):
    assert resolve_interpolation(value) == expected


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (InterpolationMode.BOX, "no DALI equivalent"),
        (InterpolationMode.HAMMING, "no DALI equivalent"),
        ("random", "training loader's crop only"),  # timm's per-image bilinear/bicubic draw, in training
        ("cubic", "expected one of"),
        (2, "expected one of"),
    ],
)
def test_unknown_interpolations_are_refused_by_name(value, match):
    with pytest.raises(ValueError, match=f"interpolation: .*{match}"):
        resolve_interpolation(value)


@pytest.mark.parametrize(("resize", "crop"), [(64, 65), (0, 1), (64, 32.0)])
def test_bad_sizes_are_named(resize, crop):
    with pytest.raises(ValueError, match="resize|crop"):
        eval_resize_crop(None, resize, crop)

"""check_encoded: every file PIL writes in the formats dalaug reads passes; broken ones are named."""

from __future__ import annotations

import io

import numpy as np
import pytest
from data_faults import DECODABLE, UNDECODABLE, write_fault
from PIL import Image, PngImagePlugin

from dalaug.reading.integrity import check_encoded


def _photo(mode: str = "RGB") -> Image.Image:
    """A noisy 37x53 image (odd sizes, incompressible): long entropy-coded data to cut into."""
    pixels = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation
    exif[0x010F] = "dalaug test camera"
    return exif


def _png_text() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a tEXt chunk")
    info.add_itxt("Description", "an iTXt chunk", zip=True)
    return info


# (id, PIL mode, format, save options): what real writers produce, corner cases included.
WRITTEN = [
    ("jpeg", "RGB", "JPEG", {}),
    ("jpeg_progressive", "RGB", "JPEG", {"progressive": True, "quality": 90}),
    ("jpeg_optimized_420", "RGB", "JPEG", {"optimize": True, "subsampling": 2}),
    ("jpeg_exif", "RGB", "JPEG", {"exif": _exif()}),
    ("jpeg_restart_markers", "RGB", "JPEG", {"restart_marker_blocks": 1}),
    ("jpeg_icc_comment", "RGB", "JPEG", {"icc_profile": b"\0" * 600, "comment": b"hello"}),
    ("jpeg_gray", "L", "JPEG", {}),
    ("jpeg_cmyk", "CMYK", "JPEG", {}),
    ("png", "RGB", "PNG", {}),
    ("png_text_chunks", "RGB", "PNG", {"pnginfo": _png_text()}),
    ("png_rgba_interlaced", "RGBA", "PNG", {"interlace": 1}),
    ("png_palette", "P", "PNG", {"optimize": True}),
    ("png_gray16", "I;16", "PNG", {}),
    ("webp_lossy", "RGB", "WEBP", {"quality": 80}),
    ("webp_lossless_alpha", "RGBA", "WEBP", {"lossless": True}),
    ("webp_exif", "RGB", "WEBP", {"exif": _exif()}),
    ("bmp", "RGB", "BMP", {}),
    ("bmp_gray", "L", "BMP", {}),
    ("tiff", "RGB", "TIFF", {}),
    ("tiff_lzw", "RGB", "TIFF", {"compression": "tiff_lzw"}),
    ("tiff_deflate_rgba", "RGBA", "TIFF", {"compression": "tiff_adobe_deflate"}),
    ("tiff_jpeg", "RGB", "TIFF", {"compression": "jpeg"}),
    ("tiff_packbits_gray", "L", "TIFF", {"compression": "packbits"}),
    ("ppm", "RGB", "PPM", {}),
    ("pgm", "L", "PPM", {}),
]


def _written(mode: str, fmt: str, options: dict) -> np.ndarray:
    buffer = io.BytesIO()
    _photo(mode).save(buffer, format=fmt, **options)
    return np.frombuffer(buffer.getvalue(), np.uint8)


@pytest.mark.parametrize(("mode", "fmt", "options"), [w[1:] for w in WRITTEN], ids=[w[0] for w in WRITTEN])
def test_every_written_file_passes_and_every_cut_is_caught(mode, fmt, options):
    data = _written(mode, fmt, options)
    assert check_encoded(data) is None
    # A file cut anywhere past its first bytes lost its end (or its declared size): a truncated
    # file is what a copy, a sync or a full disk leaves behind.
    for size in sorted({100, data.size // 3, data.size // 2, data.size - 2, data.size - 1}):
        reason = check_encoded(data[:size])
        assert reason is not None and "truncated" in reason, (size, data.size, reason)


@pytest.mark.parametrize("kind", DECODABLE)
def test_files_dali_decodes_pass(kind, tmp_path):
    data = np.fromfile(write_fault(kind, tmp_path / f"{kind}.jpg"), np.uint8)
    assert check_encoded(data) is None


@pytest.mark.parametrize("kind", [k for k in UNDECODABLE if k != "broken_symlink"])
def test_files_dali_cannot_decode_are_named(kind, tmp_path):
    data = np.fromfile(write_fault(kind, tmp_path / f"{kind}.jpg"), np.uint8)
    assert check_encoded(data) is not None


def test_reasons_say_what_is_wrong():
    jpeg = _written("RGB", "JPEG", {})
    assert check_encoded(np.empty(0, np.uint8)) == "empty file"
    assert check_encoded(jpeg[: jpeg.size - 10]) == "truncated JPEG (no end-of-image marker)"
    assert check_encoded(np.frombuffer(b"<!DOCTYPE html><html>", np.uint8)) == (
        "not an image (starts with '<!DOCTYP')"
    )
    assert "GIF" in check_encoded(_written("RGB", "GIF", {}))


def test_padding_after_the_end_marker_is_allowed():
    # Some cameras and scanners pad a JPEG after its end-of-image marker; decoders ignore it.
    jpeg = _written("RGB", "JPEG", {}).tobytes()
    for padding in (b"\x00" * 300, b"\xff" * 7, b"\r\n"):
        assert check_encoded(np.frombuffer(jpeg + padding, np.uint8)) is None


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_a_trailer_after_the_end_marker_is_allowed_and_a_cut_image_before_one_is_not(progressive):
    # Motion photos append their video after the JPEG's end marker; decoders read the image alone.
    jpeg = _written("RGB", "JPEG", {"progressive": progressive}).tobytes()
    for seed in range(5):  # a megabyte of "video": random bytes hold every marker many times over
        noise = np.random.default_rng(seed).integers(0, 256, 1 << 20, np.uint8).tobytes()
        video = b"\x00\x00\x00\x18ftypmp42" + noise
        assert check_encoded(np.frombuffer(jpeg + video, np.uint8)) is None
        for cut in (len(jpeg) // 3, len(jpeg) // 2, len(jpeg) - 3):  # the image lost its end: truncated
            reason = check_encoded(np.frombuffer(jpeg[:cut] + video, np.uint8))
            assert reason == "truncated JPEG (no end-of-image marker)", (seed, cut)


def test_random_bytes_behind_valid_markers_are_caught():
    # An overwritten file that happens to keep SOI and EOI: the header walk finds no valid segment.
    rng = np.random.default_rng(1)
    caught = 0
    for _ in range(200):
        body = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
        caught += check_encoded(np.frombuffer(b"\xff\xd8" + body + b"\xff\xd9", np.uint8)) is not None
    assert caught == 200


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_overwritten_files_are_caught(fmt):
    rng = np.random.default_rng(2)
    size = _written("RGB", fmt, {}).size
    for _ in range(50):
        assert check_encoded(rng.integers(0, 256, size, dtype=np.uint8)) is not None

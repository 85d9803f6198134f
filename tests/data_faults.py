"""Bad and unusual image files, written on demand, for the reliability and verify tests.

Every image is the same 48x64 pattern of four coloured quadrants (:data:`QUADRANTS`), so a test
can tell from the decoded pixels that an image arrived as RGB and the right way up.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HEIGHT, WIDTH = 48, 64
# top-left, top-right, bottom-left, bottom-right
QUADRANTS = ((230, 30, 30), (30, 210, 40), (40, 60, 220), (240, 240, 240))

# What DALI 2.4 decodes on the CPU (found by experiment, checked by tests/test_verify.py) ...
DECODABLE = (
    "png_named_jpg", "webp_named_jpg", "bmp_named_jpg", "tiff_named_jpg", "png_rgba",
    "png_palette", "png16_rgb", "png16_gray", "cmyk_jpeg", "gray_jpeg", "exif_rotated", "one_pixel",
)  # fmt: skip
# ... and what it cannot: each is named, left out during training and reported by `dalaug verify`.
UNDECODABLE = ("truncated_jpeg", "random_bytes", "empty_file", "gif_named_jpg", "broken_symlink")
LARGE = (12000, 9000)  # width, height of the very large image
LARGE_COLOUR = (20, 180, 90)


def pattern() -> np.ndarray:
    """The 48x64 RGB test image: four quadrants of distinct colours."""
    image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    h, w = HEIGHT // 2, WIDTH // 2
    for (top, left), colour in zip(((0, 0), (0, w), (h, 0), (h, w)), QUADRANTS, strict=True):
        image[top : top + h, left : left + w] = colour
    return image


def write_fault(kind: str, path: str | os.PathLike) -> Path:
    """Write one file of ``kind`` (a name from DECODABLE, UNDECODABLE, or "large") at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pattern())
    if kind == "truncated_jpeg":
        path.write_bytes(_encode(image, "JPEG")[: len(_encode(image, "JPEG")) // 2])
    elif kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "empty_file":
        path.write_bytes(b"")
    elif kind == "broken_symlink":
        os.symlink(path.parent / "no-such-target.jpg", path)
    elif kind == "gif_named_jpg":
        path.write_bytes(_encode(image, "GIF"))
    elif kind == "png_named_jpg":
        path.write_bytes(_encode(image, "PNG"))
    elif kind == "webp_named_jpg":
        path.write_bytes(_encode(image, "WEBP", lossless=True))
    elif kind == "bmp_named_jpg":
        path.write_bytes(_encode(image, "BMP"))
    elif kind == "tiff_named_jpg":
        path.write_bytes(_encode(image, "TIFF"))
    elif kind == "png_rgba":
        path.write_bytes(_encode(image.convert("RGBA"), "PNG"))
    elif kind == "png_palette":
        path.write_bytes(_encode(image.convert("P"), "PNG"))
    elif kind == "png16_rgb":
        path.write_bytes(_png16(pattern().astype(np.uint16) * 257))
    elif kind == "png16_gray":
        gray = np.asarray(image.convert("L")).astype(np.uint16) * 257
        path.write_bytes(_encode(Image.fromarray(gray), "PNG"))
    elif kind == "cmyk_jpeg":
        path.write_bytes(_encode(image.convert("CMYK"), "JPEG", quality=95))
    elif kind == "gray_jpeg":
        path.write_bytes(_encode(image.convert("L"), "JPEG", quality=95))
    elif kind == "exif_rotated":
        # Stored turned a quarter left, with EXIF orientation 6 ("rotate 90 clockwise to show"):
        # a viewer that honours EXIF shows the upright pattern.
        exif = Image.Exif()
        exif[0x0112] = 6
        image.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=95, exif=exif)
    elif kind == "one_pixel":
        Image.new("RGB", (1, 1), QUADRANTS[0]).save(path, "JPEG", quality=95)
    elif kind == "large":
        # A solid colour compresses to a couple of MB and takes PIL well under a second.
        Image.new("RGB", LARGE, LARGE_COLOUR).save(path, "JPEG", quality=80)
    else:
        raise ValueError(f"kind: unknown fault {kind!r}")
    return path


def expected_quadrants(kind: str) -> tuple[tuple[int, int, int], ...]:
    """The quadrant colours a correct decoder delivers for ``kind`` (grey for grey images)."""
    if kind in ("gray_jpeg", "png16_gray"):
        grey = [round(0.299 * r + 0.587 * g + 0.114 * b) for r, g, b in QUADRANTS]
        return tuple((v, v, v) for v in grey)
    if kind == "one_pixel":
        return (QUADRANTS[0],) * 4
    return QUADRANTS


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png16(rgb: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one)."""
    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + rgb[r].astype(">u2").tobytes() for r in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body

"""Generated data sets shared by several test modules (conftest.py holds only fixtures)."""

from __future__ import annotations

# Distinct, saturated class colours: a class is recoverable from any crop of its images.
CLASS_COLOURS = ((220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 220, 40))


def write_colour_folder(root, per_class: int = 6, size: int = 48):
    """ImageFolder whose class k images are solid CLASS_COLOURS[k] JPEGs (classes named c0, c1...)."""
    from PIL import Image

    for label, colour in enumerate(CLASS_COLOURS):
        folder = root / f"c{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (size + 8 * i, size), colour).save(folder / f"{i}.jpg", quality=95)
    return root

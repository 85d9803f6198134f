"""Real-image data sets written to disk without a network, for the default run, tests and benchmarks.

Both writers read data that ships inside scikit-learn and scikit-image, so they need those packages
(the ``demo`` extra) but nothing downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

# RGB photographs bundled with scikit-image; scikit-learn adds china.jpg and flower.jpg.
SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field", "immunohistochemistry",
)  # fmt: skip


def _require(module: str, extra: str = "demo"):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ImportError(
            f"writing this data set needs {module.split('.')[0]}: pip install 'dalaug[{extra}]'"
        ) from None


def real_photos() -> list[np.ndarray]:
    """The RGB photographs that ship with scikit-image and scikit-learn, as uint8 HWC arrays."""
    skdata = _require("skimage.data")
    sklearn_datasets = _require("sklearn.datasets")
    photos = [getattr(skdata, name)() for name in SKIMAGE_PHOTOS]
    photos += list(sklearn_datasets.load_sample_images().images)
    return [p[..., :3] for p in photos if p.ndim == 3]


def write_photo_folder(
    root: str | Path,
    num_images: int,
    num_classes: int = 10,
    short_side: tuple[int, int] = (256, 512),
    seed: int = 0,
) -> Path:
    """Write an ImageNet-like JPEG ImageFolder: random crops of real photos, rescaled.

    Class ``k`` takes its crops from photo ``k % len(photos)``, so classes differ in content.

    Args:
        root: folder to create; ``root/<class>/<index>.jpg``.
        num_images: total images, spread evenly across classes.
        num_classes: number of class folders.
        short_side: range of the rescaled shorter side, as ImageNet's images have.
        seed: seed for the crops and sizes.

    Returns:
        ``root`` as a Path.

    Example:
        >>> write_photo_folder("/tmp/photos", num_images=20, num_classes=2)  # doctest: +SKIP
    """
    image_module = _require("PIL.Image")
    root = Path(root)
    rng = np.random.default_rng(seed)
    photos = real_photos()
    for index in range(num_images):
        label = index % num_classes
        photo = photos[label % len(photos)]
        height, width = photo.shape[:2]
        crop_h = int(rng.integers(height // 3, height + 1))
        crop_w = int(np.clip(crop_h * rng.uniform(0.75, 1.5), 8, width))
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        image = image_module.fromarray(photo[top : top + crop_h, left : left + crop_w])
        short = int(rng.integers(short_side[0], short_side[1] + 1))
        scale = short / min(crop_h, crop_w)
        image = image.resize((round(crop_w * scale), round(crop_h * scale)), image_module.BILINEAR)
        folder = root / f"class_{label:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{index:06d}.jpg", quality=90)
    return root


def write_digits(
    root: str | Path, train_per_class: int | None = None, size: int = 32, seed: int = 0
) -> tuple[Path, Path]:
    """Write scikit-learn's 1,797 handwritten digits as JPEG ImageFolders ``root/train``, ``root/test``.

    The 8x8 digits are upscaled to ``size`` px, grey on black, saved as RGB. Writing is skipped when
    the folders already exist with the same settings, so repeated runs reuse them.

    Args:
        root: output folder.
        train_per_class: training images per class (the low-data regime of the experiments); the
            rest are the test set. None: a stratified 80/20 split.
        size: side of the written images in pixels.
        seed: seed of the split.

    Returns:
        (train folder, test folder).
    """
    root = Path(root)
    stamp = root / f".written-{train_per_class}-{size}-{seed}"
    train_dir, test_dir = root / "train", root / "test"
    if stamp.exists():
        return train_dir, test_dir
    # Written before with other settings (or interrupted): start from empty folders.
    for old in (train_dir, test_dir, *root.glob(".written-*")):
        shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
    image_module = _require("PIL.Image")
    digits = _require("sklearn.datasets").load_digits()
    rng = np.random.default_rng(seed)
    pixels = (digits.images * (255.0 / 16.0)).astype(np.uint8)
    for label in range(10):
        indices = rng.permutation(np.flatnonzero(digits.target == label))
        n_train = train_per_class if train_per_class is not None else int(0.8 * len(indices))
        if not 0 < n_train < len(indices):
            raise ValueError(f"train_per_class: must be in [1, {len(indices) - 1}], got {n_train}")
        for rank, index in enumerate(indices):
            folder = (train_dir if rank < n_train else test_dir) / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            image = image_module.fromarray(pixels[index]).resize(
                (size, size), image_module.BILINEAR
            )
            image.convert("RGB").save(folder / f"{index:04d}.jpg", quality=95)
    stamp.touch()
    return train_dir, test_dir

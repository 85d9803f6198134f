"""Fixtures shared by every test module: devices to run on and generated data sets."""

from __future__ import annotations

import pytest
import torch
from data_colours import write_colour_folder

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ],
    ),
]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(params=DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture(scope="session")
def colour_folder(tmp_path_factory):
    return write_colour_folder(tmp_path_factory.mktemp("colours"))


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """A small ImageNet-like folder: 60 real-photo crops in 3 classes, short side 40-64 px."""
    from dalaug.datasets import write_photo_folder

    return write_photo_folder(tmp_path_factory.mktemp("photos"), 60, num_classes=3, short_side=(40, 64))

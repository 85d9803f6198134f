"""Soft targets without host syncs, and the one-copy hand-over of host-drawn parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dalaug.ops import soft_targets
from dalaug.ops.base import smoothed_one_hot
from dalaug.ops.sampling import to_device


def test_out_of_range_rows_become_nan_where_the_host_cannot_check():
    """The mechanism used off the CPU, shown on the CPU: a row matching no class is NaN."""
    targets = torch.tensor([0, 3, -1, 2, 7])
    rows = smoothed_one_hot(targets, 4, 0.1, mark_invalid=True)
    valid = torch.tensor([True, True, False, True, False])
    assert bool(rows[~valid].isnan().all())
    torch.testing.assert_close(rows[valid], soft_targets(targets[valid], 4, label_smoothing=0.1))


def test_to_device_on_the_cpu_shares_the_arrays():
    lam, boxes, flags = np.linspace(0, 1, 5, dtype=np.float32), np.arange(12).reshape(3, 4), np.ones(3, bool)
    moved = to_device([lam, boxes, flags], torch.device("cpu"))
    for array, tensor in zip([lam, boxes, flags], moved, strict=True):
        assert tensor.numpy().dtype == array.dtype and np.array_equal(tensor.numpy(), array)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_device_packs_one_copy_without_a_sync():
    arrays = [
        np.linspace(0, 1, 5, dtype=np.float32),
        np.arange(12).reshape(3, 4),
        np.array([True, False, True]),
    ]
    to_device(arrays, torch.device("cuda"))  # warm the pinned pool
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        moved = to_device(arrays, torch.device("cuda"))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for array, tensor in zip(arrays, moved, strict=True):
        assert tensor.is_cuda and np.array_equal(tensor.cpu().numpy(), array)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_soft_targets_mark_out_of_range_labels_without_a_sync():
    targets = torch.tensor([1, 10, -2, 3], device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        soft = soft_targets(targets, num_classes=10, label_smoothing=0.1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert soft[1:3].isnan().all() and not soft[[0, 3]].isnan().any()
    assert math.isclose(float(soft[0].sum()), 1.0, rel_tol=1e-6)

"""Random parameters drawn on the host from a CPU ``torch.Generator``, handed to the device in one copy.

An operator decides which kernels to launch from numbers it holds on the host, so no call waits
for the device (timm's ``_params_per_batch`` does the same with ``np.random``). torch has no
generator-taking Beta sampler (``torch.distributions.Beta`` and ``torch._standard_gamma`` draw from
the global RNG), so each call takes one 63-bit seed from the caller's torch generator and draws
everything else from a numpy ``Generator`` (PCG64) seeded with it. The torch generator's state
still decides every draw, so saving it in a checkpoint resumes the same sequence; numpy's Beta,
permutations and integers are exact and vectorised, and cost no torch op each.

Per-sample arrays (λ, boxes, permutations) reach a CUDA batch through one pinned staging buffer and
one non-blocking copy; per-batch values stay Python numbers.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

# 8-byte alignment lets every array in the staging buffer be viewed as its own dtype on the device.
_ALIGN = 8
_PCG64_INCREMENT = 0xDA3E39CB94B95BDB  # numpy's PCG64 default stream (any odd constant works)
# One numpy generator per thread, re-seeded by every call: two loaders may mix in two threads.
_per_thread = threading.local()


def check_generator(generator: object) -> torch.Generator | None:
    """Return ``generator`` if it is None or a CPU ``torch.Generator``, else raise naming it."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if torch.device(generator.device).type != "cpu":
        raise ValueError(
            f"generator must be a CPU torch.Generator (parameters are drawn on the host), "
            f"got one on {generator.device}"
        )
    return generator


def host_seed(generator: torch.Generator | None) -> int:
    """One draw in [0, 2**63) from a CPU ``generator`` (None: torch's default CPU one): the seed of
    everything a call draws next, so the generator's state alone decides the call's draws."""
    return torch.empty((), dtype=torch.int64).random_(generator=generator).item()  # a CPU tensor: no sync


def host_rng(generator: torch.Generator | None) -> np.random.Generator:
    """A numpy generator seeded by one draw from ``generator`` (None: torch's default CPU one).

    The generator is this thread's, re-seeded: use it within the call, do not keep it.

    Example:
        >>> draw = lambda: host_rng(torch.Generator().manual_seed(0)).beta(1.0, 1.0)
        >>> draw() == draw()
        True
    """
    seed = host_seed(generator)
    rng = getattr(_per_thread, "rng", None)
    if rng is None:
        rng = _per_thread.rng = np.random.Generator(np.random.PCG64())
    # Any state with an odd increment starts a valid PCG64 stream: setting it costs a microsecond,
    # seeding through numpy's SeedSequence twenty (a call's whole budget on the GPU is ~50).
    rng.bit_generator.state = {
        "bit_generator": "PCG64", "state": {"state": seed, "inc": _PCG64_INCREMENT},
        "has_uint32": 0, "uinteger": 0,
    }  # fmt: skip
    return rng


def to_device(arrays: Sequence[np.ndarray], device: torch.device) -> list[Tensor]:
    """Move host arrays to ``device`` in one copy: pinned and non-blocking when it is CUDA.

    The arrays are packed into one byte buffer; on the device each comes back as a view of the
    copy, so the whole hand-over is one transfer and no kernel. On the CPU they are shared, not
    copied.

    Args:
        arrays: numpy arrays of any numeric or bool dtype.
        device: where the tensors should live.

    Returns:
        One tensor per array, same shape and dtype, on ``device``.

    Example:
        >>> lam, boxes = to_device([np.ones(2, np.float32), np.zeros((2, 4), np.int64)], torch.device("cpu"))
        >>> lam.dtype, boxes.shape
        (torch.float32, torch.Size([2, 4]))
    """
    tensors = [torch.from_numpy(np.ascontiguousarray(array)) for array in arrays]
    if device.type == "cpu":
        return tensors
    offsets, total = [], 0
    for tensor in tensors:
        offsets.append(total)
        total += -(-tensor.numel() * tensor.element_size() // _ALIGN) * _ALIGN
    # A fresh buffer each call: the caching host allocator keeps it alive until the copy is done.
    staging = torch.empty(total, dtype=torch.uint8, pin_memory=device.type == "cuda")
    packed = staging.numpy()
    for tensor, offset in zip(tensors, offsets, strict=True):
        nbytes = tensor.numel() * tensor.element_size()
        packed[offset : offset + nbytes] = tensor.numpy().reshape(-1).view(np.uint8)
    moved = staging.to(device, non_blocking=True)
    return [
        moved[offset : offset + tensor.numel() * tensor.element_size()].view(tensor.dtype).view(tensor.shape)
        for tensor, offset in zip(tensors, offsets, strict=True)
    ]

"""One frozen, hashable description of a loader: what it reads, how it augments, where it runs.

A :class:`LoaderConfig` is validated once, when built, with errors naming the argument. It keys the
Schedule's loaders (two phases with equal configs share one pipeline) and the saved loader state (a
state saved under another configuration is refused, not restored into the wrong graph). The device
is resolved here, once, to an index: a loader built in another thread (the Schedule builds the next
phase's loader in its own) must not ask ``torch.cuda.current_device()`` again, which is per thread.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from dalaug.geometry import resolve_interpolation
from dalaug.graphs import GraphSpec
from dalaug.policies import PolicyLike, resolve_policy

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MEMORY_FORMATS = (torch.contiguous_format, torch.channels_last)

# What does not change which samples come out or their pixels: left out of a saved state's identity.
PERFORMANCE_FIELDS = ("device", "num_threads", "io_workers", "prefetch", "max_bad_fraction")
# Options only one kind of loader uses (the random crop and policy; the eval resize).
TRAIN_OPTIONS = ("scale", "ratio", "flip", "policy", "color_jitter", "repeats")
EVAL_OPTIONS = ("resize",)


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
    """Every :class:`~dalaug.Loader` option, checked; see the Loader for what each one means."""

    batch_size: int
    train: bool
    shuffle: bool
    drop_last: bool
    crop: int = 224
    resize: int | None = None
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    policy: PolicyLike | None = None
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    dtype: torch.dtype = torch.float32
    memory_format: torch.memory_format = torch.contiguous_format
    device: torch.device | None = None
    seed: int = 0
    num_threads: int | None = None
    io_workers: int = 4
    prefetch: int = 2
    roi_decode: bool = True
    max_bad_fraction: float = 0.001
    distributed: bool = True
    lockstep: bool | None = None
    pad: bool = True
    repeats: int = 1
    color_jitter: float = 0.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("batch_size", "crop", "prefetch", "repeats"):
            _check_int(name, getattr(self, name))
        _check_int("io_workers", self.io_workers, minimum=0)
        for name in ("num_threads", "resize"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name))
        for name in ("train", "shuffle", "drop_last", "flip", "roi_decode", "distributed", "pad"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        if self.resize is not None and self.resize < self.crop:
            raise ValueError(f"resize: must be >= crop ({self.crop}), got {self.resize}")
        set_(self, "scale", _check_range("scale", self.scale, upper=1.0))
        set_(self, "ratio", _check_range("ratio", self.ratio, upper=math.inf))
        mean, std = _check_mean_std(self.mean, self.std)
        set_(self, "mean", mean)
        set_(self, "std", std)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {DTYPES}, got {self.dtype!r}")
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format: expected one of {MEMORY_FORMATS}, got {self.memory_format!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {self.seed!r}")
        if self.lockstep is not None and not isinstance(self.lockstep, bool):
            raise ValueError(f"lockstep: expected True, False or None, got {self.lockstep!r}")
        jitter = self.color_jitter
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter < 1:
            raise ValueError(f"color_jitter: expected a strength in [0, 1), got {jitter!r}")
        if self.repeats > 1 and not self.train:
            raise ValueError("repeats: an eval loader (train=False) reads every sample once")
        if jitter and not self.train:
            raise ValueError("color_jitter: an eval loader (train=False) takes no colour jitter")
        fraction = self.max_bad_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise ValueError(f"max_bad_fraction: expected a fraction in [0, 1), got {fraction!r}")
        resolve_interpolation(self.interpolation, random=self.train)  # raises naming `interpolation`
        set_(self, "policy", resolve_policy(self.policy))
        if self.policy is not None and not self.train:
            raise ValueError("policy: an eval loader (train=False) takes no policy")
        set_(self, "device", resolve_device(self.device))

    def replace(self, **changes: Any) -> LoaderConfig:
        """A checked copy with some fields changed (the device stays resolved)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"unknown loader option(s): {sorted(unknown)}")
        check_used(changes.get("train", self.train), changes)
        if changes.get("train", self.train) != self.train:
            # A loader of the other kind, as its constructor makes one: shuffle and drop_last
            # follow train, and the options of the kind left behind go back to their defaults.
            for name in ("shuffle", "drop_last"):
                changes.setdefault(name, changes["train"])
            for name in TRAIN_OPTIONS if self.train else EVAL_OPTIONS:
                changes.setdefault(name, fields[name].default)
        return dataclasses.replace(self, **changes)

    def identity(self) -> str:
        """What a saved loader state must match: every field that decides samples or pixels."""
        return repr({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                     if f.name not in PERFORMANCE_FIELDS})  # fmt: skip

    def graph_spec(self) -> GraphSpec:
        return GraphSpec(
            train=self.train,
            crop=self.crop,
            resize=self.resize if self.resize is not None else round(self.crop / 0.875),
            scale=self.scale,
            ratio=self.ratio,
            flip=self.flip,
            policy=self.policy,
            mean=tuple(255 * m for m in self.mean),
            std=tuple(255 * s for s in self.std),
            half=self.dtype == torch.float16,
            channels_last=self.memory_format == torch.channels_last,
            color_jitter=float(self.color_jitter),
            interpolation=resolve_interpolation(self.interpolation, random=self.train),
            roi_decode=self.roi_decode,
        )

    def threads(self, local_world_size: int) -> int:
        """DALI CPU threads: as given, else the cores this process may use, split among the
        ranks of this node (on CUDA too: the host side of decoding and the policies need them)."""
        if self.num_threads is not None:
            return self.num_threads
        return max(1, len(os.sched_getaffinity(0)) // max(1, local_world_size))


def check_used(train: bool, options: dict) -> None:
    """Refuse an option the loader would not use: a training loader random-crops the image as it
    is (no resize first); an evaluation loader resizes and centre-crops (no random crop, no flip)."""
    if train and options.get("resize") is not None:
        raise ValueError("resize: sets an evaluation loader's shorter side (train=False); a training loader "
                         "random-crops the image as it is (scale, ratio)")  # fmt: skip
    if not train:
        for name in ("scale", "ratio"):
            if name in options:
                raise ValueError(f"{name}: sets a training loader's random crop (train=True); an evaluation "
                                 "loader resizes and centre-crops (resize)")  # fmt: skip
        if options.get("flip"):
            raise ValueError("flip: an evaluation loader (train=False) never flips")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device as an explicit index: None -> this thread's CUDA device if any, else the CPU.

    Raises:
        ValueError: not a CPU or CUDA device, or CUDA asked for where there is none.
    """
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: expected None, 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {str(device)!r} requested but CUDA is not available")
        return torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
    if device.type != "cpu":
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {str(device)!r}")
    return device


def _check_int(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        expected = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name}: expected {expected}, got {value!r}")


def _check_range(name: str, value, upper: float) -> tuple[float, float]:
    ok = (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and 0 < value[0] <= value[1] <= upper
    )
    if not ok:
        raise ValueError(f"{name}: expected (low, high) with 0 < low <= high <= {upper}, got {value!r}")
    return (float(value[0]), float(value[1]))


def _check_mean_std(mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    checked = []
    for name, values in (("mean", mean), ("std", std)):
        try:  # any three real numbers: a tuple, a list, a numpy array
            numbers = tuple(float(v) for v in values) if not isinstance(values, (str, bytes)) else ()
        except (TypeError, ValueError):
            numbers = ()
        if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
            raise ValueError(f"{name}: expected 3 per-channel numbers on the 0-1 scale, got {values!r}")
        checked.append(numbers)
    mean, std = checked
    if not all(0 <= m <= 1 for m in mean):
        raise ValueError(f"mean: values must lie in [0, 1] (the 0-1 pixel scale), got {mean!r}")
    # Pixels on the 0-1 scale cannot spread more than 0.5: a larger std is on the 0-255 scale.
    if not all(0 < s <= 1 for s in std):
        raise ValueError(f"std: values must lie in (0, 1] (the 0-1 pixel scale, as ImageNet's), got {std!r}")
    return mean, std

"""The Loader: a DALI pipeline behind the interface of a PyTorch DataLoader.

It yields ``(images, targets)``: images NCHW normalized on ``loader.device``, targets int64 (B,).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace

import torch
from nvidia.dali.plugin.base_iterator import LastBatchPolicy
from nvidia.dali.plugin.pytorch import DALIGenericIterator

from dalaug.graphs import LABEL_BYTES, READER_NAME, GraphSpec, Sharding, build_pipeline
from dalaug.policies import PolicyLike, resolve_policy
from dalaug.sources import WebDatasetSource, resolve_source

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class Loader:
    """Iterate a data set through a DALI pipeline, as a ``torch.utils.data.DataLoader`` would.

    Args:
        source: an ImageFolder directory, WebDataset ``.tar`` shards (a file, a list, or a folder
            of them), or a list of ``(path, label)`` pairs.
        batch_size: images per batch (per rank under ``torch.distributed``).
        train: True: random-resized-crop, flip, policy, shuffle, drop the last partial batch.
            False: resize the shorter side, centre crop, every sample exactly once.
        crop: output side in pixels.
        resize: eval only: shorter side before the centre crop (default ``crop / 0.875``).
        scale: train: range of the crop's area as a fraction of the image.
        ratio: train: range of the crop's aspect ratio.
        flip: train: random horizontal flip (turn off for digits and text).
        policy: ``"autoaugment"``, ``"randaugment"``, ``"trivialaugment"``, a policy object
            (:class:`~dalaug.AutoAugment`, :class:`~dalaug.RandAugment`,
            :class:`~dalaug.TrivialAugment`) or None (crop + flip only: the clean pipeline).
        mean, std: per-channel normalization on the 0-1 scale (ImageNet's by default).
        dtype: float32, float16 or bfloat16 images.
        device: None (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seed: seeds the shuffle and the augmentation; the same seed gives the same batches.
        num_threads: DALI CPU threads (default: the cores this process may use, split by rank).
        prefetch: batches DALI prepares ahead.
        roi_decode: decode only the crop window (fast); False decodes whole images first.

    Example:
        >>> loader = Loader("data/train", batch_size=64, policy="autoaugment")  # doctest: +SKIP
        >>> for images, targets in loader:  # doctest: +SKIP
        ...     loss = criterion(model(images), targets)
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence,
        batch_size: int,
        *,
        train: bool = True,
        crop: int = 224,
        resize: int | None = None,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        policy: str | PolicyLike | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        seed: int = 0,
        num_threads: int | None = None,
        prefetch: int = 2,
        roi_decode: bool = True,
    ) -> None:
        _check_int("batch_size", batch_size)
        _check_int("crop", crop)
        if resize is not None:
            _check_int("resize", resize)
            if resize < crop:
                raise ValueError(f"resize: must be >= crop ({crop}), got {resize}")
        _check_range("scale", scale, upper=1.0)
        _check_range("ratio", ratio, upper=math.inf)
        mean, std = _check_mean_std(mean, std)
        if dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
        _check_int("prefetch", prefetch)
        if num_threads is not None:
            _check_int("num_threads", num_threads)
        policy = resolve_policy(policy)
        if policy is not None and not train:
            raise ValueError("policy: an eval loader (train=False) takes no policy")

        self._options = dict(
            batch_size=batch_size, train=train, crop=crop, resize=resize, scale=scale,
            ratio=ratio, flip=flip, policy=policy, mean=mean, std=std, dtype=dtype,
            device=device, seed=seed, num_threads=num_threads, prefetch=prefetch,
            roi_decode=roi_decode,
        )  # fmt: skip
        self.source = resolve_source(source)
        self.classes: list[str] = list(self.source.classes)
        self.device = _resolve_device(device)
        self.batch_size = batch_size
        self.train = train
        self.dtype = dtype
        self.sharding = _sharding()
        self.spec = GraphSpec(
            train=train,
            crop=crop,
            resize=resize if resize is not None else round(crop / 0.875),
            scale=tuple(scale),
            ratio=tuple(ratio),
            flip=flip,
            policy=policy,
            mean=tuple(255 * m for m in mean),
            std=tuple(255 * s for s in std),
            half=dtype == torch.float16,
            roi_decode=roi_decode,
        )
        self._seed = seed
        self._num_threads = num_threads or _default_threads(self.device, self.sharding)
        self._prefetch = prefetch
        self._iterator = self._build()
        self.epoch = 0

    def _build(self, checkpoint: str | None = None) -> DALIGenericIterator:
        device_id = None if self.device.type == "cpu" else self.device.index
        pipe = build_pipeline(
            self.spec,
            self.source,
            batch_size=self.batch_size,
            device_id=device_id,
            num_threads=self._num_threads,
            # Augmentation differs per rank; the shuffle must agree across ranks.
            seed=(self._seed * 1009 + self.sharding.shard_id) % 2**31,
            reader_seed=self._seed,
            sharding=self.sharding,
            prefetch=self._prefetch,
            checkpoint=checkpoint,
        )
        policy = LastBatchPolicy.DROP if self.train else LastBatchPolicy.PARTIAL
        return DALIGenericIterator(
            pipe, ["images", "targets"], reader_name=READER_NAME,
            last_batch_policy=policy, auto_reset=True,
        )  # fmt: skip

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return len(self._iterator)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self._iterator:
            images, targets = batch[0]["images"], batch[0]["targets"]
            yield self._images(images), self._targets(targets)
        self.epoch += 1

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        if self.dtype == torch.bfloat16:
            images = images.to(torch.bfloat16)
        return images

    def _targets(self, targets: torch.Tensor) -> torch.Tensor:
        if isinstance(self.source, WebDatasetSource):
            return _ascii_to_int(targets)
        return targets.reshape(-1).long()

    def set_epoch(self, epoch: int) -> None:
        """For code written for ``DistributedSampler``: the shuffle already advances every epoch."""

    @property
    def num_samples(self) -> int:
        """Samples in the whole data set (all ranks)."""
        return len(self.source)

    def with_options(self, **changes) -> Loader:
        """A new loader over the same source with some constructor arguments changed.

        Example:
            >>> clean = loader.with_options(policy=None)  # doctest: +SKIP
        """
        options = {**self._options, **changes}
        return Loader(self.source_argument, **options)

    @property
    def source_argument(self):
        # Resolved sources are rebuilt from their file list, so with_options never rescans disk.
        source = self.source
        if isinstance(source, WebDatasetSource):
            return list(source.shards)
        return list(zip(source.files, source.labels, strict=True))

    def close(self) -> None:
        """Drop the DALI pipeline now (it is also dropped when the loader is garbage-collected)."""
        self._iterator = None


def _ascii_to_int(text: torch.Tensor) -> torch.Tensor:
    """(B, LABEL_BYTES) zero-padded ASCII digits -> int64 (B,), on the tensor's device."""
    digits = text.long() - ord("0")
    present = text != 0
    length = present.sum(dim=1, keepdim=True)
    position = torch.arange(LABEL_BYTES, device=text.device)
    power = (length - 1 - position).clamp(min=0)
    return (digits * present * torch.pow(10, power)).sum(dim=1)


def _check_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


def _check_range(name: str, value, upper: float) -> None:
    ok = (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, (int, float)) for v in value)
        and 0 < value[0] <= value[1] <= upper
    )
    if not ok:
        raise ValueError(f"{name}: expected (low, high) with 0 < low <= high <= {upper}, got {value!r}")


def _check_mean_std(mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    for name, values in (("mean", mean), ("std", std)):
        if not (isinstance(values, Sequence) and len(values) == 3):
            raise ValueError(f"{name}: expected 3 per-channel values on the 0-1 scale, got {values!r}")
    if not all(0 <= m <= 1 for m in mean):
        raise ValueError(f"mean: values must lie in [0, 1] (the 0-1 pixel scale), got {mean!r}")
    if not all(s > 0 for s in std):
        raise ValueError(f"std: values must be > 0, got {std!r}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _resolve_device(device) -> torch.device:
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


def _sharding() -> Sharding:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return Sharding(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return Sharding()


def _default_threads(device: torch.device, sharding: Sharding) -> int:
    if device.type == "cuda":
        return 4
    local = int(os.environ.get("LOCAL_WORLD_SIZE", sharding.num_shards))
    return max(1, len(os.sched_getaffinity(0)) // max(1, local))


def replace_spec(spec: GraphSpec, **changes) -> GraphSpec:
    return replace(spec, **changes)

"""The Loader: a DALI pipeline behind the interface of a PyTorch DataLoader.

It yields ``(images, targets)``: images NCHW normalized on ``loader.device``, targets int64 (B,).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import torch
from nvidia.dali.plugin.base_iterator import LastBatchPolicy
from nvidia.dali.plugin.pytorch import DALIGenericIterator

from dalaug.feed import EpochFeed, Sharding
from dalaug.graphs import GraphSpec, build_pipeline
from dalaug.policies import PolicyLike, resolve_policy
from dalaug.sources import Samples, resolve_source
from dalaug.verify import decode_failures


class DecodeError(RuntimeError):
    """A sample DALI cannot decode; ``failures`` maps each culprit's name to the reason."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = failures
        listed = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
        super().__init__(f"cannot decode {len(failures)} file(s): {listed}")


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
        source: str | os.PathLike | Sequence | Samples,
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
        self.samples = resolve_source(source)
        self.classes: list[str] = list(self.samples.classes)
        self.device = _resolve_device(device)
        self.batch_size = batch_size
        self.train = train
        self.dtype = dtype
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
        sharding = _sharding()
        self.feed = EpochFeed(
            self.samples, batch_size, shuffle=train, drop_last=train, seed=seed, sharding=sharding
        )
        self._seed = seed
        self._num_threads = num_threads or _default_threads(self.device, sharding)
        self._prefetch = prefetch
        self.epoch = 0  # the epoch the next iteration serves
        self.sample_ids: torch.Tensor | None = None  # ids of the batch last yielded
        self._epochs_started = 0  # epochs this pipeline has run; DALI's epoch_idx counts them
        self._stale = False  # the pipeline holds batches of an epoch that was broken off
        self._iterator = self._build()

    def _build(self) -> DALIGenericIterator:
        device_id = None if self.device.type == "cpu" else self.device.index
        pipe = build_pipeline(
            self.spec,
            self.feed,
            device_id=device_id,
            num_threads=self._num_threads,
            # Augmentation differs per rank; the epoch order (the feed's seed) agrees across ranks.
            seed=(self._seed * 1009 + self.feed.sharding.rank) % 2**31,
            prefetch=self._prefetch,
        )
        # The feed ends each epoch itself (StopIteration); DALI's iterator just passes batches on.
        return DALIGenericIterator(
            pipe, ["images", "targets", "ids"], last_batch_policy=LastBatchPolicy.PARTIAL,
            auto_reset=False, prepare_first_batch=False,
        )  # fmt: skip

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.feed.num_batches()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch: ``(images, targets)`` batches; the next ``for`` starts the next epoch."""
        if self._stale:
            # An epoch was broken off: DALI cannot rewind its prefetched batches, so start afresh.
            self._iterator = self._build()
            self._epochs_started = 0
            self._stale = False
        # Point the feed at self.epoch before DALI prefetches anything of it (set_epoch may have
        # moved it); DALI's BatchInfo.epoch_idx counts the epochs this pipeline has started.
        self.feed.first_epoch = self.epoch - self._epochs_started
        if self._epochs_started:
            self._iterator.reset()
        batches = iter(self._iterator)
        iteration, finished = 0, False
        try:
            while True:
                try:
                    batch = next(batches)[0]
                except StopIteration:
                    finished = True
                    break
                except RuntimeError as error:
                    raise self._explain(error, iteration) from error
                iteration += 1
                self.sample_ids = batch["ids"].reshape(-1)
                yield self._images(batch["images"]), batch["targets"].reshape(-1).long().to(self.device)
        finally:
            # Runs on a normal end and when the caller breaks off (the generator is closed):
            # either way the next iteration serves the next epoch, as a DataLoader would.
            self._epochs_started += 1
            self._stale = not finished
            self.epoch += 1

    def _explain(self, error: RuntimeError, iteration: int) -> Exception:
        """Name the sample(s) behind a DALI failure in batch ``iteration`` (or the prefetched ones)."""
        suspects = []
        for ahead in range(self._prefetch + 1):
            try:
                suspects.extend(self.feed.batch_ids(self.epoch, iteration + ahead))
            except StopIteration:
                break
        failures = decode_failures(self.samples, suspects)
        if not failures:
            return error
        return DecodeError({self.samples.name(i): reason for i, reason in failures.items()})

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        if self.dtype == torch.bfloat16:
            images = images.to(torch.bfloat16)
        return images

    def set_epoch(self, epoch: int) -> None:
        """Serve ``epoch`` next (its order is a pure function of the seed and the epoch)."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch: expected a non-negative int, got {epoch!r}")
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Samples in the whole data set (all ranks)."""
        return len(self.samples)

    def with_options(self, **changes) -> Loader:
        """A new loader over the same samples (no rescan) with some constructor arguments changed.

        Example:
            >>> clean = loader.with_options(policy=None)  # doctest: +SKIP
        """
        return Loader(self.samples, **{**self._options, **changes})


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
        raise ValueError(
            f"{name}: expected (low, high) with 0 < low <= high <= {upper}, got {value!r}"
        )


def _check_mean_std(mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    for name, values in (("mean", mean), ("std", std)):
        if not (isinstance(values, Sequence) and len(values) == 3):
            raise ValueError(
                f"{name}: expected 3 per-channel values on the 0-1 scale, got {values!r}"
            )
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
        raise ValueError(
            f"device: expected None, 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {str(device)!r} requested but CUDA is not available")
        return torch.device(
            "cuda", device.index if device.index is not None else torch.cuda.current_device()
        )
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
    local = int(os.environ.get("LOCAL_WORLD_SIZE", sharding.world_size))
    return max(1, len(os.sched_getaffinity(0)) // max(1, local))

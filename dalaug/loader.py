"""The Loader: a DALI pipeline behind the interface of a PyTorch DataLoader.

It yields ``(images, targets)``: images NCHW normalized on ``loader.device``, targets int64 (B,).

Bad files do not stop a run. DALI aborts the whole pipeline on one undecodable file and has no skip
option (DALI issues #3913, #1435, #5489), so on a failure the loader decodes the failing batch and
the prefetched ones sample by sample to name the culprits, leaves them out of the epoch order (see
:class:`~dalaug.feed.EpochFeed`), rebuilds the pipeline and resumes the same epoch at the batch that
failed: batches already delivered are unchanged and every other sample is still delivered once. The
files are logged (logger ``"dalaug"``), kept in ``loader.bad_samples`` and written by
``loader.write_report``; more than ``max_bad_fraction`` of the data set is an error.

A run resumes mid-epoch from ``loader.state_dict()``: DALI 2.4's checkpoint of the pipeline (reader
position and random state) plus the feed's position and excluded samples.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from nvidia.dali.plugin.base_iterator import LastBatchPolicy
from nvidia.dali.plugin.pytorch import DALIGenericIterator

from dalaug.feed import EpochFeed, Sharding
from dalaug.graphs import GraphSpec, build_pipeline
from dalaug.policies import PolicyLike, resolve_policy
from dalaug.sources import Samples, resolve_source
from dalaug.verify import decode_failures

log = logging.getLogger("dalaug")

STATE_VERSION = 1


class DecodeError(RuntimeError):
    """Samples DALI cannot decode; ``failures`` maps each culprit's name to the reason."""

    def __init__(self, failures: dict[str, str], note: str = "") -> None:
        self.failures = dict(failures)
        listed = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
        super().__init__(f"cannot decode {len(failures)} file(s): {listed}" + (f" ({note})" if note else ""))


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
        max_bad_fraction: how much of the data set may turn out undecodable before iterating
            raises :class:`DecodeError`: up to ``int(max_bad_fraction * num_samples)`` bad files
            are left out and logged (so below 1000 samples the default allows none); 0 makes
            any bad file an error.
        distributed: under ``torch.distributed``, read this rank's shard (True) or the whole data
            set (False, e.g. for a side measurement every rank makes on the same samples).

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
        max_bad_fraction: float = 0.001,
        distributed: bool = True,
    ) -> None:
        _check_int("batch_size", batch_size)
        for name, flag in (("train", train), ("flip", flip), ("roi_decode", roi_decode)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name}: expected True or False, got {flag!r}")
        if (
            not isinstance(max_bad_fraction, (int, float))
            or isinstance(max_bad_fraction, bool)
            or not 0 <= max_bad_fraction < 1
        ):
            raise ValueError(f"max_bad_fraction: expected a fraction in [0, 1), got {max_bad_fraction!r}")
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
            roi_decode=roi_decode, max_bad_fraction=max_bad_fraction, distributed=distributed,
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
        sharding = _sharding() if distributed else Sharding()
        self.feed = EpochFeed(
            self.samples, batch_size, shuffle=train, drop_last=train, seed=seed, sharding=sharding
        )
        self._seed = seed
        self._num_threads = num_threads or _default_threads(self.device, sharding)
        self._prefetch = prefetch
        self.max_bad_fraction = float(max_bad_fraction)
        self.epoch = 0  # the epoch the next iteration serves
        self.sample_ids: torch.Tensor | None = None  # ids of the batch last yielded
        self.bad_samples: dict[str, str] = {}  # left out as undecodable: name -> reason
        self.recoveries: list[dict] = []  # one entry per pipeline rebuilt after a bad file
        self._iteration = 0  # batches of self.epoch delivered so far
        self._epochs_started = 0  # epochs this pipeline has run; DALI's epoch_idx counts them
        self._stale = False  # the pipeline holds batches of an epoch that was broken off
        self._ahead = False  # DALI may have prefetched the epoch after the last one finished
        self._prepared = None  # (epoch, its batch generator, its first batch) from prepare()
        self._generation = 0  # pipelines built after the first; each gets its own seed
        self._retried: tuple[int, int] | None = None  # (epoch, iteration) of an unexplained failure
        for name, reason in self.samples.unreadable:
            self._leave_out({name: reason})
        self._iterator: DALIGenericIterator | None = self._build()

    def _build(self, checkpoint: bytes | None = None) -> DALIGenericIterator:
        device_id = None if self.device.type == "cpu" else self.device.index
        pipe = build_pipeline(
            self.spec,
            self.feed,
            device_id=device_id,
            num_threads=self._num_threads,
            # Augmentation differs per rank and per rebuilt pipeline (a rebuilt pipeline must not
            # replay the start of the epoch's random stream); the order (the feed) agrees across ranks.
            seed=(self._seed * 1009 + self.feed.sharding.rank + 7919 * self._generation) % 2**31,
            prefetch=self._prefetch,
            checkpoint=checkpoint,
        )
        # The feed ends each epoch itself (StopIteration); DALI's iterator just passes batches on.
        return DALIGenericIterator(
            pipe, ["images", "targets", "ids"], last_batch_policy=LastBatchPolicy.PARTIAL,
            auto_reset=False, prepare_first_batch=False,
        )  # fmt: skip

    def _rebuild(self) -> None:
        """A new pipeline whose first epoch is ``self.epoch``, starting at ``self._iteration``."""
        self._iterator = None  # let DALI free the old pipeline (and its threads) first
        self._generation += 1
        self.feed.first_epoch = self.epoch
        self.feed.first_iteration = self._iteration
        self._epochs_started = 0
        self._stale = self._ahead = False
        self._iterator = self._build()

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.feed.num_batches()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch: ``(images, targets)`` batches; the next ``for`` starts the next epoch.

        A loader restored mid-epoch by :meth:`load_state_dict` (or closed mid-epoch) serves the
        rest of that epoch.
        """
        if self._prepared is not None:
            _, batches, first = self._prepared
            self._prepared = None
            yield first
            yield from batches
        else:
            yield from self._epoch()

    def prepare(self, epoch: int) -> None:
        """Start ``epoch`` now, so that its first batch is ready when the ``for`` comes.

        A new pipeline's first batch costs about two ordinary ones (DALI warms up its threads and
        buffers); the :class:`~dalaug.Schedule` calls this from its background thread for the
        next phase's loader, before the boundary. Another :meth:`set_epoch` discards it.
        """
        self._discard_prepared()
        self.set_epoch(epoch)
        batches = self._epoch()
        self._prepared = (epoch, batches, next(batches))

    def _discard_prepared(self) -> None:
        if self._prepared is not None:
            batches, self._prepared = self._prepared[1], None
            batches.close()  # the epoch counts as broken off: the next one starts afresh
            self._iteration = 0

    def _epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._iteration == 0 and self._iterator is not None and not self._stale:
            # DALI's BatchInfo.epoch_idx counts the epochs this pipeline started; point the feed at
            # self.epoch, unless DALI already prefetched another epoch (set_epoch jumped).
            if self._ahead and self.feed.first_epoch + self._epochs_started != self.epoch:
                self._stale = True
            else:
                self.feed.first_epoch = self.epoch - self._epochs_started
        if self._stale or self._iterator is None:
            # DALI cannot rewind the batches it prefetched (an epoch broken off, a jump): start afresh.
            self._rebuild()
        finished = False
        try:
            while True:
                try:
                    batch = next(self._iterator)[0]
                except StopIteration:
                    finished = True
                    break
                except RuntimeError as error:
                    self._recover(error)
                    continue
                self._iteration += 1
                self.sample_ids = batch["ids"].reshape(-1)
                yield self._images(batch["images"]), batch["targets"].reshape(-1).long().to(self.device)
        finally:
            # Runs on a normal end and when the caller breaks off (the generator is closed):
            # either way the next iteration serves the next epoch, as a DataLoader would.
            if finished:
                # Reset now, not at the next `for`: DALI cannot reset a pipeline restored from a
                # checkpoint taken at the end of an epoch, so state_dict() must see the next one.
                self._iterator.reset()
                self._ahead = True
            self._epochs_started += 1
            self._stale = not finished
            self._iteration = 0
            self.epoch += 1

    def _recover(self, error: RuntimeError) -> None:
        """After DALI failed at batch ``self._iteration``: leave out the samples that do not decode
        and go on with a new pipeline from that batch, or raise."""
        started = time.perf_counter()
        suspects = set()
        # DALI runs up to `prefetch` batches ahead: the culprit is in one of these.
        for ahead in range(self._prefetch + 1):
            try:
                suspects.update(self.feed.batch_ids(self.epoch, self._iteration + ahead).tolist())
            except StopIteration:
                break
        failures = decode_failures(self.samples, sorted(suspects))
        if not failures:
            # Every suspect decodes on its own: maybe a passing I/O error. Retry once from here.
            if self._retried == (self.epoch, self._iteration):
                raise error
            log.warning(
                "DALI failed at epoch %d batch %d but every sample around it decodes; retrying once: %s",
                self.epoch, self._iteration, str(error).strip().splitlines()[-1:],
            )  # fmt: skip
            self._retried = (self.epoch, self._iteration)
            self._rebuild()
            return
        named = {self.samples.name(i): reason for i, reason in sorted(failures.items())}
        self._leave_out(named, cause=error)
        self.feed.exclude(failures)
        self._rebuild()
        seconds = time.perf_counter() - started
        self.recoveries.append(
            {"epoch": self.epoch, "iteration": self._iteration, "samples": list(named), "seconds": seconds}
        )
        log.info(
            "rebuilt the pipeline in %.2f s; epoch %d goes on at batch %d",
            seconds, self.epoch, self._iteration,
        )  # fmt: skip

    def _leave_out(self, named: dict[str, str], cause: BaseException | None = None) -> None:
        """Count ``named`` bad samples; raise :class:`DecodeError` past ``max_bad_fraction``."""
        self.bad_samples.update(named)
        total = len(self.samples) + len(self.samples.unreadable)
        allowed = int(self.max_bad_fraction * total)
        if len(self.bad_samples) > allowed:
            note = (
                f"{len(self.bad_samples)} bad of {total} samples is more than max_bad_fraction="
                f"{self.max_bad_fraction:g} allows ({allowed}); find them all with `dalaug verify`, "
                "then fix or remove them, or raise max_bad_fraction"
            )
            raise DecodeError(self.bad_samples, note) from cause
        for name, reason in named.items():
            log.warning(
                "leaving out %s: %s (%d bad samples, %d allowed)",
                name, reason, len(self.bad_samples), allowed,
            )  # fmt: skip

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        if self.dtype == torch.bfloat16:
            images = images.to(torch.bfloat16)
        return images

    def set_epoch(self, epoch: int) -> None:
        """Serve ``epoch`` next (its order is a pure function of the seed and the epoch).

        On a loader restored mid-epoch, ``set_epoch`` with the saved epoch keeps the saved position
        (a training loop calls it at the top of each epoch); another epoch drops the rest of it.
        """
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"epoch: expected a non-negative int, got {epoch!r}")
        if self._prepared is not None and self._prepared[0] != epoch:
            self._discard_prepared()
        if epoch != self.epoch and self._iteration > 0:
            self._iteration = 0
            self._stale = True
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Samples in the whole data set (all ranks)."""
        return len(self.samples)

    def with_options(self, **changes) -> Loader:
        """A new loader over the same samples (no rescan) with some constructor arguments changed.

        The samples this loader left out as bad stay out of the new one.

        Example:
            >>> clean = loader.with_options(policy=None)  # doctest: +SKIP
        """
        loader = Loader(self.samples, **{**self._options, **changes})
        # What this loader found bad is bad for the next phase too: no second failure, no rebuild.
        loader.feed.exclude(self.feed.excluded)
        loader.bad_samples.update(self.bad_samples)
        return loader

    def state_dict(self) -> dict:
        """Where the loader is: epoch, batch within it, DALI's checkpoint, the samples left out.

        Call it between batches (inside the ``for`` loop, or between epochs); the result holds only
        numbers, strings, bytes, lists and dicts, so ``torch.save`` and
        :func:`dalaug.checkpoint.save` store it and ``torch.load(weights_only=True)`` reads it.

        Example:
            >>> dalaug.checkpoint.save({"loader": loader.state_dict()}, "ckpt.pt")  # doctest: +SKIP
        """
        dali = None
        if self._iterator is not None and not self._stale:
            dali = self._iterator.checkpoints()[0]
        return {
            "version": STATE_VERSION,
            "num_samples": len(self.samples),
            "batch_size": self.batch_size,
            "seed": self._seed,
            "world_size": self.feed.sharding.world_size,
            "rank": self.feed.sharding.rank,
            "epoch": self.epoch,
            "iteration": self._iteration,
            "epochs_started": self._epochs_started,
            "generation": self._generation,
            "feed": self.feed.state_dict(),
            "bad_samples": dict(self.bad_samples),
            "dali": dali,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`: the next ``for`` serves the rest of the saved epoch,
        the same batches (ids and, on the CPU, pixels) as the run that saved it.

        Raises:
            ValueError: ``state`` is not a loader state, or was saved by a loader over another data
                set, batch size, seed or number of ranks.
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"state: expected a dict from Loader.state_dict() (version {STATE_VERSION})")
        for key, mine in (
            ("num_samples", len(self.samples)),
            ("batch_size", self.batch_size),
            ("seed", self._seed),
            ("world_size", self.feed.sharding.world_size),
        ):
            if state[key] != mine:
                raise ValueError(f"state: saved with {key}={state[key]!r}, this loader has {key}={mine!r}")
        self._iterator = None
        self.feed.load_state_dict(state["feed"])
        self.epoch = int(state["epoch"])
        self._iteration = int(state["iteration"])
        self._epochs_started = int(state["epochs_started"])
        self._generation = int(state["generation"])
        self.bad_samples = dict(state["bad_samples"])
        self._ahead = False
        if state["dali"] is None:
            self._stale = True  # saved after an epoch was broken off: the next one starts afresh
        else:
            self._stale = False
            self._iterator = self._build(checkpoint=state["dali"])

    def write_report(self, path: str | os.PathLike) -> Path:
        """Write the bad samples left out so far, and each recovery, as JSON (atomically)."""
        path = Path(path)
        report = {
            "num_samples": len(self.samples) + len(self.samples.unreadable),
            "max_bad_fraction": self.max_bad_fraction,
            "rank": self.feed.sharding.rank,
            "epoch": self.epoch,
            "bad_samples": [{"sample": k, "reason": v} for k, v in sorted(self.bad_samples.items())],
            "recoveries": self.recoveries,
        }
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(temporary, path)
        return path

    def close(self) -> None:
        """Free the DALI pipeline and its threads now; iterating again builds a new one."""
        self._discard_prepared()
        self._iterator = None

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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

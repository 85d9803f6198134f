"""The Loader: a DALI pipeline behind the interface of a PyTorch DataLoader.

It yields ``(images, targets)``: images NCHW (or channels_last) normalized on ``loader.device``,
targets int64 (B,) on the same device, or soft targets (B, C) when the loader applies batch
operators (the place where torchvision's and timm's scripts mix, their ``collate_fn``).

The state fits in one screen: ``epoch`` and ``iteration`` say which batch the loop gets next; the
pipeline is an endless stream of batches whose positions the :class:`~dalaug.reading.reader.BatchReader`
decides, so moving on to the next epoch costs nothing and a jump only drops the few batches DALI
had prefetched. A pipeline is rebuilt only after DALI failed, or to restore a checkpoint.

Bad files do not stop a run. The reader checks every file's bytes before DALI sees them and leaves
out what is missing, unreadable, empty, truncated or not an image. Should DALI still fail on a file
(corrupt data inside valid markers), the loader decodes the batches in flight sample by sample to
name the culprits, leaves them out, rebuilds the pipeline and resumes the same epoch at the batch
that failed. Either way the file is logged (logger ``"dalaug"``), kept in ``loader.bad_samples``
and written by ``loader.write_report``; more than ``max_bad_fraction`` of the data set is an error.

A run resumes mid-epoch from ``loader.state_dict()``: the position, the samples left out, and DALI
2.4's checkpoint of the pipeline's random state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from nvidia.dali.plugin.base_iterator import LastBatchPolicy
from nvidia.dali.plugin.pytorch import DALIGenericIterator

from dalaug.compose import apply_operators, changes_labels, leaf_operators
from dalaug.config import IMAGENET_MEAN, IMAGENET_STD, LoaderConfig, check_used
from dalaug.feed import EpochFeed, Sharding
from dalaug.graphs import build_pipeline
from dalaug.ops import BatchOp
from dalaug.policies import PolicyLike
from dalaug.reading.reader import BatchReader
from dalaug.reading.sources import Samples, resolve_source
from dalaug.reading.verification import decode_failures
from dalaug.translation import (
    dataset_samples,
    dataset_transform,
    is_mixing,
    translate_operators,
    translate_sampler,
    translate_transform,
)
from dalaug.views import BatchSamplerView, DatasetView, SamplerView

log = logging.getLogger("dalaug")

STATE_VERSION = 2
# DataLoader arguments that have no meaning here, with their defaults (which a script may pass
# explicitly): another value is refused with what to use instead.
UNSUPPORTED = {
    "collate_fn": (None, "batch operators go in operators=[...] (torchvision's MixUp / CutMix, timm's "
                   "Mixup or dalaug's: they run on the device, as a collate_fn would)"),
    "batch_sampler": (None, "the loader batches itself (batch_size=, drop_last=)"),
    "worker_init_fn": (None, "DALI threads need no initialization"),
    "generator": (None, "seed= seeds the order and the augmentation"),
    "timeout": (0, "no worker processes to wait for"),
    "multiprocessing_context": (None, "no worker processes are started"),
    "in_order": (True, "batches come in order"),
    "pin_memory_device": ("", "batches arrive on the loader's device"),
}
# A DALI error that is not about one sample's bytes: re-raised at once, never "recovered" from.
NOT_A_DECODE_FAILURE = re.compile(r"out of memory|cudaError|CUDA error|bad_alloc|allocat", re.I)


class DecodeError(RuntimeError):
    """Samples DALI cannot decode; ``failures`` maps each culprit's name to the reason."""

    def __init__(self, failures: dict[str, str], note: str = "") -> None:
        self.failures = dict(failures)
        listed = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
        super().__init__(f"cannot decode {len(failures)} file(s): {listed}" + (f" ({note})" if note else ""))


class Loader:
    """Iterate a data set through a DALI pipeline, as a ``torch.utils.data.DataLoader`` would.

    Args:
        source: an ImageFolder directory, WebDataset ``.tar`` shards (a file, a list, or a folder
            of them), or a list of ``(path, label)`` pairs.
        batch_size: images per batch (per rank under ``torch.distributed``).
        train: True: random-resized-crop, flip, policy, shuffle, drop the last partial batch.
            False: resize the shorter side, centre crop, every sample exactly once. Required
            unless ``shuffle`` says it (as a DataLoader call does: ``shuffle=True`` for training),
            so that a validation loader never augments by default.
        shuffle: a new order every epoch (default: ``train``).
        drop_last: drop the last partial batch (default: ``train``).
        crop: output side in pixels (default 224).
        resize: eval only: shorter side before the centre crop (default ``crop / 0.875``).
        scale: train: range of the crop's area as a fraction of the image (default (0.08, 1.0)).
        ratio: train: range of the crop's aspect ratio (default (3/4, 4/3)).
        flip: train: random horizontal flip (default True; turn off for digits and text).
        policy: ``"autoaugment"``, ``"randaugment"``, ``"trivialaugment"``, torchvision's and
            timm's names (``"ta_wide"``, ``"rand-m9-mstd0.5"``, ...), a policy object, or None
            (crop + flip only: the clean pipeline).
        interpolation: of the crop's resize: ``"bilinear"``, ``"bicubic"``, ``"nearest"``, ...
        mean, std: per-channel normalization on the 0-1 scale (ImageNet's by default).
        dtype: float32, float16 or bfloat16 images (float16 straight from DALI).
        memory_format: ``torch.contiguous_format`` or ``torch.channels_last`` (straight from DALI,
            no copy).
        device: None (this thread's CUDA device if any, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``; resolved once, here.
        seed: seeds the order, the augmentation and the operators (default 0); the same seed
            gives the same batches.
        num_threads: DALI CPU threads (default: the cores this process may use, split by rank).
        io_workers: processes reading and checking files ahead (default 4, shared by the
            process's loaders).
            Each reads one file at a time from local files, and up to ``READS_IN_FLIGHT`` (8) at
            once from storage whose opens wait (network file systems); 0 reads in one thread of
            this process.
        prefetch: batches DALI prepares ahead (default 2).
        roi_decode: decode only the crop window (fast); False decodes whole images first.
        max_bad_fraction: how much of the data set may turn out bad before iterating raises
            :class:`DecodeError`: up to ``int(max_bad_fraction * num_samples)`` bad files are left
            out and logged (default 0.001: below 1000 samples none); 0: any bad file is an error.
        distributed: under ``torch.distributed`` (or torchrun, before ``init_process_group``),
            read this rank's shard (True, the default) or the whole data set (False, e.g. for a
            side measurement every rank makes on the same samples).
        lockstep: pad the ranks' shards to equal length (default: for training). An evaluation
            loop that reduces across ranks every batch needs it, and then counts the padding's
            at most ``world_size - 1`` duplicates; without it every sample counts exactly once.
        repeats: train: repeated augmentation (timm's ``--aug-repeats``, DeiT's RASampler): each
            sample ``repeats`` times per epoch, the copies on different ranks, with different draws;
            an epoch keeps its length (about ``len / repeats`` distinct samples). See
            :class:`~dalaug.feed.EpochFeed`.
        color_jitter: train: brightness, contrast and saturation jitter of strength j (factors
            uniform in [1 - j, 1 + j], as torchvision's ``ColorJitter(j, j, j)``).
        operators: batch operators (``dalaug.Mixup``, ``dalaug.RandomChoice([...])``, ...) applied
            to every batch on the device; the loader then yields soft targets (B, C). Turning an
            operator off (``op.enabled = False``) takes effect at once; ``loader.mixup_enabled``
            (timm's switch) turns the mixing ones off and leaves erasing on.
        num_workers: DataLoader's name for ``num_threads``.
        prefetch_factor: DataLoader's name for ``prefetch``.
        pin_memory, persistent_workers: accepted for DataLoader scripts; batches already arrive
            on ``device`` and DALI's threads persist, which is what they ask for.

    Example:
        >>> loader = Loader("data/train", batch_size=64, train=True, policy="autoaugment")  # doctest: +SKIP
        >>> for images, targets in loader:  # doctest: +SKIP
        ...     loss = criterion(model(images), targets)
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence | Samples,
        batch_size: int,
        *,
        train: bool | None = None,
        shuffle: bool | None = None,
        drop_last: bool | None = None,
        sampler: Any = None,
        policy: str | PolicyLike | None = None,
        device: str | torch.device | None = None,
        operators: Any = None,
        num_workers: int | None = None,
        prefetch_factor: int | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        **options: Any,
    ) -> None:
        if is_mixing(options.get("collate_fn")) and operators is None:  # a collate_fn that only mixes
            operators = options.pop("collate_fn")
        for name, (default, advice) in UNSUPPORTED.items():
            if name in options and options.pop(name) != default:
                raise TypeError(f"{name}: not a dalaug.Loader argument; {advice}")
        unknown = sorted(options.keys() - {field.name for field in dataclasses.fields(LoaderConfig)})
        if unknown:
            raise TypeError(f"{', '.join(unknown)}: not a dalaug.Loader argument (see help(dalaug.Loader))")
        options = _with_dataloader_names(options, num_workers=num_workers, prefetch_factor=prefetch_factor)
        named = {"policy": policy, "device": device}
        options.update({name: value for name, value in named.items() if value is not None})
        dataset = source if isinstance(source, torch.utils.data.Dataset) else None
        samples = dataset_samples(dataset) if dataset is not None else resolve_source(source)
        sharding = None
        if sampler is not None:
            if shuffle:
                raise ValueError("sampler: give sampler or shuffle=True, not both (as DataLoader)")
            given = translate_sampler(sampler, len(samples))
            shuffle, sharding = given.pop("shuffle"), given.pop("sharding", None)
            options = _merge("sampler", options, given)
        if dataset is not None and sharding is None and "distributed" not in options:
            options["distributed"] = False  # as a DataLoader: a DistributedSampler shards, nothing else
        # What the user said, kept to read the dataset's transform again each epoch (_follow_transform).
        self._given = dict(options, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, train=train)
        self._user_operators = translate_operators(operators)
        config, transform_operators = _configure(dataset, self._given)
        self._setup(samples, config, [*transform_operators, *self._user_operators], dataset=dataset,
                    sampler=sampler, sharding=None if sharding is None else Sharding(*sharding))  # fmt: skip
        if dataset is not None and sharding is None and not config.distributed and config.shuffle:
            _warn_unsharded()

    def _setup(
        self, samples: Samples, config: LoaderConfig, operators, *, dataset=None, sampler=None, sharding=None
    ) -> None:  # fmt: skip
        self.samples = samples
        self.config = config
        self.classes: list[str] = list(samples.classes)
        self.operators = _check_operators(operators, len(self.classes))
        self._num_classes = _target_classes(self.operators, len(self.classes))
        self.device: torch.device = config.device
        self._dataset = dataset  # the user's dataset object, if one was the source
        self._sampler = sampler  # the user's sampler, if given: its set_epoch moves the order
        self._sharding_given = sharding  # from that sampler
        if sharding is None:
            sharding = _sharding() if config.distributed else Sharding()
        self.feed = EpochFeed(
            samples, config.batch_size, shuffle=config.shuffle, drop_last=config.drop_last,
            seed=config.seed, sharding=sharding, lockstep=config.lockstep, pad=config.pad,
            repeats=config.repeats,
        )  # fmt: skip
        if self.feed.num_batches() == 0:
            raise ValueError(
                f"batch_size: {config.batch_size} is more than the {self.feed.samples_per_rank} samples "
                f"of each of {sharding.world_size} rank(s), and drop_last leaves no batch"
            )
        self.reader = BatchReader(self.feed, config.io_workers)
        self.generator = torch.Generator().manual_seed((config.seed * 1009 + sharding.rank) % 2**64)
        self.max_bad_fraction = float(config.max_bad_fraction)
        self.epoch = 0  # the epoch the next (or current) iteration serves
        self.iteration = 0  # batches of that epoch delivered so far
        self.sample_ids: torch.Tensor | None = None  # ids of the batch last yielded
        self.bad_samples: dict[str, str] = {}  # left out: name -> reason
        self.recoveries: list[dict] = []  # one entry per pipeline rebuilt after DALI failed
        self._pipeline: DALIGenericIterator | None = None
        self._generation = 0  # pipelines built so far; each gets its own seed
        self._built_in = os.getpid()  # the process whose DALI threads run the pipeline
        # None: a with_config copy, which follows no transform (its options were set explicitly)
        self._given: dict | None = getattr(self, "_given", None)
        self._retried: tuple[int, int] | None = None  # where an unexplained failure was retried
        self._iterating: object | None = None  # the token of the iterator serving now, if any
        self._held: tuple | None = None  # a batch taken out early: the next epoch's first
        for name, reason in samples.unreadable:
            self._leave_out({name: reason})

    # --- the DataLoader surface -------------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def drop_last(self) -> bool:
        return self.config.drop_last

    @property
    def train(self) -> bool:
        return self.config.train

    @property
    def dtype(self) -> torch.dtype:
        return self.config.dtype

    @property
    def num_workers(self) -> int:
        """DALI's CPU threads (there are no worker processes)."""
        return self.config.threads(_local_world_size(self.feed.sharding))

    @property
    def pin_memory(self) -> bool:
        """Batches arrive on the device: nothing to pin."""
        return self.device.type == "cuda"

    @property
    def dataset(self):
        """The dataset given as the source, the user's own object (``Subset(loader.dataset, ...)``
        and ``dataset[i]`` work as they did); for a folder, shards or pairs, the data set as
        torchvision's ImageFolder shows it: length, classes, samples, targets."""
        return self._dataset if self._dataset is not None else DatasetView(self.samples)

    @property
    def sampler(self):
        """The sampler given (as a DataLoader keeps it); else this rank's shard, as a
        DistributedSampler: ``len``, ``set_epoch``, ``num_replicas``, ``rank``."""
        return self._sampler if self._sampler is not None else SamplerView(self)

    @property
    def batch_sampler(self) -> BatchSamplerView:
        """This rank's batches of sample ids, as a BatchSampler; its ``sampler`` is :attr:`sampler`."""
        return BatchSamplerView(self)

    @property
    def mixup_enabled(self) -> bool:
        """Whether the loader's mixing operators mix: timm's train.py sets ``loader.mixup_enabled =
        False`` at ``--mixup-off-epoch`` (its prefetcher mixes in the loader, as dalaug does). As
        timm's switch, it leaves erasing (RandomErasing, Cutout) on."""
        return any(op.enabled for op in self.operators if op.mixes)

    @mixup_enabled.setter
    def mixup_enabled(self, value: bool) -> None:
        mixing = [op for op in self.operators if op.mixes]
        if not mixing:
            raise AttributeError("mixup_enabled: this loader has no mixing operators to turn on or off")
        for op in mixing:
            op.mixup_enabled = value

    @property
    def num_samples(self) -> int:
        """Samples in the whole data set (all ranks)."""
        return len(self.samples)

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.feed.num_batches()

    # --- iterating --------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of ``(images, targets)``; the next ``for`` serves the next epoch.

        A loader restored mid-epoch by :meth:`load_state_dict` serves the rest of that epoch; an
        epoch broken off (``break``) counts as served, as with a DataLoader. The loader is one
        stream, iterated by one iterator at a time: a new one (or ``set_epoch``) while an earlier
        one is still alive (a kept peek) ends that one as a ``break`` would, and that one raises if
        asked again, so that no batch goes to two iterators and no epoch is skipped.
        """
        self._end_iteration()
        epoch = getattr(self._sampler, "epoch", None)  # a DistributedSampler's set_epoch, as a DataLoader
        if isinstance(epoch, int) and epoch != self.epoch:
            self.set_epoch(epoch)
        if self.iteration == 0:
            self._follow_transform()
        token = self._iterating = object()
        try:
            while self.iteration < len(self):
                if self._iterating is not token:
                    raise RuntimeError(
                        "this iterator of the loader was ended by a newer iter(loader), set_epoch or "
                        "load_state_dict: a Loader serves one iteration at a time"
                    )
                batch = self._next_batch()
                if batch is None:
                    break
                self.iteration += 1
                yield batch
        finally:
            if self._iterating is token:
                self._end_iteration()

    def _follow_transform(self) -> None:
        """A transform assigned to (or changed in) ``loader.dataset`` takes effect at the next epoch:
        scripts switch augmentation this way (a final phase, three-augment)."""
        if self._dataset is None or self._given is None:
            return
        config, transform_operators = _configure(self._dataset, self._given)
        operators = [*transform_operators, *self._user_operators]
        if config == self.config and repr(operators) == repr(self.operators):
            return
        if config.train != self.config.train:
            raise ValueError(
                "dataset.transform: changed from a training to an evaluation transform (or back) after the "
                "loader was built; build another loader for it"
            )
        log.info("dataset.transform changed: epoch %d reads with %s", self.epoch, config)
        self.close()
        self.config = config
        self.operators = _check_operators(operators, len(self.classes))
        self._num_classes = _target_classes(self.operators, len(self.classes))

    def _end_iteration(self) -> None:
        """The epoch being iterated, if any, counts as served (run through or broken off)."""
        if self._iterating is not None:
            self._iterating = None
            self.epoch += 1
            self.iteration = 0

    def set_epoch(self, epoch: int) -> None:
        """Serve ``epoch`` next (its order is a pure function of the seed and the epoch).

        On a loader restored mid-epoch, ``set_epoch`` with the saved epoch keeps the saved position
        (a training loop calls it at the top of each epoch); another epoch starts that one afresh.
        """
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"epoch: expected a non-negative int, got {epoch!r}")
        self._end_iteration()
        if epoch != self.epoch:
            self.epoch, self.iteration = epoch, 0

    def prepare(self, epoch: int) -> None:
        """Build the pipeline now and start ``epoch``, so its first batch is ready when the ``for``
        comes (the :class:`~dalaug.Schedule` calls this in its thread before a phase boundary)."""
        self.set_epoch(epoch)
        self._ensure_pipeline()

    def _ensure_pipeline(self) -> None:
        if self._pipeline is not None and self._built_in != os.getpid():
            # DALI's threads stayed in the parent: the copy of the pipeline would wait forever.
            raise RuntimeError(
                f"this Loader's pipeline was built in process {self._built_in}; a forked child "
                "builds a Loader of its own (or the parent builds none before forking)"
            )
        if self._pipeline is None:
            self._build()
        else:
            self.reader.seek((self.epoch, self.iteration))

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The batch at the loader's position, or None when the epoch turns out to be over: an
        evaluation epoch whose last samples went bad while it was read has a batch fewer."""
        self._ensure_pipeline()
        while True:
            if self._held is not None:
                (out, entry), self._held = self._held, None
            else:
                try:
                    with _on(self.device):
                        out = next(self._pipeline)[0]
                except RuntimeError as error:
                    self._recover(error)
                    continue
                entry = self.reader.take()
                self._report_found()
            if entry.stale or entry.position != self.reader.in_stream((self.epoch, self.iteration)):
                continue
            if self.iteration < len(self):
                break
            self._held = (out, entry)  # the epoch shrank while it was read: this batch opens the next
            return None
        self.sample_ids = torch.from_numpy(entry.ids)
        images, targets = out["images"], out["labels"]
        if self.config.memory_format == torch.channels_last:
            images = images.permute(0, 3, 1, 2)  # NHWC viewed as NCHW: channels_last, no copy
        if self.config.dtype == torch.bfloat16:
            images = images.to(torch.bfloat16)  # DALI has no bfloat16
        if self.operators:
            mixed, soft = apply_operators(
                self.operators, images, targets, num_classes=self._num_classes, generator=self.generator
            )
            # Targets turn soft only when an operator mixes labels (or smooths them): erasing alone
            # keeps the class indices a script's loss expects.
            images, targets = (mixed, soft) if changes_labels(self.operators) else (mixed, targets)
        return images, targets

    def _build(self, checkpoint: str | None = None) -> None:
        """A new pipeline whose first batch is the loader's current position."""
        self._pipeline = None  # let DALI free the old pipeline (and its threads) first
        self.reader.restart((self.epoch, self.iteration))
        config = self.config
        pipe = build_pipeline(
            config.graph_spec(),
            self.reader,
            batch_size=config.batch_size,
            device_id=None if self.device.type == "cpu" else self.device.index,
            num_threads=config.threads(_local_world_size(self.feed.sharding)),
            # Augmentation differs per rank and per rebuilt pipeline (a rebuilt one must not replay
            # the random stream of the one before); the order (the feed) agrees across ranks.
            seed=(config.seed * 1009 + self.feed.sharding.rank + 7919 * self._generation) % 2**31,
            prefetch=config.prefetch,
            checkpoint=checkpoint,
        )
        self._generation += 1
        self._built_in = os.getpid()
        with _on(self.device):
            self._pipeline = DALIGenericIterator(
                pipe, ["images", "labels"], last_batch_policy=LastBatchPolicy.PARTIAL,
                auto_reset=False, prepare_first_batch=False,
            )  # fmt: skip

    # --- bad files --------------------------------------------------------------------------------

    def _report_found(self) -> None:
        """Name and count the samples the reader left out (its checks run in its threads)."""
        if self.reader.found_bad:
            found, self.reader.found_bad = self.reader.found_bad, {}
            changed = self.samples.changed_shards(found)
            if changed:  # its samples are no longer where the index says: no sample of it is to blame
                reason = "rewritten after it was indexed, when this loader was built"
                raise DecodeError(dict.fromkeys(changed, reason), "build the loader again to index it anew")
            self._leave_out({self.samples.name(i): reason for i, reason in sorted(found.items())})

    def _recover(self, error: RuntimeError) -> None:
        """After DALI failed: leave out the samples in flight that do not decode and go on with a
        new pipeline from the batch the loop is waiting for; or raise."""
        if NOT_A_DECODE_FAILURE.search(str(error)):
            raise error
        started = time.perf_counter()
        suspects = sorted({int(i) for entry in self.reader.issued for i in entry.ids})
        failures = decode_failures(self.samples, suspects)
        position = (self.epoch, self.iteration)
        if not failures:
            # Every suspect decodes on its own: maybe a passing I/O error. Retry once from here.
            if self._retried == position:
                raise error
            log.warning(
                "DALI failed at epoch %d batch %d but every sample around it decodes; retrying once: %s",
                *position, str(error).strip().splitlines()[-1:],
            )  # fmt: skip
            self._retried = position
            self._build()
            return
        named = {self.samples.name(i): reason for i, reason in sorted(failures.items())}
        self._leave_out(named, cause=error)
        self.feed.exclude(failures)
        self._build()
        seconds = time.perf_counter() - started
        self.recoveries.append({"epoch": position[0], "iteration": position[1], "samples": list(named),
                                "seconds": seconds})  # fmt: skip
        log.info("rebuilt the pipeline in %.2f s; epoch %d goes on at batch %d", seconds, *position)

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
        by_reason: dict[str, list[str]] = {}
        for name, reason in named.items():
            by_reason.setdefault(reason, []).append(name)
        for reason, names in by_reason.items():  # a shard that cannot be fetched: one line, not one a sample
            more = f" and {len(names) - 1} more samples" if len(names) > 1 else ""
            log.warning("leaving out %s%s: %s (%d bad samples, %d allowed)", names[0], more, reason,
                        len(self.bad_samples), allowed)  # fmt: skip

    # --- other phases, checkpoints, reports -------------------------------------------------------

    def with_options(self, **changes: Any) -> Loader:
        """A new loader over the same samples (no rescan), on the same device, with some options
        changed. The samples this loader left out as bad stay out of the new one. ``train=False``
        makes the evaluation loader the constructor makes: no shuffle, every sample, no policy,
        and no operators unless ``operators=`` says.

        Example:
            >>> clean = loader.with_options(policy=None)  # doctest: +SKIP
        """
        # An evaluation loader made from a training one mixes nothing unless told to.
        to_eval = self.config.train and changes.get("train") is False
        operators = changes.pop("operators", [] if to_eval else self.operators)
        for name in ("pin_memory", "persistent_workers"):  # accepted, as by the constructor
            changes.pop(name, None)
        aliases = {name: changes.pop(name, None) for name in ("num_workers", "prefetch_factor")}
        changes = _with_dataloader_names(changes, **aliases)
        return self.with_config(self.config.replace(**changes), operators)

    def with_config(self, config: LoaderConfig, operators: Sequence[BatchOp] | None = None) -> Loader:
        """A new loader over the same samples with the configuration ``config`` (see ``with_options``)."""
        loader = Loader.__new__(Loader)
        loader._setup(self.samples, config, operators, dataset=self._dataset, sampler=self._sampler,
                      sharding=self._sharding_given)  # fmt: skip
        loader.feed.exclude(self.feed.excluded)
        loader.bad_samples.update(self.bad_samples)
        return loader

    def state_dict(self) -> dict:
        """Where the loader is: epoch, batch within it, the samples left out, DALI's checkpoint and
        the operators' generator. Call it between batches; the result holds only numbers, strings,
        bytes, lists, dicts and tensors (``torch.load(weights_only=True)`` reads it). Taken after a
        ``break`` or a ``set_epoch`` jump, it drops the batches DALI drew ahead for the positions
        left (the next batch starts a new pipeline), so that a resumed run gets the same pixels.

        Example:
            >>> dalaug.checkpoint.save({"loader": loader.state_dict()}, "ckpt.pt")  # doctest: +SKIP
        """
        dali = None
        if self._pipeline is not None:
            issued, position = self.reader.issued, self.reader.in_stream((self.epoch, self.iteration))
            if any(entry.stale for entry in issued) or issued and issued[0].position != position:
                # After a jump (a break, set_epoch) the batches in flight were drawn for positions the
                # loop left, which a resumed run cannot replay. This run drops them too: both go on
                # from a fresh pipeline with the same seed (the generation saved below).
                self.close()
            else:  # DALI's checkpoint is of the batches taken out so far: the next ones follow it
                dali = self._pipeline.checkpoints()[0]
        return {
            "version": STATE_VERSION,
            "config": self.config.identity(),
            "num_samples": len(self.samples),
            "world_size": self.feed.sharding.world_size,
            "rank": self.feed.sharding.rank,
            "epoch": self.epoch,
            "iteration": self.iteration,
            "generation": self._generation,
            "feed": self.feed.state_dict(),
            "bad_samples": dict(self.bad_samples),
            "generator": self.generator.get_state(),
            "dali": dali,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`: the next ``for`` serves the rest of the saved epoch,
        the same batches (ids and, on the CPU, pixels) as the run that saved it.

        Under another number of ranks (an elastic or resubmitted job), give any rank's state: the
        samples the saved epoch had not delivered on any rank are shared out among this run's ranks,
        each served once, and later epochs are sharded for this world size. The augmentation drawn
        after such a resume is new (DALI's random state belongs to the old ranks); a training
        loader's epoch keeps its length in batches, its first batches counted as served. Another
        rank's state under the same number of ranks (Lightning saves rank 0's for all) resumes
        the same way: the position, with this rank's own shard and new draws (never that rank's).

        Raises:
            ValueError: ``state`` is not a loader state, or was saved by a loader over another data
                set or with another configuration (crop, policy, flip, seed, batch size, ...).
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"state: expected a dict from Loader.state_dict() (version {STATE_VERSION})")
        if state["num_samples"] != len(self.samples):
            raise ValueError(f"state: saved with num_samples={state['num_samples']!r}, this loader has "
                             f"num_samples={len(self.samples)!r}")  # fmt: skip
        if state["config"] != self.config.identity():
            raise ValueError(
                "state: saved by a loader with another configuration; saved "
                f"{state['config']}, this loader has {self.config.identity()}"
            )
        sharding = self.feed.sharding
        if state["world_size"] != sharding.world_size:
            self._resume_elsewhere(state)
            return
        self.close()
        self._iterating = None  # an iterator still alive serves no more: the saved position rules
        self.feed.load_state_dict(state["feed"])
        self.epoch, self.iteration = int(state["epoch"]), int(state["iteration"])
        self.bad_samples = dict(state["bad_samples"])
        if state["rank"] != sharding.rank:
            # Another rank's state (Lightning hands every rank rank 0's): the same shards and
            # position, with draws of this rank's own, never that rank's.
            self._fresh_draws(int(state["generation"]))
            if not self.feed.lockstep:
                self.iteration = 0  # evaluation ranks stand at different batches: the epoch again
            log.info("rank %d resumed rank %d's loader state: epoch %d at batch %d, with new draws",
                     sharding.rank, state["rank"], self.epoch, self.iteration)  # fmt: skip
            return
        self._generation = int(state["generation"])
        self.generator.set_state(state["generator"])
        if state["dali"] is not None:
            self._build(checkpoint=state["dali"])

    def _fresh_draws(self, saved_generation: int) -> None:
        """Augmentation draws no run made before: the next pipeline's seed, and the operators'."""
        self._generation = saved_generation + 1
        rank = self.feed.sharding.rank
        self.generator.manual_seed((self.config.seed * 1009 + rank + 7919 * self._generation) % 2**64)

    def _resume_elsewhere(self, state: dict) -> None:
        """Resume a state saved under another world size (see :meth:`load_state_dict`)."""
        self.close()
        self._iterating = None
        feed = self.feed
        saved = EpochFeed(
            self.samples, feed.batch_size, shuffle=feed.shuffle, drop_last=feed.drop_last, seed=feed.seed,
            sharding=Sharding(0, state["world_size"]), lockstep=feed.lockstep, pad=feed.pad,
            repeats=feed.repeats,
        )  # fmt: skip
        saved.load_state_dict(state["feed"])
        self.feed.exclude(saved.excluded)
        self.bad_samples = dict(state["bad_samples"])
        self._fresh_draws(int(state["generation"]))  # DALI's state was the old ranks'
        epoch, iteration = int(state["epoch"]), int(state["iteration"])
        if iteration == 0 or not self.feed.lockstep or self.feed.repeats > 1:
            # At an epoch boundary nothing is owed; an evaluation epoch (ranks at different batches,
            # no lockstep) or one of repeated samples starts again.
            self.epoch, self.iteration = epoch, 0
        else:
            delivered = saved.delivered(epoch, iteration)
            self.epoch, self.iteration = epoch, self.feed.resume_elsewhere(epoch, delivered)
        log.warning(
            "resumed a loader state saved on %d rank(s) on %d: epoch %d goes on at batch %d of %d with "
            "the samples not yet delivered; its augmentation draws are new", state["world_size"],
            self.feed.sharding.world_size, self.epoch, self.iteration, len(self),
        )  # fmt: skip

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
        """Free the DALI pipeline and the threads now; iterating again starts them again."""
        self._pipeline = self._held = None
        self.reader.close()
        self.reader.restart((self.epoch, self.iteration))

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        operators = f", operators={self.operators}" if self.operators else ""
        return f"Loader({self.num_samples} samples, {self.config}{operators})"


def _with_dataloader_names(options: dict, num_workers: int | None, prefetch_factor: int | None) -> dict:
    """``options`` with DataLoader's ``num_workers`` and ``prefetch_factor`` under dalaug's names."""
    options = dict(options)
    for name, alias, value in (("num_threads", "num_workers", num_workers),
                               ("prefetch", "prefetch_factor", prefetch_factor)):  # fmt: skip
        if value is not None:
            if name in options:
                raise TypeError(f"{alias}: give {alias} or {name}, not both")
            # num_workers=0 (DataLoader: load in the main process) means the default threads here.
            options[name] = value if value or name != "num_threads" else None
    return options


def _configure(dataset: Any, given: dict) -> tuple[LoaderConfig, list[BatchOp]]:
    """The configuration from the options the user ``given`` and, for a dataset whose transform is
    set, what the transform says (the two may not disagree); and the operators the transform means."""
    options = dict(given)
    train, shuffle, drop_last = options.pop("train"), options.pop("shuffle"), options.pop("drop_last")
    batch_size = options.pop("batch_size")
    operators: list[BatchOp] = []
    transform = dataset_transform(dataset) if dataset is not None else None
    if transform is not None:
        translation = translate_transform(transform)
        if train is not None and train != translation.train:
            kind = "a training (RandomResizedCrop)" if translation.train else "an evaluation (Resize)"
            raise ValueError(f"train: {train}, but dataset.transform is {kind} transform")
        train = translation.train
        options = _merge("dataset.transform", options, translation.options)
        operators = translation.operators
    if train is None:
        if shuffle is None:
            raise ValueError(
                "train: say train=True (random crop, flip, policy, shuffle, drop the last "
                "partial batch) or train=False (resize + centre crop, every sample once)"
            )
        train = shuffle
    check_used(train, options)
    config = LoaderConfig(
        batch_size=batch_size, train=train, shuffle=train if shuffle is None else shuffle,
        drop_last=train if drop_last is None else drop_last, **options,
    )  # fmt: skip
    return config, operators


def _merge(source: str, options: dict, implied: dict) -> dict:
    """``options`` with those ``source`` implies; an option both set differently is refused."""
    for name, value in implied.items():
        if name in options and options[name] != value:
            raise ValueError(f"{name}: {options[name]!r} given, but the {source} says {value!r}")
    return {**options, **implied}


def _warn_unsharded() -> None:
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world_size = torch.distributed.get_world_size()
    if world_size > 1:
        log.warning(
            "every one of the %d ranks reads every sample of this dataset, as a DataLoader without a "
            "DistributedSampler does (Lightning and Accelerate add one to torch's DataLoaders only); "
            "give sampler=DistributedSampler(dataset) (or distributed=True) for each rank's share",
            world_size,
        )  # fmt: skip


def _check_operators(operators, num_classes: int) -> list[BatchOp]:
    """The operators as a list, each one's ``num_classes`` (if set) checked against the data set's
    (more classes is fine: a 1000-way head on a subset)."""
    operators = translate_operators(operators)
    for op in leaf_operators(operators):
        declared = getattr(op, "num_classes", None)
        if declared is not None and declared < num_classes:
            raise ValueError(
                f"operators: {op!r} has num_classes={declared}, but the data set has {num_classes} classes"
            )
    return operators


def _target_classes(operators: Sequence[BatchOp], num_classes: int) -> int:
    """The width of the soft targets: the operators' ``num_classes`` where they say it, else the
    data set's classes."""
    declared = {op.num_classes for op in leaf_operators(operators) if getattr(op, "num_classes", None)}
    if len(declared) > 1:
        raise ValueError(
            f"operators: their num_classes differ ({sorted(declared)}); the soft targets have one width"
        )
    return declared.pop() if declared else num_classes


def _on(device: torch.device):
    """DALI hands batches to torch on the current CUDA device of the calling thread: make it ours."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _sharding() -> Sharding:
    """This rank's place: from the process group, or (a loader built before
    ``init_process_group``) from the variables torchrun sets, so that no rank reads every sample."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return Sharding(torch.distributed.get_rank(), torch.distributed.get_world_size())
    try:
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        rank = int(os.environ["RANK"]) if world_size > 1 else 0
    except (KeyError, ValueError):
        raise ValueError(
            f"distributed: WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} and RANK={os.environ.get('RANK')!r} "
            "are not a rank of a world (torchrun sets both)"
        ) from None
    return Sharding(rank, world_size)


# Where launchers say how many ranks share this node: torchrun, SLURM (srun --ntasks-per-node, or
# SLURM_TASKS_PER_NODE's "4(x2)" for every srun), Open MPI's mpirun.
LOCAL_WORLD_SIZE_VARIABLES = ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE",
                              "OMPI_COMM_WORLD_LOCAL_SIZE")  # fmt: skip


def _local_world_size(sharding: Sharding) -> int:
    """The ranks on this node, which share its cores; the whole world where no launcher says."""
    for name in LOCAL_WORLD_SIZE_VARIABLES:
        count = _tasks_on_this_node(os.environ.get(name, ""), os.environ.get("SLURM_NODEID", "0"))
        if count:
            return min(count, sharding.world_size)
    return sharding.world_size


def _tasks_on_this_node(value: str, node_id: str) -> int | None:
    """A count as launchers write it: "4", or SLURM's per-node list "4(x2),3" (4 tasks on each of
    the first two nodes, 3 on the third) read at ``node_id``; None: unset or unreadable."""
    counts: list[int] = []
    for part in value.strip().split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:\(x(\d+)\))?\s*", part)
        if match is None:
            return None
        counts += [int(match[1])] * int(match[2] or 1)
    node = int(node_id) if node_id.strip().isdigit() else 0
    return counts[min(node, len(counts) - 1)] or None


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DecodeError", "Loader"]

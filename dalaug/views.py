"""What DataLoader scripts read off ``loader.dataset`` and ``loader.sampler``, over a Samples table.

Training scripts written for torchvision's ImageFolder and DistributedSampler ask for
``len(loader.dataset)``, ``.classes``, ``.class_to_idx``, ``.samples``/``.targets``, and call
``loader.sampler.set_epoch(epoch)``. These views answer from the loader's own table and order;
they hold no copy of the data set (``.samples`` and ``.targets`` are built when asked).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.utils.data import RandomSampler, SequentialSampler

from dalaug.reading.sources import Samples

if TYPE_CHECKING:
    from dalaug.loader import Loader


class DatasetView:
    """A read-only ImageFolder face of a :class:`~dalaug.reading.sources.Samples` table."""

    def __init__(self, samples: Samples) -> None:
        self._samples = samples

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def classes(self) -> list[str]:
        return list(self._samples.classes)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self._samples.classes)}

    @property
    def samples(self) -> list[tuple[str, int]]:
        """``(sample name, label)`` pairs, as ImageFolder's ``samples`` (and ``imgs``)."""
        table = self._samples
        return [(table.name(i), int(label)) for i, label in enumerate(table.labels)]

    imgs = samples

    @property
    def targets(self) -> list[int]:
        return self._samples.labels.tolist()

    def __getitem__(self, index: int):
        raise TypeError(
            "a dalaug loader's dataset is decoded inside its DALI pipeline: iterate the loader for "
            "images; dataset.samples[i] gives the file and label"
        )

    def __repr__(self) -> str:
        return f"DatasetView({len(self)} samples, {len(self._samples.classes)} classes)"


class SamplerView:
    """This rank's shard as a ``DistributedSampler`` shows it; ``set_epoch`` moves ``owner``
    (the loader, or the phased loader of a Schedule that holds it).

    ``SamplerView(loader)`` is a :class:`ShuffledSamplerView` (a ``RandomSampler``) when the loader
    shuffles and a :class:`SequentialSamplerView` (a ``SequentialSampler``) when it does not: code
    that asks ``isinstance(loader.sampler, RandomSampler)`` to tell a shuffled loader from an
    evaluation one (Lightning's ``_is_dataloader_shuffled`` and its ``overfit_batches`` check) gets
    the truth. Nothing of those classes runs: length, order and epoch are the loader's.
    """

    def __new__(cls, *args, **kwargs):
        if cls is SamplerView:  # the kind follows the loader's order
            loader = args[0] if args else kwargs["loader"]
            cls = ShuffledSamplerView if loader.feed.shuffle else SequentialSamplerView
        return object.__new__(cls)

    def __init__(self, loader: Loader, owner=None) -> None:
        self._loader = loader
        self._owner = owner or loader

    def __len__(self) -> int:
        """Samples this rank reads per epoch."""
        return self._loader.feed.num_samples()

    def __iter__(self):
        return iter(self._loader.feed.shard(self._loader.epoch).tolist())

    @property
    def num_samples(self) -> int:
        """Samples this rank reads per epoch (DistributedSampler's and RandomSampler's name)."""
        return len(self)

    @property
    def data_source(self):
        """The whole data set (torch samplers' name for it): the loader's ``dataset``."""
        return self._loader.dataset

    @property
    def num_replicas(self) -> int:
        return self._loader.feed.sharding.world_size

    @property
    def rank(self) -> int:
        return self._loader.feed.sharding.rank

    @property
    def shuffle(self) -> bool:
        return self._loader.feed.shuffle

    @property
    def epoch(self) -> int:
        return self._loader.epoch

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} samples of rank {self.rank} of {self.num_replicas}, "
                f"epoch {self.epoch})")  # fmt: skip


class ShuffledSamplerView(SamplerView, RandomSampler):
    """The :class:`SamplerView` of a shuffling loader: a new order of its shard every epoch."""

    replacement = False  # RandomSampler's attributes, for code that reads them (Accelerate's
    generator = None  # prepare_data_loader); the order is the loader's, of its seed and the epoch

    @property
    def _num_samples(self) -> int:
        return len(self)


class SequentialSamplerView(SamplerView, SequentialSampler):
    """The :class:`SamplerView` of a loader that does not shuffle: its shard in the data set's order."""


class BatchSamplerView:
    """This rank's batches as a ``BatchSampler`` shows them: each a list of sample ids of the epoch
    served next; ``sampler`` is the :class:`SamplerView` (timm's and Lightning's code read both)."""

    def __init__(self, loader: Loader, owner=None) -> None:
        self._loader = loader
        self.sampler = SamplerView(loader, owner)

    @property
    def batch_size(self) -> int:
        return self._loader.batch_size

    @property
    def drop_last(self) -> bool:
        return self._loader.drop_last

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self):
        feed, epoch = self._loader.feed, self._loader.epoch
        return (feed.batch_ids(epoch, i).tolist() for i in range(feed.num_batches()))

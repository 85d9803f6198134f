"""What DataLoader scripts read off ``loader.dataset`` and ``loader.sampler``, over a Samples table.

Training scripts written for torchvision's ImageFolder and DistributedSampler ask for
``len(loader.dataset)``, ``.classes``, ``.class_to_idx``, ``.samples``/``.targets``, and call
``loader.sampler.set_epoch(epoch)``. These views answer from the loader's own table and order;
they hold no copy of the data set (``.samples`` and ``.targets`` are built when asked).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dalaug.sources import Samples

if TYPE_CHECKING:
    from dalaug.loader import Loader


class DatasetView:
    """A read-only ImageFolder face of a :class:`~dalaug.sources.Samples` table."""

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
    (the loader, or the phased loader of a Schedule that holds it)."""

    def __init__(self, loader: Loader, owner=None) -> None:
        self._loader = loader
        self._owner = owner or loader

    def __len__(self) -> int:
        """Samples this rank reads per epoch."""
        return self._loader.feed.num_samples()

    def __iter__(self):
        return iter(self._loader.feed.shard(self._loader.epoch).tolist())

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

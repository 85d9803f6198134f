"""The DALI graphs: one description (:class:`GraphSpec`) builds the train, clean and eval pipelines
for the CPU or the GPU. The device is a parameter, not a second code path.

train: read -> decode with random-resized-crop (ROI decode) -> resize -> policy -> flip+normalize
clean: the train graph with ``policy=None`` (the refinement phase of He et al.)
eval:  read -> decode -> resize shorter side -> centre crop + normalize
"""

from __future__ import annotations

from dataclasses import dataclass

from nvidia.dali import fn, pipeline_def, types

from dalaug.policies import PolicyLike
from dalaug.sources import (
    WEBDATASET_IMAGE_EXT,
    WEBDATASET_LABEL_EXT,
    FileSource,
    Source,
    WebDatasetSource,
)

READER_NAME = "reader"
# WebDataset class indices arrive as ASCII bytes; padded to this many bytes they batch as a tensor.
LABEL_BYTES = 12


@dataclass(frozen=True)
class GraphSpec:
    """What a pipeline does to each image. Mean and std are on the 0-255 scale."""

    train: bool
    crop: int
    resize: int
    scale: tuple[float, float]
    ratio: tuple[float, float]
    flip: bool
    policy: PolicyLike | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    half: bool  # emit float16 from DALI (bf16 is cast in torch: DALI has no bf16)
    roi_decode: bool  # decode only the crop window; False: full decode + random_resized_crop


@dataclass(frozen=True)
class Sharding:
    shard_id: int = 0
    num_shards: int = 1


def build_pipeline(
    spec: GraphSpec,
    source: Source,
    *,
    batch_size: int,
    device_id: int | None,
    num_threads: int,
    seed: int,
    reader_seed: int,
    sharding: Sharding,
    prefetch: int = 2,
    checkpoint: str | None = None,
):
    """Build (not yet run) the DALI pipeline for ``spec`` on the GPU ``device_id`` or the CPU (None).

    ``seed`` drives augmentation and differs per rank; ``reader_seed`` drives the shuffle and must
    be equal on every rank so that the shards of one epoch partition the data set.
    """
    pipe = _graph(
        spec,
        source,
        "cpu" if device_id is None else "mixed",
        seed,
        reader_seed,
        sharding,
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        seed=seed,
        prefetch_queue_depth=prefetch,
        enable_checkpointing=True,
        checkpoint=checkpoint,
    )
    return pipe


@pipeline_def(enable_conditionals=True)
def _graph(spec: GraphSpec, source: Source, decode_device: str, aug_seed, reader_seed, sharding):
    encoded, labels = _read(source, spec.train, reader_seed, sharding)
    if spec.train:
        if spec.roi_decode:
            images = fn.decoders.image_random_crop(
                encoded, device=decode_device, output_type=types.RGB,
                random_area=spec.scale, random_aspect_ratio=spec.ratio, num_attempts=10,
            )  # fmt: skip
            images = fn.resize(images, size=(spec.crop, spec.crop))
        else:
            images = fn.decoders.image(encoded, device=decode_device, output_type=types.RGB)
            images = fn.random_resized_crop(
                images, size=(spec.crop, spec.crop), random_area=spec.scale,
                random_aspect_ratio=spec.ratio, num_attempts=10,
            )  # fmt: skip
        if spec.policy is not None:
            images = spec.policy.apply(images, spec.crop, aug_seed)
        mirror = fn.random.coin_flip(probability=0.5) if spec.flip else False
    else:
        images = fn.decoders.image(encoded, device=decode_device, output_type=types.RGB)
        images = fn.resize(images, resize_shorter=spec.resize)
        mirror = False
    images = fn.crop_mirror_normalize(
        images,
        crop=(spec.crop, spec.crop),
        mean=list(spec.mean),
        std=list(spec.std),
        mirror=mirror,
        dtype=types.FLOAT16 if spec.half else types.FLOAT,
        output_layout="CHW",
    )
    if decode_device == "mixed":
        labels = labels.gpu()
    return images, labels


def _read(source: Source, train: bool, reader_seed: int, sharding: Sharding):
    # pad_last_batch: every shard reads the same number of samples, so DDP ranks get the same
    # number of batches, and epochs never read ahead into the next one (ANCHORS.md).
    # shuffle_after_epoch: a full permutation of the data set per epoch, identical across ranks.
    common = dict(
        name=READER_NAME,
        shard_id=sharding.shard_id,
        num_shards=sharding.num_shards,
        pad_last_batch=True,
        seed=reader_seed,
    )
    if isinstance(source, FileSource):
        return fn.readers.file(
            files=list(source.files),
            labels=list(source.labels),
            shuffle_after_epoch=train,
            **common,
        )
    assert isinstance(source, WebDatasetSource)  # resolve_source returns one of the two
    encoded, label_text = fn.readers.webdataset(
        paths=list(source.shards),
        ext=[WEBDATASET_IMAGE_EXT, WEBDATASET_LABEL_EXT],
        missing_component_behavior="error",
        random_shuffle=train,
        **common,
    )
    return encoded, fn.pad(label_text, shape=(LABEL_BYTES,), fill_value=0)

"""The DALI graphs: one description (:class:`GraphSpec`) builds the train, clean and eval pipelines
for the CPU or the GPU. The device is a parameter, not a second code path.

train: read -> decode with random-resized-crop (ROI decode) -> resize -> policy -> flip+normalize
clean: the train graph with ``policy=None`` (the refinement phase of He et al.)
eval:  read -> decode -> resize shorter side -> centre crop + normalize
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from nvidia.dali import fn, pipeline_def, types

from dalaug.feed import EpochFeed
from dalaug.policies import PolicyLike


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


def build_pipeline(
    spec: GraphSpec,
    feed: EpochFeed,
    *,
    device_id: int | None,
    num_threads: int,
    seed: int,
    prefetch: int = 2,
    checkpoint: str | None = None,
):
    """Build the DALI pipeline for ``spec`` on the GPU ``device_id`` or the CPU (None).

    Outputs ``images`` (NCHW), ``labels`` (int32) and ``ids`` (the sample ids, int64).
    """
    with warnings.catch_warnings():
        # torchvision's ImageNet policy has one op at probability 0 (kept: it is the paper's).
        warnings.filterwarnings(
            "ignore", message=r".*used with probability 0", category=UserWarning
        )
        pipe = _graph(
            spec,
            feed,
            "cpu" if device_id is None else "mixed",
            batch_size=feed.batch_size,
            num_threads=num_threads,
            device_id=device_id,
            seed=seed,
            prefetch_queue_depth=prefetch,
            enable_checkpointing=True,
            checkpoint=checkpoint,
        )
        pipe.build()
    return pipe


@pipeline_def(enable_conditionals=True)
def _graph(spec: GraphSpec, feed: EpochFeed, decode_device: str):
    encoded, labels, ids = fn.external_source(
        source=feed, num_outputs=3, batch=True, batch_info=True,
        dtype=[types.UINT8, types.INT32, types.INT64],
    )  # fmt: skip
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
            images = spec.policy.apply(images, spec.crop)
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
    return images, labels, ids

"""The DALI graphs: one description (:class:`GraphSpec`) builds the train, clean and eval pipelines
for the CPU or the GPU. The device is a parameter, not a second code path.

train: bytes -> decode with random-resized-crop (ROI decode) -> resize -> policy -> flip+normalize
clean: the train graph with ``policy=None`` (the refinement phase of He et al.)
eval:  bytes -> decode -> resize shorter side -> centre crop + normalize (as torchvision places it)

The bytes come from :class:`~dalaug.reading.reader.BatchReader` (read and checked by worker processes); the
graph emits the layout and dtype the model takes (HWC is channels_last NCHW without a copy) and the
labels on the pipeline's device, so the loader hands both over with no further pass and no host sync.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from nvidia.dali import fn, pipeline_def, types

from dalaug.geometry import eval_resize_crop, interpolation_node
from dalaug.policies import PolicyLike

# nvJPEG hints from DALI's ResNet-50 example (docs/examples/use_cases/pytorch/resnet50): padding
# and a preallocation sized for ImageNet's largest images avoid reallocation stalls in the first
# epochs; hw_decoder_load hands a share of the JPEGs to the hardware decoder of A100/H100/H200
# (ignored where there is none).
MIXED_DECODER_HINTS = dict(
    device_memory_padding=211025920,
    host_memory_padding=140544512,
    hw_decoder_load=0.65,
)


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
    channels_last: bool  # emit HWC: viewed as NCHW it is torch's channels_last
    color_jitter: float  # brightness, contrast and saturation factors in [1 - j, 1 + j]
    interpolation: object  # a DALI interp type for the resize, or a tuple to draw one from per image
    roi_decode: bool  # decode only the crop window; False: full decode + random_resized_crop


def build_pipeline(
    spec: GraphSpec,
    source,
    *,
    batch_size: int,
    device_id: int | None,
    num_threads: int,
    seed: int,
    prefetch: int = 2,
    checkpoint: str | None = None,
):
    """Build the DALI pipeline for ``spec`` on the GPU ``device_id`` or the CPU (None).

    ``source`` is the external_source callback, a :class:`~dalaug.reading.reader.BatchReader`
    (see :func:`encoded_samples`).
    Outputs ``images`` (NCHW, or NHWC when ``channels_last``) and ``labels`` (int64, on the device).
    """
    with warnings.catch_warnings():
        # torchvision's ImageNet policy has one op at probability 0 (kept: it is the paper's).
        warnings.filterwarnings("ignore", message=r".*used with probability 0", category=UserWarning)
        pipe = _graph(
            spec,
            source,
            device_id is not None,
            batch_size=batch_size,
            num_threads=num_threads,
            device_id=device_id,
            seed=seed,
            prefetch_queue_depth=prefetch,
            enable_checkpointing=True,
            checkpoint=checkpoint,
        )
        pipe.build()
    return pipe


def encoded_samples(source):
    """The graph's input: each sample's encoded bytes and its label, from ``source``, a
    :class:`~dalaug.reading.reader.BatchReader`.

    The reader hands over each batch as two things: the one buffer its samples were read into
    (every sample of the batch refers to it whole) and a row per sample of (start, length, label).
    The samples are cut out here, in DALI's threads: a view per sample would cost the training
    process Python work per sample, and each input fed costs it ~75 µs a batch. ``no_copy``: the
    reader keeps what it handed over until the loader has taken the batch out, so DALI reads it
    where it is.
    """
    whole, rows = fn.external_source(
        source=source, num_outputs=2, batch=True, batch_info=True, no_copy=True,
        dtype=[types.UINT8, types.INT64],
    )  # fmt: skip
    return fn.slice(whole, rows[0:1], rows[1:2], axes=[0]), rows[2]


@pipeline_def(enable_conditionals=True)
def _graph(spec: GraphSpec, source, on_gpu: bool):
    encoded, labels = encoded_samples(source)
    decoder = dict(device="mixed", **MIXED_DECODER_HINTS) if on_gpu else dict(device="cpu")
    if spec.train:
        if spec.roi_decode:
            images = fn.decoders.image_random_crop(
                encoded, output_type=types.RGB, random_area=spec.scale, random_aspect_ratio=spec.ratio,
                num_attempts=10, **decoder,
            )  # fmt: skip
            interp = interpolation_node(spec.interpolation)
            images = fn.resize(images, size=(spec.crop, spec.crop), interp_type=interp)
        else:
            images = fn.decoders.image(encoded, output_type=types.RGB, **decoder)
            images = fn.random_resized_crop(
                images, size=(spec.crop, spec.crop), random_area=spec.scale,
                random_aspect_ratio=spec.ratio, num_attempts=10,
                interp_type=interpolation_node(spec.interpolation),
            )  # fmt: skip
        if spec.color_jitter:
            # torchvision's ColorJitter(j, j, j): each factor uniform in [1 - j, 1 + j]; DALI
            # applies the three in one fixed order where torchvision shuffles them per image.
            factor = dict(range=[1.0 - spec.color_jitter, 1.0 + spec.color_jitter])
            images = fn.color_twist(
                images, brightness=fn.random.uniform(**factor), contrast=fn.random.uniform(**factor),
                saturation=fn.random.uniform(**factor),
            )  # fmt: skip
        if spec.policy is not None:
            images = spec.policy.apply(images, spec.crop)
        mirror = fn.random.coin_flip(probability=0.5) if spec.flip else False
    else:
        images = fn.decoders.image(encoded, output_type=types.RGB, **decoder)
        images = eval_resize_crop(images, spec.resize, spec.crop, spec.interpolation)
        mirror = False
    images = fn.crop_mirror_normalize(
        images,
        crop=(spec.crop, spec.crop),
        mean=list(spec.mean),
        std=list(spec.std),
        mirror=mirror,
        dtype=types.FLOAT16 if spec.half else types.FLOAT,
        output_layout="HWC" if spec.channels_last else "CHW",
    )
    labels = fn.cast(labels, dtype=types.INT64)
    return images, labels.gpu() if on_gpu else labels

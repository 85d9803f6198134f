"""Which samples DALI cannot decode, and why.

DALI aborts a whole pipeline on one undecodable sample and leaves the pipeline dead (DALI issues
#3913, #1435, #5489). To name the culprit we decode the suspects one at a time with the same DALI
decoder the training graph uses, so "fails here" means "fails there".
"""

from __future__ import annotations

from collections.abc import Iterable

from nvidia.dali import fn, pipeline_def, types

from dalaug.sources import Samples


@pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
def _decode_one():
    encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
    return fn.decoders.image(encoded, output_type=types.RGB)


def decode_failures(samples: Samples, ids: Iterable[int]) -> dict[int, str]:
    """Decode each sample in ``ids``; return ``{id: reason}`` for those that fail."""
    failures: dict[int, str] = {}
    pipe = None
    for sample_id in ids:
        sample_id = int(sample_id)
        try:
            data = samples.read(sample_id)
        except OSError as error:
            failures[sample_id] = f"cannot read: {error.strerror or error}"
            continue
        if data.size == 0:
            failures[sample_id] = "empty file (0 bytes)"
            continue
        if pipe is None:
            pipe = _decode_one()
            pipe.build()
        try:
            pipe.feed_input("encoded", [data])
            pipe.run()
        except RuntimeError as error:
            failures[sample_id] = _first_line(str(error))
            pipe = None  # a DALI pipeline is dead after an error
    return failures


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    useful = [line for line in lines if "rror" in line and "Current pipeline" not in line]
    return (useful or lines or ["decode failed"])[-1][:300]

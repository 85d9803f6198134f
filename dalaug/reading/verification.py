"""Which samples DALI cannot decode, and why: for the loader's bad-file handling and ``dalaug verify``.

DALI aborts a whole pipeline on one undecodable sample and leaves the pipeline dead (DALI issues
#3913, #1435, #5489). To name the culprit we decode the suspects one at a time with the same DALI
decoder the training graph uses, so "fails here" means "fails there". DALI's own message says
little ("nvImageCodec failure: '#4'"), so the reason also names what the bytes are, read from their
header: a GIF (DALI 2.4 has no GIF decoder), a truncated JPEG, or no image at all.

What DALI 2.4 decodes on the CPU, whatever the file is named (checked by ``tests/test_verify.py``):
JPEG (RGB, grayscale, CMYK; EXIF orientation applied), PNG (8- and 16-bit, palette, alpha), WebP,
BMP, TIFF, and sizes from 1x1 to 12000x9000; all come out as 8-bit RGB. It fails on GIF, truncated
or corrupt data, non-images and empty files.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nvidia.dali import fn, pipeline_def, types

from dalaug.reading.integrity import check_encoded, sniff
from dalaug.reading.sources import Samples, resolve_source

# What each extension should hold, to note files whose name does not match their bytes.
EXTENSION_FORMATS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF",
    ".tiff": "TIFF", ".webp": "WebP", ".ppm": "PNM", ".pgm": "PNM",
}  # fmt: skip
DEFAULT_REPORT = "dalaug-verify.json"
_CHUNK = 32  # samples per task: large enough to amortize a pipeline build, small for the progress bar


@pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
def _decode_one():
    encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
    return fn.decoders.image(encoded, output_type=types.RGB)


def decode_failures(samples: Samples, ids: Iterable[int]) -> dict[int, str]:
    """Decode each sample in ``ids`` with DALI; return ``{id: reason}`` for those that fail.

    Args:
        samples: the data set.
        ids: sample ids to try.

    Returns:
        The failing ids with a one-line reason each; an empty dict when all decode.

    Example:
        >>> decode_failures(resolve_source("data/train"), range(10))  # doctest: +SKIP
        {3: 'JPEG data that does not decode (truncated or corrupt): nvImageCodec failure: #3'}
    """
    return _check(samples, ids)[0]


def _check(samples: Samples, ids: Iterable[int]) -> tuple[dict[int, str], dict[int, str]]:
    """(failures, formats): why each failing id fails, and the format of every id read."""
    failures: dict[int, str] = {}
    formats: dict[int, str] = {}
    pipe = None
    for sample_id in map(int, ids):
        try:
            data = samples.read(sample_id)
        except OSError as error:
            failures[sample_id] = _unreadable(samples.paths[sample_id], error)
            continue
        if data.size == 0:
            failures[sample_id] = "empty file (0 bytes)"
            continue
        formats[sample_id] = kind = sniff(data)
        checked = check_encoded(data)
        if checked is not None:  # what the loader says when it leaves the sample out; DALI never sees it
            failures[sample_id] = _reason(kind, data, checked)
            continue
        if pipe is None:
            pipe = _decode_one()
            pipe.build()
        try:
            pipe.feed_input("encoded", [data])
            pipe.run()
        except RuntimeError as error:
            failures[sample_id] = _reason(kind, data, f"DALI: {_dali_message(str(error))}")
            pipe = None  # a DALI pipeline is dead after an error
    return failures, formats


def _unreadable(path: str, error: OSError) -> str:
    if os.path.islink(path) and not os.path.exists(path):
        return f"broken symbolic link to {os.readlink(path)!r}"
    return f"cannot read: {error.strerror or error}"


def _reason(kind: str, data: np.ndarray, detail: str) -> str:
    """Why a sample fails, for a person: what its bytes are, then ``detail`` (the loader's check,
    :func:`~dalaug.reading.integrity.check_encoded`, or DALI's message)."""
    if kind == "GIF":
        return "GIF image: DALI has no GIF decoder, convert it to PNG or JPEG"
    if kind == "unknown":
        return f"not an image: unrecognized header {bytes(data[:8]).hex(' ')}"
    return f"{kind} data that does not decode: {detail}"


def _dali_message(message: str) -> str:
    """The line of a DALI error that says what went wrong (it follows 'encountered:')."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for before, line in zip(lines, lines[1:], strict=False):
        if before == "encountered:":
            return line.replace("'", "")[:200]
    useful = [line for line in lines if "rror" in line and "Current pipeline" not in line]
    return (useful or lines or ["decode failed"])[-1][:200]


@dataclass
class VerifyReport:
    """The outcome of :func:`verify`: what fails and why, what decodes but is misnamed."""

    source: str
    num_samples: int
    failures: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "num_samples": self.num_samples,
            "num_failed": len(self.failures),
            "failures": [{"sample": k, "reason": v} for k, v in sorted(self.failures.items())],
            "notes": [{"sample": k, "note": v} for k, v in sorted(self.notes.items())],
            "formats": dict(sorted(self.formats.items())),
            "seconds": round(self.seconds, 3),
        }

    def write(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON (atomically: a reader never sees half a report)."""
        path = check_report_path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
            os.replace(temporary, path)
        except OSError:
            temporary.unlink(missing_ok=True)  # a failed write (disk full) leaves nothing behind
            raise
        return path


def check_report_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path if a report can be written there, else raise ValueError naming it.

    ``dalaug verify`` checks before it decodes: a data set can take hours, and a report path that
    was mistyped should not cost them.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"report: {path} is a directory; name a file, e.g. {path / DEFAULT_REPORT}")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"report: cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"report: cannot write {path}: folder {folder} is not writable")
    return path


def verify(
    source: str | os.PathLike | Sequence | Samples,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> VerifyReport:
    """Decode every sample of a data set with DALI, in parallel, and report the ones that fail.

    Args:
        source: anything :class:`~dalaug.Loader` accepts (ImageFolder, shards, pairs).
        workers: decoding threads (default: the cores this process may use). DALI releases the
            GIL while it decodes, so threads scale without a process pool.
        progress: show a tqdm progress bar on stderr.

    Returns:
        A :class:`VerifyReport`; ``report.ok`` is False when any sample fails.

    Example:
        >>> report = verify("data/train", progress=True)  # doctest: +SKIP
        >>> report.write("verify.json")  # doctest: +SKIP
    """
    if workers is None:
        workers = len(os.sched_getaffinity(0))
    if not isinstance(workers, int) or isinstance(workers, bool) or workers <= 0:
        raise ValueError(f"workers: expected a positive int, got {workers!r}")
    start = time.perf_counter()
    samples = resolve_source(source)
    report = VerifyReport(str(source), len(samples) + len(samples.unreadable))
    report.failures.update(dict(samples.unreadable))
    chunks = [range(i, min(i + _CHUNK, len(samples))) for i in range(0, len(samples), _CHUNK)]
    formats: Counter[str] = Counter()

    from tqdm import tqdm

    with (
        tqdm(total=len(samples), unit="img", disable=not progress, desc="verify") as bar,
        ThreadPoolExecutor(workers, thread_name_prefix="dalaug-verify") as pool,
    ):
        tasks = {pool.submit(_check, samples, chunk): len(chunk) for chunk in chunks}
        for future in as_completed(tasks):
            failed, kinds = future.result()
            for i, reason in failed.items():
                report.failures[samples.name(i)] = reason
            for i, kind in kinds.items():
                formats[kind] += 1
                note = _misnamed(samples, i, kind)
                if note and i not in failed:
                    report.notes[samples.name(i)] = note
            bar.update(tasks[future])
    report.formats = dict(formats)
    report.seconds = time.perf_counter() - start
    return report


def _misnamed(samples: Samples, index: int, kind: str) -> str | None:
    if samples.offsets[index] >= 0:
        return None  # a WebDataset member: its extension was already used to find it
    extension = os.path.splitext(samples.paths[index])[1].lower()
    expected = EXTENSION_FORMATS.get(extension)
    if expected is None or expected == kind:
        return None
    return f"{kind} data named {extension} (decodes; rename it to avoid surprises in other tools)"

"""Files that go bad while a run is going (issue 18): no bad file ever kills the process.

DALI 2.2-2.4's image decoder crashes the process (a use after return in its header parsing, from 32
samples a batch) on bytes it cannot parse, whenever they arrive; the loader's reader checks every
file's bytes before DALI sees them. Each case runs in a fresh process, several loaders in turn, so a
crash in one run of three would fail here with a probability above 99%; a process ended by a signal
fails the test. benchmarks/bad_files.py counts 20 runs of each case.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bad_files_worker import FILE_MODES, SHARD_MODES, write_shards

HERE = Path(__file__).parent
RUNS = 3


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    from dalaug.datasets import write_photo_folder

    return write_photo_folder(tmp_path_factory.mktemp("bad-files"), 128, num_classes=4, short_side=(40, 64))


@pytest.fixture(scope="module")
def shard_folder(jpeg_folder, tmp_path_factory):
    """The same photos as four WebDataset shards."""
    return write_shards(jpeg_folder, tmp_path_factory.mktemp("bad-shards"))


def run_worker(data: Path, mode: str, moment: str, device: str = "cpu") -> subprocess.CompletedProcess:
    command = [sys.executable, str(HERE / "bad_files_worker.py"), str(data), mode, moment, device, str(RUNS)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=HERE.parent)
    if result.returncode < 0:
        pytest.fail(f"killed by {signal.Signals(-result.returncode).name}: {result.stderr[-2000:]}")
    return result


@pytest.mark.parametrize("moment", ["mid", "between"])
@pytest.mark.parametrize("mode", FILE_MODES)
def test_a_file_going_bad_is_named_left_out_and_never_kills_the_process(jpeg_folder, mode, moment):
    result = run_worker(jpeg_folder, mode, moment)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.parametrize("moment", ["mid", "between"])
@pytest.mark.parametrize("mode", SHARD_MODES)
def test_a_shard_changing_under_the_loader_never_kills_the_process(shard_folder, mode, moment):
    # Rewritten or cut, a shard's samples may all be lost: going on or stopping with an error that
    # names them are both fine; dying is not.
    result = run_worker(shard_folder, mode, moment)
    assert result.returncode in (0, 3), result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("moment", ["mid", "between"])
@pytest.mark.parametrize("mode", FILE_MODES)
def test_the_gpu_decoder_never_sees_a_bad_file(jpeg_folder, mode, moment):
    result = run_worker(jpeg_folder, mode, moment, "cuda")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

"""Files that go bad while a run is going (issue 18): no bad file ever kills the process.

DALI 2.2-2.4's image decoder crashes the process (a use after return in its header parsing, from 32
samples a batch) on bytes it cannot parse, whenever they arrive; the loader's reader checks every
file's bytes before DALI sees them. The cases run in one process of their own, several loaders each
in turn, so a crash in one run of three would fail here with a probability above 99%; a process
ended by a signal fails the case it was in (and the cases after it, not run).
benchmarks/bad_files.py counts 20 runs of each case.
"""

from __future__ import annotations

import re
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


MOMENTS = ("mid", "between")


def run_cases(data: Path, modes: tuple[str, ...], device: str = "cpu") -> dict[tuple, tuple[int, str]]:
    """Every (mode, moment) case in one worker process (a process start costs ten times a run):
    {case: (its exit code, its output)}. A case the process died in reads as that signal; the
    cases after it as not run."""
    worker = str(HERE / "bad_files_worker.py")
    command = [sys.executable, worker, str(data), ",".join(modes), ",".join(MOMENTS), device, str(RUNS)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=HERE.parent)
    cases, case, lines = {}, None, []
    for line in result.stdout.splitlines():
        started = re.fullmatch(r"case (\S+) (\S+): started", line)
        ended = re.fullmatch(r"case (\S+) (\S+): exit (\d+)", line)
        if started:
            case, lines = (started[1], started[2]), []
        elif ended:
            cases[case] = (int(ended[3]), "\n".join(lines)[-2000:])
            case = None
        else:
            lines.append(line)
    if case is not None:  # it died in this case
        code = result.returncode
        death = signal.Signals(-code).name if code < 0 else f"exit {code}"
        last = "\n".join(lines)[-1000:]
        cases[case] = (-1, f"the process died ({death}):\n{last}\n{result.stderr[-2000:]}")
    return cases


def outcome(cases: dict, mode: str, moment: str) -> tuple[int, str]:
    if (mode, moment) not in cases:
        died = [case for case, (code, _) in cases.items() if code < 0]
        pytest.fail(f"not run: the worker died in an earlier case {died}")
    return cases[mode, moment]


@pytest.fixture(scope="module")
def file_cases(jpeg_folder):
    return run_cases(jpeg_folder, FILE_MODES)


@pytest.fixture(scope="module")
def shard_cases(shard_folder):
    return run_cases(shard_folder, SHARD_MODES)


@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("mode", FILE_MODES)
def test_a_file_going_bad_is_named_left_out_and_never_kills_the_process(file_cases, mode, moment):
    code, output = outcome(file_cases, mode, moment)
    assert code == 0, output


@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("mode", SHARD_MODES)
def test_a_shard_changing_under_the_loader_never_kills_the_process(shard_cases, mode, moment):
    # Rewritten or cut, a shard's samples may all be lost: going on or stopping with an error that
    # names them are both fine; dying is not.
    code, output = outcome(shard_cases, mode, moment)
    assert code in (0, 3), output


@pytest.fixture(scope="module")
def gpu_file_cases(jpeg_folder):
    return run_cases(jpeg_folder, FILE_MODES, "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("mode", FILE_MODES)
def test_the_gpu_decoder_never_sees_a_bad_file(gpu_file_cases, mode, moment):
    code, output = outcome(gpu_file_cases, mode, moment)
    assert code == 0, output

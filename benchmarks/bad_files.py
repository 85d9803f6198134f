"""Count processes killed by files going bad under a running loader (issue 18's target: 0 of 20).

    python -m benchmarks.bad_files [--runs 20] [--device cpu|cuda] [--jobs 2]

Each run is a fresh process (tests/bad_files_worker.py, one loader): three files deleted,
truncated, overwritten or made unreadable, or a WebDataset shard cut or rewritten, in the middle
of the first epoch or between the first two. Writes section ``bad-files`` of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from benchmarks.report import machine, markdown_table, write_section

WORKER = Path(__file__).resolve().parent.parent / "tests" / "bad_files_worker.py"


def outcome(command: list[str]) -> str:
    returncode = subprocess.run(command, capture_output=True, timeout=600).returncode
    return {0: "ok", 3: "stopped, named"}.get(returncode, "signal" if returncode < 0 else "check failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(WORKER.parent))
    from bad_files_worker import FILE_MODES, SHARD_MODES, write_shards

    from dalaug.datasets import write_photo_folder

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_photo_folder(Path(tmp) / "jpegs", 128, num_classes=4, short_side=(40, 64))
        (Path(tmp) / "shards").mkdir()
        shards = write_shards(Path(folder), Path(tmp) / "shards")
        cases = [(mode, moment) for mode in (*FILE_MODES, *SHARD_MODES) for moment in ("mid", "between")]
        commands = {
            case: [
                sys.executable,
                str(WORKER),
                str(shards if case[0] in SHARD_MODES else folder),
                *case,
                args.device,
                "1",
            ]  # fmt: skip
            for case in cases
        }
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = {
                case: [pool.submit(outcome, commands[case]) for _ in range(args.runs)] for case in cases
            }
            counts = {case: Counter(f.result() for f in fs) for case, fs in futures.items()}
    rows = [[mode, moment, args.runs, c["ok"], c["stopped, named"], c["check failed"], f"**{c['signal']}**"]
            for (mode, moment), c in counts.items()]  # fmt: skip
    table = markdown_table(
        ["mode", "moment", "runs", "ok", "stopped with a named error", "check failed", "killed by a signal"],
        rows,
    )
    print(table)
    killed = sum(c["signal"] for c in counts.values())
    write_section(
        "bad-files",
        f"## Files going bad under a running loader\n\n`python -m benchmarks.bad_files --runs {args.runs} "
        f"--device {args.device}` on {machine()}; date {date.today()}; "
        f"{time.perf_counter() - started:.0f} s. "
        "Each run a fresh process, batch 32 (DALI 2.4's decoder crashed 11-15 runs in 15 without the "
        f"reader's checks); three files (or one shard) spoiled in the middle of epoch 0 or between epochs 0 "
        f"and 1, six epochs in all. **{killed} of {args.runs * len(cases)} processes killed by a "
        "signal.**\n\n"
        + table,
    )


if __name__ == "__main__":
    main()

"""Repeat the preemption cases of tests/test_preemption.py and count exactly-once coverage (issue
26's target: every run, every epoch, each sample once; nothing redone beyond the steps since the
last checkpoint).

    python -m benchmarks.preemption [--runs 20] [--minutes 0] [--cases sigterm,sigterm2,sigkill]

Cases, each run in fresh processes with a signal at a random step (96 images, batch 8, 3 epochs,
a phase swap; tests/test_preemption.py's tiny recipe):

- ``sigterm``: ``python -m train``, SIGTERM, exit 75, ``--resume`` to the end;
- ``sigterm2``: torchrun with 2 ranks, SIGTERM to rank 1 alone, both stop at one step, resumed
  on 2 ranks;
- ``sigkill``: torchrun ``--max-restarts 1`` with 2 ranks and ``--checkpoint-steps 2``, rank 1
  SIGKILLed, torchrun's restart resumes from the last step checkpoint
  (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``).

A run counts as exactly-once when its sample log, the steps redone after a resume taken out, is
the uninterrupted run's (the same ids at the same steps on each rank) and covers each epoch's
samples once. ``--minutes`` stops starting rounds after that many minutes (0: no limit), and the
section says how many runs were made. Writes section ``preemption`` of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections import Counter
from datetime import date
from pathlib import Path

from benchmarks.report import machine, markdown_table, write_section

TESTS = Path(__file__).resolve().parent.parent / "tests"
CASES = {
    "sigterm": "SIGTERM to `python -m train`, then `--resume`",
    "sigterm2": "SIGTERM to rank 1 of 2 (torchrun), then `--resume` on 2",
    "sigkill": "SIGKILL of rank 1 of 2, torchrun `--max-restarts 1`, `--checkpoint-steps 2`",
}


def one_run(case: str, recipe: Path, out: Path, reference) -> tuple[str, dict]:
    import test_preemption as t

    try:
        if case == "sigterm":
            return "exactly once", t.case_sigterm_one_process(recipe, out, reference)
        if case == "sigterm2":
            stopped_at = t.case_sigterm_one_rank_of_two(recipe, out)
            return "exactly once", {"stopped_at": stopped_at, **t.case_resume_on_two(recipe, out, reference)}
        return "exactly once", t.case_sigkill_one_rank_of_two(recipe, out, reference)
    except AssertionError as error:
        text = str(error) or traceback.format_exc()
        print(f"--- {case} failed in {out}:\n{text}\n---", flush=True)  # the whole output, in the log
        lines = [line for line in text.splitlines() if "Error" in line or "assert" in line.lower()]
        return "failed", {"error": (lines[-1] if lines else text.strip().splitlines()[-1])[:300]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=0, help="start no round after this many minutes")
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    cases = args.cases.split(",")
    sys.path.insert(0, str(TESTS))
    import test_preemption as t
    from data_colours import write_colour_folder

    started = time.perf_counter()
    outcomes: dict[str, Counter] = {case: Counter() for case in cases}
    redone: dict[str, int] = dict.fromkeys(cases, 0)
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_colour_folder(root / "data" / "train", per_class=t.PER_CLASS, size=24)
        write_colour_folder(root / "data" / "val", per_class=2, size=24)
        recipe = root / "tiny.py"
        recipe.write_text(t.RECIPE.format(data=str(root / "data")))
        cache: dict[int, list] = {}

        def reference(world_size: int):
            if world_size not in cache:
                cache[world_size] = t.reference_ids(root / "data" / "train", world_size)
            return cache[world_size]

        runs = 0
        while runs < args.runs and not (args.minutes and time.perf_counter() - started > 60 * args.minutes):
            for case in cases:
                outcome, details = one_run(case, recipe, root / f"{case}{runs}", reference)
                outcomes[case][outcome] += 1
                redone[case] = max(redone[case], details.get("redone", 0))
                if outcome != "exactly once":
                    failures.append(f"{case} run {runs}: {details['error']}")
                print(case, runs, outcome, details, f"{time.perf_counter() - started:.0f} s", flush=True)
            runs += 1
    rows = [
        [CASES[case], sum(outcomes[case].values()), f"**{outcomes[case]['exactly once']}**",
         outcomes[case]["failed"], redone[case]]
        for case in cases
    ]  # fmt: skip
    table = markdown_table(["case", "runs", "exactly once", "failed", "most steps redone (a rank)"], rows)
    print(table)
    for failure in failures:
        print(failure)
    limit = f" --minutes {args.minutes:g}" if args.minutes else ""
    short = f" ({runs} of the {args.runs} asked for fit the time limit)" if runs < args.runs else ""
    total = sum(sum(c.values()) for c in outcomes.values())
    exact = sum(c["exactly once"] for c in outcomes.values())
    write_section(
        "preemption",
        f"### Preemption, repeated (`benchmarks/preemption.py`)\n\n`python -m benchmarks.preemption "
        f"--runs {args.runs}{limit}` on {machine()}; date {date.today()}; "
        f"{time.perf_counter() - started:.0f} s; {runs} round(s) of each case{short}. Each run fresh "
        "processes, the signal at a random step of 3 epochs (96 images, batch 8 per rank, the clean "
        "phase's loader swapped in for the third); a run is exactly-once when its sample log, the "
        "steps redone after the resume taken out, equals the uninterrupted run's on every rank and "
        "covers each epoch's samples once. "
        f"**{exact} of {total} runs exactly once.**\n\n"
        + table
        + ("\n\nFailures:\n" + "\n".join(f"- {f}" for f in failures) if failures else ""),
    )


if __name__ == "__main__":
    main()

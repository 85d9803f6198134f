"""Shared by the benchmark scripts: each one owns a section of BENCHMARKS.md and rewrites only it."""

from __future__ import annotations

import os
import platform
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

HEADER = "# Benchmarks\n\nEach section is rewritten by the script it names.\n"
BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def machine() -> str:
    """One line naming the machine the figures come from."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    cores = len(os.sched_getaffinity(0))
    return f"{platform.processor() or platform.machine()} CPU, {cores} cores, torch {torch.__version__}"


def write_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the section between ``<!-- begin name -->`` and ``<!-- end name -->`` (append if new)."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def rss_mib() -> float:
    """This process's resident memory in MiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def host_syncs(run: Callable[[], object]) -> list[warnings.WarningMessage]:
    """The host syncs torch reports (``set_sync_debug_mode("warn")``) while ``run()`` runs on CUDA."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return [warning for warning in caught if "synchroniz" in str(warning.message)]

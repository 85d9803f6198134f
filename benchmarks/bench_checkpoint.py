"""What the Trainer's checkpoints cost: per save, and as a share of training time at the default
interval (``checkpoint_minutes=10``), on the digits recipe and on a ResNet-50 (CPU).

    python -m benchmarks.bench_checkpoint [--steps 8] [--saves 4] [--models preact_resnet18,resnet50]

Each case is one Trainer of ``pipelines/digits_default.py`` (the second with ``--model resnet50``:
23.5 M parameters with the digits' 10 classes, 25.6 M with ImageNet's 1000, so its checkpoint
weighs about what an ImageNet ResNet-50's does): ``--steps`` training steps timed without
checkpoints, then ``--saves`` steps each followed by a mid-epoch checkpoint (the Trainer's own
``_save``: every rank's loader state, model, optimizer, atomic write and fsync; the last one a
SIGUSR1's stop). Also the ranks' stop agreement: a 3-integer gloo ``all_reduce`` between 2 CPU
processes (torchrun), per call and at the Trainer's interval (a tenth of ``stop_grace``, 3 s by
default). Writes section ``checkpoints`` of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from benchmarks.report import machine, markdown_table, write_section

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MINUTES = 10.0
GRACE = 30.0


def measure(model: str, steps: int, saves: int, out: Path) -> dict:
    """Step time and save time of one Trainer on the digits recipe."""
    import torch

    from train.loop import Trainer
    from train.recipe import load_recipe

    recipe = load_recipe(REPO / "pipelines" / "digits_default.py")
    if model != recipe.model:
        recipe = recipe.replace(model=model, model_kwargs={})
    recipe = recipe.replace(gap_samples=0)
    trainer = Trainer(recipe, out, device="cpu", progress=False, checkpoint_steps=0, checkpoint_minutes=0)
    stamps: list[float] = []
    save_s: list[float] = []
    step, save = trainer.optimizer.step, trainer._save

    def stepping(*args, **kwargs):
        result = step(*args, **kwargs)
        stamps.append(time.perf_counter())
        if len(stamps) == steps:
            trainer.checkpoint_steps = 1  # from here on, a checkpoint after every step
        if len(stamps) == steps + saves:
            os.kill(os.getpid(), signal.SIGUSR1)  # the stop's checkpoint ends the run
        return result

    def saving(*args, **kwargs):
        started = time.perf_counter()
        save(*args, **kwargs)
        save_s.append(time.perf_counter() - started)

    trainer.optimizer.step, trainer._save = stepping, saving
    trainer.run()
    assert trainer.stopped == "SIGUSR1", "the run ended before the benchmark's steps"
    # Step time: between optimizer steps without a checkpoint in between (the first two warm up).
    plain = [b - a for a, b in zip(stamps[1:steps], stamps[2 : steps + 1], strict=False)]
    step_s = statistics.median(plain[1:] or plain)
    per_save = statistics.median(save_s)
    size = (out / "checkpoint.pt").stat().st_size
    parameters = sum(p.numel() for p in trainer.module.parameters())
    del torch
    return {
        "model": model, "parameters": parameters, "mib": size / 2**20, "step_s": step_s,
        "save_s": per_save, "save_max_s": max(save_s), "saves": len(save_s),
        "batch": recipe.batch_size, "steps_per_epoch": len(trainer.loader),
    }  # fmt: skip


def collective_worker() -> None:
    """Under torchrun: the Trainer's stop agreement, timed (rank 0 prints one JSON line)."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    flags = torch.zeros(3, dtype=torch.int64)
    for _ in range(50):
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    calls = 1000
    started = time.perf_counter()
    for _ in range(calls):
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    per_call = (time.perf_counter() - started) / calls
    if dist.get_rank() == 0:
        print(json.dumps({"per_call_s": per_call}))
    dist.destroy_process_group()


def collective() -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "-m", "benchmarks.bench_checkpoint", "--collective-worker"]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    line = next(line for line in result.stdout.splitlines() if line.startswith("{"))
    return json.loads(line)["per_call_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--saves", type=int, default=4)
    parser.add_argument("--models", default="preact_resnet18,resnet50")
    parser.add_argument("--collective-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.collective_worker:
        collective_worker()
        return
    import logging

    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    load = os.getloadavg()[0]
    rows, results = [], []
    for model in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            result = measure(model, args.steps, args.saves, Path(tmp) / "run")
        results.append(result)
        interval = 60 * DEFAULT_MINUTES
        epoch_s = result["steps_per_epoch"] * result["step_s"]
        rows.append([
            f"digits, {result['model']} ({result['parameters'] / 1e6:.1f} M parameters)",
            f"{result['mib']:.0f}", f"{result['step_s'] * 1000:.0f}", f"{result['save_s'] * 1000:.0f}",
            f"{result['save_max_s'] * 1000:.0f}", f"{result['save_s'] / result['step_s']:.2f}",
            f"**{100 * result['save_s'] / (interval + result['save_s']):.3f}%**",
            f"{100 * result['save_s'] / (epoch_s + result['save_s']):.2f}%",
        ])  # fmt: skip
        print(rows[-1], flush=True)
    per_call = collective()
    check_s = GRACE / 10
    digits_step = results[0]["step_s"]
    table = markdown_table(
        ["case", "checkpoint MiB", "step ms", "save ms (median)", "save ms (max)", "save / step",
         "share at the default (a save every 10 min)", "share at one save per epoch"],
        rows,
    )  # fmt: skip
    text = (
        "## Checkpoints and preemption\n\n"
        f"`python -m benchmarks.bench_checkpoint --steps {args.steps} --saves {args.saves}` on {machine()} "
        f"(load average {load:.1f} at the start: other jobs shared the 2 cores); date {date.today()}; "
        f"{time.perf_counter() - started:.0f} s. A save is the Trainer's own mid-epoch checkpoint "
        "(`Trainer._save`: every rank's loader state and generator gathered, model, optimizer, scaler, "
        "one file written by rank 0 to a temporary name, fsynced and renamed). Shares are of training "
        "time: save / (interval + save). Target: <= 1% at the default.\n\n" + table + "\n\n"
        f"Stop agreement between ranks (`Trainer._agree`: one `all_reduce` of 3 int64, MAX, on a gloo "
        f"group, 2 CPU ranks under torchrun): **{per_call * 1e6:.0f} us** per call. At every step it "
        f"would add {100 * per_call / digits_step:.2f}% to a digits step here, but "
        f"{100 * per_call / 0.1:.1f}% to a 100 ms GPU step; so the Trainer calls it every "
        f"stop_grace/10 seconds' worth of steps ({check_s:.0f} s by default; rank 0 measures the step "
        f"time and the ranks agree on the next call in the same collective), at every "
        f"`checkpoint_steps` multiple and at each epoch's last step: {100 * per_call / check_s:.3f}% "
        "of training time at any step time, and a SIGTERM is answered within 3 s plus the step in "
        "flight and the save. One process checks its flag every step, at no cost."
    )
    print(text)
    write_section("checkpoints", text)


if __name__ == "__main__":
    main()

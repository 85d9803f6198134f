"""Runs that outlive their machines (issue 26): the Trainer's mid-epoch checkpoints, SIGTERM and
SIGUSR1, a rank SIGKILLed under torchrun's restarts, two torchrun agents, another world size.

Every training run here logs the sample ids of each step (``--log-samples``); a run's log, with
the steps redone after a resume taken out, is compared with an uninterrupted run's: every sample
of each epoch exactly once, and nothing repeated beyond the steps since the last checkpoint.
96 images, batch 8: whole batches on 1, 2, 3 and 4 ranks, so no padding blurs the count.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from data_colours import write_colour_folder

import dalaug

REPO = Path(__file__).resolve().parent.parent
PER_CLASS, CLASSES, BATCH, EPOCHS = 24, 4, 8, 3
SAMPLES = PER_CLASS * CLASSES
RECIPE = """
import dalaug
from train.recipe import Recipe

mixup = dalaug.Mixup(alpha=1.0, num_classes=4)
heavy = dalaug.Phase(2, policy="randaugment", operators=[mixup], name="heavy")
recipe = Recipe(
    name="tiny", model="preact_resnet18", model_kwargs={{"width": 4}}, data={data!r},
    crop=16, eval_resize=16, scale=(0.5, 1.0), flip=False, batch_size=8, lr=0.05,
    phases=dalaug.refine(heavy, epochs=1), lr_schedule="step", milestones=(2,), gap_samples=0, seed=0,
)
"""
# Each process its own: one thread (2 cores here), the fix of torchrun's restarts under gloo
# (pytorch issue 135712), and byte code cached (a cold start compiles torch's sources: ~30 s).
ENV = {
    **os.environ,
    "PYTHONPATH": str(REPO),
    "OMP_NUM_THREADS": "1",
    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
}
ENV.pop("PYTHONDONTWRITEBYTECODE", None)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("preemption_data")
    write_colour_folder(root / "train", per_class=PER_CLASS, size=24)
    write_colour_folder(root / "val", per_class=2, size=24)
    return root


@pytest.fixture(scope="module")
def recipe(data, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("preemption_recipe") / "tiny.py"
    path.write_text(RECIPE.format(data=str(data)))
    return path


def steps_per_epoch(world_size: int) -> int:
    return SAMPLES // (BATCH * world_size)


# --- reading the sample logs ------------------------------------------------------------------


def replay(out: Path, rank: int) -> tuple[list[dict], list[dict]]:
    """A rank's steps as the run kept them, and those it redid: each start line (a process began
    at ``global_step``) drops the steps logged after that step by the process before."""
    kept: list[dict] = []
    redone: list[dict] = []
    for line in (out / "samples" / f"rank{rank}.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "start" in record:
            while kept and kept[-1]["global_step"] > record["start"]["global_step"]:
                redone.append(kept.pop())
        else:
            kept.append(record)
    return kept, redone


def starts(out: Path, rank: int) -> list[dict]:
    lines = (out / "samples" / f"rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line)["start"] for line in lines if '"start"' in line]


def by_epoch(runs: list[list[dict]]) -> dict[int, Counter]:
    counts: dict[int, Counter] = {}
    for kept in runs:
        for record in kept:
            counts.setdefault(record["epoch"], Counter()).update(record["ids"])
    return counts


def assert_each_sample_once_per_epoch(runs: list[list[dict]]) -> None:
    counts = by_epoch(runs)
    assert sorted(counts) == list(range(EPOCHS))
    for epoch, ids in counts.items():
        assert set(ids) == set(range(SAMPLES)), (epoch, sorted(set(range(SAMPLES)) - set(ids)))
        assert max(ids.values()) == 1, (epoch, [i for i, n in ids.items() if n > 1])


def steps(kept: list[dict]) -> list[tuple[int, int, list[int]]]:
    return [(r["epoch"], r["step"], r["ids"]) for r in kept]


def reference_ids(train: Path, world_size: int) -> list[list[tuple[int, int, list[int]]]]:
    """The ids an uninterrupted run reads on each rank of ``world_size``: [(epoch, step, ids)]. The
    order is the loader's alone (seed, epoch, rank), the same in every phase."""
    saved = {k: os.environ.get(k) for k in ("WORLD_SIZE", "RANK")}
    ranks = []
    try:
        for rank in range(world_size):
            os.environ.update(WORLD_SIZE=str(world_size), RANK=str(rank))
            loader = dalaug.Loader(train, BATCH, train=True, crop=16, seed=0, device="cpu", num_threads=1,
                                   io_workers=0)  # fmt: skip
            read = []
            for epoch in range(EPOCHS):
                loader.set_epoch(epoch)
                read += [(epoch, step, loader.sample_ids.tolist()) for step, _ in enumerate(loader)]
            loader.close()
            ranks.append(read)
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    return ranks


@pytest.fixture(scope="module")
def expected(data):
    cache: dict[int, list] = {}

    def ids(world_size: int) -> list[list[tuple[int, int, list[int]]]]:
        if world_size not in cache:
            cache[world_size] = reference_ids(data / "train", world_size)
        return cache[world_size]

    return ids


# --- launching --------------------------------------------------------------------------------


def train_args(recipe: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "train", "--recipe", str(recipe), "--out", str(out), "--device", "cpu", "--log-samples",
            *extra]  # fmt: skip


def launch(args: list[str], nproc: int = 1, torchrun: tuple[str, ...] = ()) -> subprocess.Popen:
    if nproc > 1 or torchrun:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", *torchrun]
        if not any(a.startswith("--rdzv") or a == "--standalone" for a in torchrun):
            launcher.append("--standalone")
        args = launcher + args
    else:
        args = [sys.executable, *args]
    return subprocess.Popen(
        args, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def wait_for_step(out: Path, rank: int, step: int, process: subprocess.Popen, timeout: float = 300) -> int:
    """Wait until ``rank`` logged training step ``step`` (of the run, from 1); return its pid."""
    path, deadline = out / "samples" / f"rank{rank}.jsonl", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = [
                json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")
            ]
            if any(r.get("global_step", 0) >= step for r in lines):
                return [r["start"]["pid"] for r in lines if "start" in r][-1]
        if process.poll() is not None:
            raise AssertionError(f"the run ended before step {step}:\n{process.communicate()[0][-3000:]}")
        time.sleep(0.02)
    raise AssertionError(f"no step {step} within {timeout} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_stopped_in_flight(output: str, rank: int, seen: int, stopped_at: int) -> None:
    """The run stopped at the step in flight when ``rank`` got the signal, no later. ``seen``: the
    step the test saw logged before it signalled (the run may have gone on a few steps since)."""
    came = re.search(rf"rank {rank}: SIG\w+ came after global step (\d+)", output)
    assert came, output[-3000:]
    after = int(came[1])
    assert seen <= after <= stopped_at <= after + 1, (seen, after, stopped_at)


def saved(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True)


def history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# --- in one process: the Trainer ---------------------------------------------------------------


def run_trainer(recipe: Path, out: Path, *, at: int | None = None, action=None, **options):
    """A Trainer run on the CPU; ``action()`` runs right after the optimizer's ``at``-th step."""
    from train.loop import Trainer
    from train.recipe import load_recipe

    trainer = Trainer(load_recipe(recipe), out, device="cpu", progress=False, log_samples=True, **options)
    if at is not None:
        step, calls = trainer.optimizer.step, [0]

        def stepping(*args, **kwargs):
            result = step(*args, **kwargs)
            calls[0] += 1
            if calls[0] == at:
                action()
            return result

        trainer.optimizer.step = stepping
    trainer.run()
    return trainer


@pytest.fixture(scope="module")
def whole(recipe, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "run"
    run_trainer(recipe, out)
    return out


def assert_same_weights(ours: Path, theirs: Path) -> None:
    mine, reference = saved(ours)["model"], saved(theirs)["model"]
    for name in reference:
        assert torch.equal(mine[name], reference[name]), name


@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR1"])
def test_a_signal_at_a_random_step_checkpoints_that_step_and_the_resume_ends_as_an_unbroken_run(
    recipe, whole, expected, tmp_path, name
):
    total = EPOCHS * steps_per_epoch(1)
    at = random.randrange(1, total)  # after the step `at`: any step but the run's last
    out = tmp_path / "run"
    number = getattr(signal, name)
    before = signal.getsignal(number)
    trainer = run_trainer(recipe, out, at=at, action=lambda: os.kill(os.getpid(), number))
    assert trainer.stopped == name, at
    state = saved(out)
    epoch, step = divmod(at, steps_per_epoch(1))
    if step == 0:  # after an epoch's last step: saved before its evaluation
        epoch, step = epoch - 1, steps_per_epoch(1)
    assert state["progress"]["epoch"] == epoch and state["progress"]["step"] == step, (at, state["progress"])
    assert state["global_step"] == at and [r["epoch"] for r in state["history"]] == list(range(epoch))
    assert signal.getsignal(number) is before  # the handlers are the process's again
    resumed = run_trainer(recipe, out, resume=True)
    assert resumed.stopped is None
    assert_same_weights(out, whole)
    assert [r["train_loss"] for r in history(out)] == [r["train_loss"] for r in history(whole)]
    kept, redone = replay(out, 0)
    assert redone == [], at  # a signal costs no step
    assert steps(kept) == expected(1)[0]
    assert_each_sample_once_per_epoch([kept])


def test_a_crash_resumes_from_the_last_step_checkpoint_and_redoes_only_the_steps_since(
    recipe, whole, expected, tmp_path
):
    every = 5
    at = random.randrange(every + 1, EPOCHS * steps_per_epoch(1))
    out = tmp_path / "run"

    class Crash(Exception):
        pass

    def crash():
        raise Crash

    with pytest.raises(Crash):
        run_trainer(recipe, out, at=at, action=crash, checkpoint_steps=every)
    last = saved(out)["global_step"]
    # The crash comes inside step `at`: the last checkpoint is of the last multiple of `every` or
    # the last epoch's end before it, whichever came later.
    ends = [e * steps_per_epoch(1) for e in range(1, EPOCHS)]
    assert last == max([*range(every, at, every), *(e for e in ends if e < at)]), at
    run_trainer(recipe, out, resume=True, checkpoint_steps=every)
    assert_same_weights(out, whole)
    kept, redone = replay(out, 0)
    # Step `at` itself was never logged: the steps after the checkpoint, before the crash.
    assert [r["global_step"] for r in redone] == list(range(at - 1, last, -1)), (at, last)
    assert len(redone) < every
    assert steps(kept) == expected(1)[0]


def test_the_checkpoint_clock_saves_mid_epoch_and_a_resume_may_change_the_intervals(
    recipe, tmp_path, caplog, monkeypatch
):
    import logging

    from dalaug import checkpoint

    out = tmp_path / "run"
    written = []
    save = checkpoint.save
    monkeypatch.setattr(
        checkpoint, "save", lambda state, path: written.append(state["global_step"]) or save(state, path)
    )
    # A clock due at every check: a checkpoint after every step, then the stop's.
    trainer = run_trainer(recipe, out, at=3, action=lambda: os.kill(os.getpid(), signal.SIGTERM),
                          checkpoint_minutes=1e-9)  # fmt: skip
    assert trainer.stopped == "SIGTERM" and written == [1, 2, 3]
    monkeypatch.setattr(checkpoint, "save", save)
    with caplog.at_level(logging.INFO, logger="dalaug.train"):
        resumed = run_trainer(
            recipe, out, resume=True, checkpoint_minutes=0, checkpoint_steps=4, stop_grace=5
        )
    assert "at epoch 0, step 3" in caplog.text
    assert resumed.stopped is None and len(history(out)) == EPOCHS


def test_a_checkpoint_of_another_world_size_is_refused_naming_both_global_batches(recipe, whole, tmp_path):
    from train.loop import Trainer
    from train.recipe import load_recipe

    out = tmp_path / "run"
    shutil.copytree(whole, out)
    state = saved(out)
    state["world_size"] = 2
    state["per_rank"] = state["per_rank"] * 2
    torch.save(state, out / "checkpoint.pt")
    with pytest.raises(ValueError, match="global batch would change from 16 to 8.*--allow-world-size-change"):
        Trainer(load_recipe(recipe), out, device="cpu", resume=True)


@pytest.mark.parametrize(
    ("environ", "count"),
    [
        ({"LOCAL_WORLD_SIZE": "2", "SLURM_NTASKS_PER_NODE": "4"}, 2),
        ({"SLURM_NTASKS_PER_NODE": "4", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, 4),
        ({"SLURM_TASKS_PER_NODE": "4(x2),3", "SLURM_NODEID": "2"}, 3),
        ({"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, 2),
        ({"SLURM_NTASKS_PER_NODE": "64"}, 8),  # never more than the world
        ({}, 8),  # nothing to go by, no process group: the world size (fewest threads each)
    ],
)
def test_local_world_size_falls_back_on_slurm_then_open_mpi(monkeypatch, environ, count):
    from train.loop import local_world_size

    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_NODEID",
                 "OMPI_COMM_WORLD_LOCAL_SIZE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "8")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert local_world_size() == count
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process in a SLURM job of many tasks
    assert local_world_size() == 1


def test_local_world_size_without_launcher_variables_counts_the_process_groups_ranks_on_this_host(
    monkeypatch,
):
    import train.loop as loop

    for name in (
        "LOCAL_WORLD_SIZE",
        "SLURM_NTASKS_PER_NODE",
        "SLURM_TASKS_PER_NODE",
        "OMPI_COMM_WORLD_LOCAL_SIZE",
    ):
        monkeypatch.delenv(name, raising=False)
    here = socket.gethostname()
    gathered = []

    def all_gather_object(out, obj):
        gathered.append(obj)
        out[:] = ["node-a", here, "node-b", here]

    monkeypatch.setattr(loop.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(loop.dist, "get_world_size", lambda group=None: 4)
    monkeypatch.setattr(loop.dist, "all_gather_object", all_gather_object)
    monkeypatch.setattr(loop, "_HOST_COUNTS", {})
    assert loop.local_world_size() == 2 and loop.local_world_size() == 2
    assert gathered == [here]  # asked once: a collective every rank makes at the same point


# --- processes: python -m train and torchrun ---------------------------------------------------


# The cases benchmarks/preemption.py repeats: each asserts, and returns what it measured.


def case_sigterm_one_process(recipe: Path, out: Path, reference) -> dict:
    """``python -m train``, SIGTERM at a random step: exit 75, then ``--resume`` to the end."""
    at = random.randrange(2, EPOCHS * steps_per_epoch(1) - 1)
    process = launch(train_args(recipe, out))
    os.kill(wait_for_step(out, 0, at, process), signal.SIGTERM)
    code, output = finish(process)
    assert code == 75, output[-3000:]
    assert "SIGTERM: stopped at epoch" in output and "Traceback" not in output, output[-3000:]
    stopped_at = saved(out)["global_step"]
    assert_stopped_in_flight(output, 0, at, stopped_at)
    code, output = finish(launch(train_args(recipe, out, "--resume")))
    assert code == 0, output[-3000:]
    kept, redone = replay(out, 0)
    assert redone == [] and starts(out, 0)[-1]["global_step"] == stopped_at
    assert steps(kept) == reference(1)[0]
    assert [r["epoch"] for r in history(out)] == list(range(EPOCHS))
    return {"signal_at": at, "stopped_at": stopped_at, "redone": 0}


def case_sigterm_one_rank_of_two(recipe: Path, out: Path) -> int:
    """torchrun, 2 ranks, SIGTERM to rank 1 alone at a random step: both ranks stop at one step
    after its checkpoint and exit 75. Returns that step."""
    # A step whose stop (there or at the next one) lands mid-epoch, where a resume on another
    # number of ranks has an epoch to cut.
    per_epoch = steps_per_epoch(2)
    at = random.choice([s for s in range(2, EPOCHS * per_epoch - 1) if 0 < s % per_epoch < per_epoch - 1])
    # --stop-grace 0: the ranks agree every step (by default every 3 s of steps, which here would
    # be the epoch's end), so that the stop lands mid-epoch.
    process = launch(train_args(recipe, out, "--stop-grace", "0"), nproc=2)
    os.kill(wait_for_step(out, 1, at, process), signal.SIGTERM)
    code, output = finish(process)
    assert code != 0, output[-3000:]  # torchrun, its worker group failed: the workers exited 75
    assert "exitcode:75" in output.replace(" ", ""), output[-3000:]
    state = saved(out)
    assert state["world_size"] == 2 and len(state["per_rank"]) == 2
    stopped_at = state["global_step"]
    assert_stopped_in_flight(output, 1, at, stopped_at)
    for rank in (0, 1):  # both ranks logged up to the agreed step, no further
        assert replay(out, rank)[0][-1]["global_step"] == stopped_at, rank
    return stopped_at


def case_resume_on_two(recipe: Path, out: Path, reference) -> dict:
    code, output = finish(launch(train_args(recipe, out, "--resume"), nproc=2))
    assert code == 0, output[-3000:]
    for rank in (0, 1):
        kept, redone = replay(out, rank)
        assert redone == [] and steps(kept) == reference(2)[rank], rank
    assert_each_sample_once_per_epoch([replay(out, rank)[0] for rank in (0, 1)])
    return {"redone": 0}


def case_sigkill_one_rank_of_two(recipe: Path, out: Path, reference, every: int = 2) -> dict:
    """torchrun --max-restarts 1, 2 ranks, checkpoints every ``every`` steps, rank 1 SIGKILLed at a
    random step: the restart resumes both from the last step checkpoint and runs to the end."""
    at = random.randrange(every + 1, EPOCHS * steps_per_epoch(2) - 1)
    # --resume from the first start: torchrun restarts the same command.
    args = train_args(recipe, out, "--resume", "--checkpoint-steps", str(every))
    process = launch(args, nproc=2, torchrun=("--max-restarts=1", "--monitor-interval=0.2"))
    os.kill(wait_for_step(out, 1, at, process), signal.SIGKILL)
    code, output = finish(process)
    assert code == 0, output[-3000:]
    redone_most = 0
    for rank in (0, 1):
        first, second = starts(out, rank)[-2:]
        assert first["global_step"] == 0 and 0 < second["global_step"] <= at, (rank, at, second)
        kept, redone = replay(out, rank)
        # The steps since the last checkpoint, and on rank 0 the step in flight when rank 1 died.
        assert len(redone) <= every + 1, (rank, at, second, [r["global_step"] for r in redone])
        assert steps(kept) == reference(2)[rank], rank
        redone_most = max(redone_most, len(redone))
    assert_each_sample_once_per_epoch([replay(out, rank)[0] for rank in (0, 1)])
    assert [r["epoch"] for r in history(out)] == list(range(EPOCHS))
    return {"killed_at": at, "resumed_at": second["global_step"], "redone": redone_most}


def test_sigterm_to_python_m_train_exits_75_and_the_resume_goes_on_from_that_step(recipe, expected, tmp_path):
    case_sigterm_one_process(recipe, tmp_path / "run", expected)


@pytest.fixture(scope="module")
def stopped_on_two(recipe, tmp_path_factory):
    """A 2-rank torchrun run, SIGTERM sent to rank 1 alone at a random step: (its folder, step)."""
    out = tmp_path_factory.mktemp("two") / "run"
    return out, case_sigterm_one_rank_of_two(recipe, out)


def copy_of(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_sigterm_to_one_rank_of_two_stops_both_at_one_step_and_resumes_exactly(
    recipe, stopped_on_two, expected, tmp_path
):
    case_resume_on_two(recipe, copy_of(stopped_on_two[0], tmp_path), expected)


def test_resume_on_one_rank_of_a_two_rank_checkpoint_is_refused_without_the_flag(
    recipe, stopped_on_two, tmp_path
):
    out = copy_of(stopped_on_two[0], tmp_path)
    code, output = finish(launch(train_args(recipe, out, "--resume")))
    assert code == 2, output[-3000:]
    line = output.strip().splitlines()[-1]
    assert line.startswith("error: --resume") and "2 rank(s), this run has 1" in line, line
    assert "from 16 to 8" in line and "--allow-world-size-change" in line, line


@pytest.mark.parametrize("world_size", [1, 3])
def test_resume_on_another_world_size_serves_what_the_epoch_had_not_delivered_once(
    recipe, stopped_on_two, tmp_path, world_size
):
    out = copy_of(stopped_on_two[0], tmp_path)
    stopped_at = stopped_on_two[1]
    # The signal can come a step or two after the one the test saw, at an epoch's end: then the
    # checkpoint is at a boundary (no progress) and the cut is that next epoch's start.
    progress = saved(out)["progress"] or {"epoch": stopped_at // steps_per_epoch(2), "step": 0}
    epoch, step = progress["epoch"], progress["step"]
    code, output = finish(
        launch(train_args(recipe, out, "--resume", "--allow-world-size-change"), nproc=world_size)
    )
    assert code == 0, output[-3000:]
    assert f"global batch 16 -> {8 * world_size}" in output and "learning rate is not scaled" in output
    runs = {rank: replay(out, rank)[0] for rank in range(max(2, world_size))}
    for rank in range(2, world_size):  # the new ranks start at the saved step
        assert starts(out, rank) and starts(out, rank)[0]["global_step"] == stopped_at
    lines = [record for kept in runs.values() for record in kept]
    for e in range(EPOCHS):
        if e != epoch:  # before the cut on 2 ranks, after it on the new ones: each sample once
            ids = Counter(i for r in lines if r["epoch"] == e for i in r["ids"])
            assert set(ids) == set(range(SAMPLES)) and max(ids.values()) == 1, e
            continue
        # The epoch cut: what the 2 ranks delivered (each once), then the samples they had not
        # delivered, shared out among the new ranks: none served again. Padding the shares to
        # equal whole batches repeats a few of the rest, drop_last's cut of a share leaves a few
        # out (fewer than a batch per rank each); with shares of whole batches, neither.
        before = Counter(
            i for r in lines if r["epoch"] == e and r["global_step"] <= stopped_at for i in r["ids"]
        )
        after = Counter(
            i for r in lines if r["epoch"] == e and r["global_step"] > stopped_at for i in r["ids"]
        )
        assert sum(before.values()) == 2 * BATCH * step and max(before.values()) == 1, step
        assert not set(before) & set(after), (step, sorted(set(before) & set(after)))
        remaining = SAMPLES - len(before)
        duplicates = sum(after.values()) - len(after)
        missing = remaining - len(after)
        assert duplicates < world_size * BATCH and missing < world_size * BATCH, (step, duplicates, missing)
        if remaining % (world_size * BATCH) == 0:
            assert duplicates == missing == 0, step
    assert [r["epoch"] for r in history(out)] == list(range(EPOCHS))


def test_a_rank_sigkilled_under_torchrun_restarts_resumes_from_the_last_step_checkpoint(
    recipe, expected, tmp_path
):
    case_sigkill_one_rank_of_two(recipe, tmp_path / "run", expected)


def test_two_torchrun_agents_of_two_processes_train_with_c10d_on_localhost(recipe, expected, tmp_path):
    out = tmp_path / "run"
    rendezvous = ("--nnodes=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}",
                  "--rdzv-id=preemption")  # fmt: skip
    agents = [launch(train_args(recipe, out), nproc=2, torchrun=rendezvous) for _ in range(2)]
    for agent in agents:
        code, output = finish(agent)
        assert code == 0, output[-3000:]
    runs = [replay(out, rank)[0] for rank in range(4)]
    assert_each_sample_once_per_epoch(runs)
    # Which agent got which ranks is the rendezvous' choice; the ranks' reads are the loader's.
    assert [steps(kept) for kept in runs] == expected(4)
    assert [r["epoch"] for r in history(out)] == list(range(EPOCHS))

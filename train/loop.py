"""The training loop: a plain PyTorch loop over dalaug loaders, asking a dalaug Schedule what to do.

Per epoch: the schedule gives the loader (heavy or clean pipeline), the batch operators and the
learning-rate hint; the loop trains with soft-target cross-entropy, evaluates top-1/top-5, measures
the clean-vs-augmented loss gap on a fixed set of training samples (He et al., Table 2), logs, and
checkpoints atomically. Under ``torchrun`` it runs DDP (NCCL on GPUs, gloo on CPUs); every rank
reads its own shard and only rank 0 writes files.

Runs that outlive their machines: besides each epoch's end, the Trainer checkpoints mid-epoch every
``checkpoint_steps`` steps and/or ``checkpoint_minutes`` minutes, and on SIGTERM or SIGUSR1 (the
handlers only set a flag; the loop acts on it between steps, on every rank at the same step), after
which ``python -m train`` exits with :data:`EXIT_STOPPED`. A resumed run goes on from the saved
step; on another number of ranks only when told (``allow_world_size_change``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import dalaug
from dalaug import checkpoint
from dalaug.compose import apply_operators, leaf_operators
from dalaug.config import resolve_device
from dalaug.loader import _tasks_on_this_node  # the launchers' counts, read one way
from dalaug.ops import ManifoldMixup
from dalaug.reading.storage import is_url, list_shards
from dalaug.schedule import unfaded
from train.models import create_model
from train.recipe import RUN_KEEPING, Recipe

log = logging.getLogger("dalaug.train")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# The exit code of a run stopped by a signal after its checkpoint was written: EX_TEMPFAIL of
# sysexits.h, "try again later". Not 0, so that a Kubernetes Job or a workflow does not take a
# preempted run for a finished one; not 128 + signal, so that it is told apart from a run killed
# before it could save; torchrun restarts a worker group that exits with it (the restart resumes
# from the checkpoint just written) unless torchrun itself was signalled. SLURM requeues it where
# slurm.conf lists it in RequeueExit, or a batch script does (`[ $? = 75 ] && scontrol requeue`).
EXIT_STOPPED = 75
STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


def soft_cross_entropy(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against soft targets (B, C): the one loss every batch operator feeds."""
    return -(soft * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def data_folders(data: str | None) -> tuple[str | Path, str | Path]:
    """``data/train`` and ``data/val`` (or ``data/test``), folders on disk or prefixes of shards in a
    bucket (``s3://bucket/imagenet`` -> ``s3://bucket/imagenet/train/``, never through Path);
    None: the embedded digits data set."""
    if data is None:
        from dalaug.datasets import write_digits

        return write_digits(Path("data") / "digits")
    if is_url(data):
        return _bucket_folders(data)
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"--data: {str(root)!r} is not a directory")
    evaluation = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or evaluation is None:
        raise ValueError(f"--data: {str(root)!r} must hold train/ and val/ (or test/) ImageFolders")
    return root / "train", evaluation


def _bucket_folders(data: str) -> tuple[str, str]:
    # A bucket has no folders, only prefixes: val/ is there if it lists shards (test/ if not). The
    # loader lists train/ itself, naming it if it holds none; a denied bucket fails here, by name.
    root = data.rstrip("/")
    try:
        list_shards(f"{root}/val/")
        return f"{root}/train/", f"{root}/val/"
    except (FileNotFoundError, ValueError) as no_val:
        try:
            list_shards(f"{root}/test/")
        except (FileNotFoundError, ValueError):
            raise ValueError(f"--data: {data!r} must hold train/ and val/ (or test/) prefixes of .tar "
                             f"shards; {no_val}") from None  # fmt: skip
        return f"{root}/train/", f"{root}/test/"


def _folder_name(folder: str | Path) -> str:
    """``train`` for ``/data/train`` and for ``s3://bucket/data/train/``."""
    return str(folder).rstrip("/").rsplit("/", 1)[-1]


def local_rank() -> int:
    """This process's index among the ranks of its node: torchrun's LOCAL_RANK, else SLURM's
    SLURM_LOCALID (srun), else Open MPI's OMPI_COMM_WORLD_LOCAL_RANK (mpirun), else 0."""
    for name in ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK"):
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


_HOST_COUNTS: dict[int, int] = {}


def local_world_size() -> int:
    """The ranks of this run on this node (what the node's CPU threads are split among).

    torchrun's LOCAL_WORLD_SIZE, else SLURM's SLURM_NTASKS_PER_NODE (``--ntasks-per-node``) or
    SLURM_TASKS_PER_NODE (always set by srun, e.g. ``"4(x2),3"``, read at SLURM_NODEID), else Open
    MPI's OMPI_COMM_WORLD_LOCAL_SIZE, else the ranks of the initialized process group whose host
    name is this one's (an ``all_gather_object``: every rank must call it at the same point; the
    answer is kept), else the world size (the safe side: fewer threads each). 1 outside a
    distributed run, whatever the scheduler's variables say (a single process in a SLURM job of
    many tasks has the node to itself). Never more than the world size.
    """
    initialized = dist.is_available() and dist.is_initialized()
    if initialized:
        world_size = dist.get_world_size()
    else:
        value = os.environ.get("WORLD_SIZE", "1").strip()
        world_size = int(value) if value.isdigit() else 1
    if world_size <= 1:
        return 1
    names = (
        "LOCAL_WORLD_SIZE",
        "SLURM_NTASKS_PER_NODE",
        "SLURM_TASKS_PER_NODE",
        "OMPI_COMM_WORLD_LOCAL_SIZE",
    )
    for name in names:
        count = _tasks_on_this_node(os.environ.get(name, ""), os.environ.get("SLURM_NODEID", "0"))
        if count:
            return min(count, world_size)
    if initialized:
        if world_size not in _HOST_COUNTS:
            hosts: list = [None] * world_size
            dist.all_gather_object(hosts, socket.gethostname())
            _HOST_COUNTS[world_size] = hosts.count(socket.gethostname())
        return _HOST_COUNTS[world_size]
    return world_size


class StopSignals:
    """SIGTERM and SIGUSR1 handlers that only record the signal (Lightning's signal connector): the
    loop checks :attr:`received` between steps, where stopping is safe. Handlers can only be set in
    the main thread; elsewhere (a Trainer run in a thread) the signals keep their handlers."""

    def __init__(self, progress=lambda: None) -> None:
        self.received: str | None = None  # the first signal's name
        self.at: float | None = None  # time.monotonic() when it came
        self.after = None  # what ``progress()`` said then (the Trainer's: its global step)
        self._progress = progress
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("not the main thread: SIGTERM and SIGUSR1 keep their handlers (no stop checkpoint)")
            return
        for name in STOP_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self._previous[number] = signal.signal(number, self._handle)
                # Restart the system calls it interrupts (signal.signal makes them fail with EINTR):
                # the signal may land on a DALI, gloo or NCCL thread, whose code may not retry.
                signal.siginterrupt(number, False)

    def uninstall(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous = {}

    def _handle(self, number: int, frame) -> None:
        if self.received is None:
            self.received, self.at = signal.Signals(number).name, time.monotonic()
            self.after = self._progress()


class Trainer:
    """One run of a recipe. ``run()`` trains to the end (resuming if asked) and returns the history.

    Args:
        recipe: the experiment.
        out: run folder (config, metrics, checkpoint, plot); written by rank 0 only.
        device: None (CUDA if available), ``"cpu"`` or ``"cuda"``.
        resume: continue from ``out/checkpoint.pt`` if it exists.
        eval_every: evaluate on the test set after every ``eval_every``-th epoch and after the last
            epoch of each phase only (1: every epoch). Grids of many short runs spend most of their
            time evaluating otherwise.
        gap_every: measure the gap (``dalaug.measure_gap``, a few hundred training samples: cheap)
            after every ``gap_every``-th epoch and the last of each phase; None: as ``eval_every``.
        checkpoint: write ``out/checkpoint.pt`` after each epoch, mid-epoch as below, and on a
            stop signal (False: a run that is not resumed; SIGTERM then kills it as before).
        progress: show a progress bar per epoch.
        checkpoint_steps, checkpoint_minutes, stop_grace: as the recipe's fields of these names
            (None: the recipe's; 0 turns an interval off).
        allow_world_size_change: resume a checkpoint written by another number of ranks. The
            per-rank batch is kept, so the global batch changes with the world size; the learning
            rate schedule is the recipe's, not scaled (it goes on by epoch). Each rank then loads
            rank 0's loader state, and the epoch in progress serves each sample it had not yet
            delivered once across the new ranks, with new augmentation draws. False: refused,
            naming both global batches.
        log_samples: append each step's sample ids to ``out/samples/rank<R>.jsonl`` (one line
            ``{"epoch", "step", "global_step", "ids"}`` per step, and a ``{"start": ...}`` line at
            each start), to audit what a run consumed across interruptions.

    A stop signal (SIGTERM, SIGUSR1) is acted on between steps: the ranks agree on it, save at
    the same step and :meth:`run` returns early with :attr:`stopped` naming the signal. A signal
    that comes after an epoch's last step saves before evaluation (a resume evaluates); one that
    comes during evaluation saves at the epoch's end.
    """

    def __init__(
        self, recipe: Recipe, out: str | Path, device: str | None = None, resume: bool = False, *,
        eval_every: int = 1, gap_every: int | None = None, checkpoint: bool = True, progress: bool = True,
        checkpoint_steps: int | None = None, checkpoint_minutes: float | None = None,
        stop_grace: float | None = None, allow_world_size_change: bool = False, log_samples: bool = False,
    ):  # fmt: skip
        gap_every = eval_every if gap_every is None else gap_every
        for name, every in (("eval_every", eval_every), ("gap_every", gap_every)):
            if isinstance(every, bool) or not isinstance(every, int) or every < 1:
                raise ValueError(f"{name}: expected a positive int, got {every!r}")
        keeping = {"checkpoint_steps": checkpoint_steps, "checkpoint_minutes": checkpoint_minutes,
                   "stop_grace": stop_grace}  # fmt: skip
        recipe = recipe.replace(**{k: v for k, v in keeping.items() if v is not None})  # checks them
        self.recipe = recipe
        self.eval_every, self.gap_every = eval_every, gap_every
        self.checkpoint, self.progress = checkpoint, progress
        self.checkpoint_steps, self.checkpoint_minutes = recipe.checkpoint_steps, recipe.checkpoint_minutes
        self.stop_grace = recipe.stop_grace
        self.allow_world_size_change, self.log_samples = allow_world_size_change, log_samples
        self.stopped: str | None = None  # the signal that stopped the run, once it did
        self._signals = StopSignals(lambda: self._global_step)
        self.out = Path(out)
        # Before the loaders are built: a file in the way would only show when the run writes.
        blocking = next((p for p in (self.out, *self.out.parents) if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise ValueError(f"--out: {str(blocking)!r} is a file; give a folder for the run")
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if device in (None, "cuda") and torch.cuda.is_available():
            device = f"cuda:{local_rank()}"  # each rank its own GPU, also for a bare "cuda"
        self.device = resolve_device(device)
        on_gpu = self.device.type == "cuda"
        if on_gpu:
            torch.cuda.set_device(self.device)  # before the process group: NCCL binds to it
            torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels once
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if on_gpu else "gloo", device_id=self.device if on_gpu else None)
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        # The stop flag's collective runs on the host: a gloo group beside NCCL's, so that reading
        # the flag never waits for the GPU.
        self._control = dist.new_group(backend="gloo") if self.distributed and on_gpu else None
        torch.manual_seed(recipe.seed)

        train_dir, eval_dir = data_folders(recipe.data)
        first = recipe.phases[0]
        self.amp = AMP_DTYPES.get(recipe.precision) if on_gpu else None
        self.memory_format = (
            torch.channels_last if on_gpu and recipe.channels_last else torch.contiguous_format
        )
        # DALI emits the layout and (for fp16) the dtype the model takes: no conversion pass per step.
        emitted = dict(memory_format=self.memory_format, dtype=self.amp or torch.float32, device=self.device)
        if self.distributed and "LOCAL_WORLD_SIZE" not in os.environ:
            # srun, mpirun: dalaug would split the node's cores by the global world size.
            emitted["num_threads"] = max(1, len(os.sched_getaffinity(0)) // local_world_size())
        train_loader = dalaug.Loader(
            train_dir, recipe.batch_size, train=True, crop=recipe.crop, scale=recipe.scale,
            flip=recipe.flip, policy=first.policy, seed=recipe.seed, **emitted,
        )  # fmt: skip
        self.eval_loader = dalaug.Loader(
            eval_dir, recipe.batch_size, train=False, crop=recipe.crop, resize=recipe.eval_resize, **emitted
        )  # fmt: skip
        self.classes = train_loader.classes
        self.num_classes = len(self.classes)
        _check_classes(train_dir, self.classes, eval_dir, self.eval_loader.classes)
        operators = list(leaf_operators(unfaded(op) for phase in recipe.phases for op in phase.operators))
        _check_num_classes(operators, self.num_classes, train_dir, recipe.data)
        self.schedule = dalaug.Schedule(recipe.phases, train_loader)
        self.gap_batches = self._gap_batches(train_loader)

        model = create_model(recipe.model, self.num_classes, **recipe.model_kwargs)
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.module = self.model
        # Manifold Mixup mixes inside the model: its hooks go on the unwrapped module, once.
        manifold = {id(op): op for op in operators if isinstance(op, ManifoldMixup)}
        self.hooks = [op.attach(self.module) for op in manifold.values()]
        if self.distributed:
            self.model = DistributedDataParallel(self.model, device_ids=[self.device] if on_gpu else None)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
            nesterov=recipe.nesterov, weight_decay=recipe.weight_decay,
        )  # fmt: skip
        self.scaler = torch.amp.GradScaler(enabled=self.amp == torch.float16)
        # Operators draw their parameters on the host from this generator only: it is in the checkpoint.
        self.generator = torch.Generator().manual_seed((recipe.seed * 1009 + self.rank) % 2**64)
        self.history: list[dict] = []
        self.start_epoch = 0
        self._partial: dict | None = None  # the epoch in progress a mid-epoch checkpoint resumes
        self._global_step = 0  # training steps of the run, all epochs (resumes included)
        self._until_check, self._check_at, self._last_save = 1, (0.0, 0), time.monotonic()
        self._sample_log = None
        # What config.json records and a resume must match: the settings as this run uses them.
        self.config = {f.name: _jsonable(getattr(recipe, f.name)) for f in fields(recipe)}
        self.config.update(
            epochs=recipe.epochs,
            data=recipe.data.rstrip("/") if is_url(recipe.data) else str(Path(train_dir).parent.resolve()),
            precision=next((k for k, v in AMP_DTYPES.items() if v == self.amp), "fp32"),
            channels_last=self.memory_format == torch.channels_last,
        )
        if resume:
            if (self.out / "checkpoint.pt").exists():
                self._load(self.out / "checkpoint.pt")
            else:
                # A job that always passes --resume starts the same way; say which start it took.
                log.info("no checkpoint at %s: starting from scratch", self.out / "checkpoint.pt")

    def _gap_batches(self, train_loader: dalaug.Loader) -> tuple | None:
        """Clean and heavy batches of the same few training samples, for the gap monitor.

        Taken once and kept on the host: the measurement sees the same crops every epoch, so two
        pipelines held for the whole run (threads, memory pools) would buy nothing.
        """
        if not self.recipe.gap_samples:
            return None
        samples = train_loader.samples
        # A fixed random subset: ImageFolders list samples class by class, so the first N would
        # often be one class.
        order = np.random.default_rng(self.recipe.seed).permutation(len(samples))
        subset = samples.without(order[self.recipe.gap_samples :])
        heavy = max(self.recipe.phases, key=lambda p: (p.policy is not None, len(p.operators)))
        self.gap_operators = [unfaded(op) for op in heavy.operators]
        batch = min(self.recipe.batch_size, len(subset))
        taken = []
        for policy in (None, heavy.policy):
            # Each rank measures the same samples: no sharding for this side measurement.
            # float32: the monitor's forward passes run outside autocast.
            config = train_loader.config.replace(
                batch_size=batch, policy=policy, distributed=False, dtype=torch.float32
            )
            with train_loader.with_config(config) as loader:
                taken.append([(x.cpu(), y.cpu()) for x, y in loader])
        return tuple(taken)

    # --- the loop -----------------------------------------------------------------------------

    def run(self, until: int | None = None) -> list[dict]:
        """Train from the current epoch to the end (or up to epoch ``until``); return the history.

        Returns early, with :attr:`stopped` set, after a stop signal's checkpoint."""
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(self.config, indent=2))
            # The checkpoint's history is the truth: a run killed after logging an epoch but
            # before checkpointing it must not log that epoch twice.
            (self.out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.history))
        # A signal before this run is not this run's.
        self.stopped, self._signals = None, StopSignals(lambda: self._global_step)
        self._last_save = time.monotonic()
        if self.log_samples:
            self._open_sample_log()
        if self.checkpoint:
            self._signals.install()
        try:
            self._run(until)
            # Still under the flag handlers: a signal while the loaders close only sets the flag.
            self.schedule.close()
            for hooks in self.hooks:
                hooks.detach()
            self.hooks = []
        finally:
            self._signals.uninstall()
            if self._sample_log is not None:
                self._sample_log.close()
                self._sample_log = None
        return self.history

    def _run(self, until: int | None) -> None:
        self.schedule.load_state_dict({"epoch": self.start_epoch})
        for epoch in self.schedule:  # the schedule's cursor moves on: its state is the next epoch
            if until is not None and epoch >= until:
                self.schedule.load_state_dict({"epoch": epoch})
                break
            record = self.train_epoch(epoch)
            if record is None:  # stopped by a signal, the checkpoint written
                self.schedule.load_state_dict({"epoch": epoch})
                break
            _, phase, in_phase = self.schedule.phase_at(epoch)
            phase_end = in_phase == phase.epochs - 1
            if phase_end or (epoch + 1) % self.eval_every == 0:
                record.update(self.evaluate())
            if phase_end or (epoch + 1) % self.gap_every == 0:
                record.update(self.measure_gap())
            self.history.append(record)
            if self.rank == 0:
                with open(self.out / "metrics.jsonl", "a") as file:
                    file.write(json.dumps(record) + "\n")
                log.info(_format(record))
            if self.checkpoint:
                self._save(epoch)
                # A signal during the evaluation or the save: the checkpoint is the epoch's.
                if epoch + 1 < self.recipe.epochs and self._agree()[0]:
                    self._stop(epoch + 1, 0)
                    break

    def train_epoch(self, epoch: int) -> dict | None:
        """Train ``epoch`` (its rest, after a mid-epoch resume) and return its record; None when a
        stop signal ended it after a checkpoint."""
        recipe = self.recipe
        index, phase, _ = self.schedule.phase_at(epoch)
        loader = self.loader = self.schedule.loader_at(epoch)
        operators = self.schedule.operators_at(epoch)
        self.model.train()
        partial, self._partial = self._partial, None
        if partial is not None and partial["epoch"] == epoch:  # resumed mid-epoch: its sums so far
            loss_sum = torch.tensor(float(partial["loss_sum"]), device=self.device)
            seen, lr, before = int(partial["seen"]), partial["lr"], float(partial["elapsed"])
        else:
            loss_sum, seen, lr, before = torch.zeros((), device=self.device), 0, None, 0.0
        start = time.perf_counter()
        self._check_at = (start, self._global_step)
        quiet = self.rank != 0 or not self.progress
        first = loader.iteration  # 0, or the batch a resumed epoch goes on at
        bar = tqdm(loader, desc=f"epoch {epoch} [{phase.name or index}]", disable=quiet, leave=False,
                   total=len(loader), initial=first)  # fmt: skip
        for step, (images, targets) in enumerate(bar, start=first):
            lr = self.schedule.lr_at(epoch, recipe.base_lr(epoch + step / len(loader)))
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            images, soft = apply_operators(
                operators, images, targets, num_classes=self.num_classes, generator=self.generator,
                label_smoothing=recipe.label_smoothing,
            )  # fmt: skip
            with torch.autocast(self.device.type, self.amp) if self.amp else nullcontext():
                loss = soft_cross_entropy(self.model(images), soft)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += loss.detach() * images.shape[0]
            seen += images.shape[0]
            self._global_step += 1
            if self._sample_log is not None:
                self._log_samples(epoch, step, loader.sample_ids)
            if step % 10 == 0 and self.rank == 0:  # .item() syncs: only now and then
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}",
                                img_s=f"{seen / (time.perf_counter() - start):.0f}")  # fmt: skip
            last = step + 1 >= len(loader)
            stop, save = self._between_steps(last)
            if stop or save:
                # After the epoch's last step (a stop only): saved before evaluation, which a
                # resume runs.
                progress = {"epoch": epoch, "step": step + 1, "lr": lr, "loss_sum": float(loss_sum),
                            "seen": seen, "elapsed": before + time.perf_counter() - start}  # fmt: skip
                self._save(epoch - 1, progress)
            if stop:
                bar.close()
                self._stop(epoch, step + 1)
                return None
        elapsed = before + time.perf_counter() - start
        totals = self._reduce(torch.stack([loss_sum, torch.tensor(float(seen), device=self.device)]))
        return {
            "epoch": epoch, "phase": phase.name or str(index), "lr": lr,
            "train_loss": float(totals[0] / totals[1]), "images_per_s": float(totals[1]) / elapsed,
            "epoch_s": elapsed,
        }  # fmt: skip

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.model.eval()
        totals = torch.zeros(4, device=self.device)  # loss sum, top-1, top-5, count
        for images, targets in self.eval_loader:
            with torch.autocast(self.device.type, self.amp) if self.amp else nullcontext():
                logits = self.model(images).float()
            top5 = logits.topk(min(5, self.num_classes), dim=1).indices
            hits = top5 == targets[:, None]
            totals += torch.stack([
                F.cross_entropy(logits, targets, reduction="sum"), hits[:, 0].sum(), hits.any(1).sum(),
                torch.tensor(float(len(targets)), device=self.device),
            ])  # fmt: skip
        loss, top1, top5, count = self._reduce(totals).tolist()
        return {"test_loss": loss / count, "top1": 100 * top1 / count, "top5": 100 * top5 / count}

    def measure_gap(self) -> dict:
        if self.gap_batches is None:
            return {}
        clean, augmented = self.gap_batches
        gap = dalaug.measure_gap(self.module, clean, self.gap_operators, augmented=augmented)
        return {"clean_train_loss": gap.clean, "augmented_train_loss": gap.augmented}

    # --- helpers ------------------------------------------------------------------------------

    def _reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            tensor = tensor.clone()
            dist.all_reduce(tensor)
        return tensor

    # --- stopping and checkpoints --------------------------------------------------------------

    def _between_steps(self, last: bool) -> tuple[bool, bool]:
        """After a step: (stop, checkpoint now), the same on every rank.

        One process checks every step (no cost). Ranks agree by a collective of three integers
        every few steps only (1-3 ms on 2 CPU ranks over gloo: BENCHMARKS.md): as many steps as take a
        tenth of ``stop_grace`` (rank 0 measures), and at every ``checkpoint_steps`` multiple and
        the epoch's last step. The checkpoint due at the last step is the epoch's own."""
        if not self.checkpoint:
            return False, False
        every = self.checkpoint_steps
        steps_due = bool(every) and self._global_step % every == 0
        self._until_check -= 1
        if self.distributed and not (last or steps_due or self._until_check <= 0):
            return False, False
        stop, save = self._agree(time_may_be_due=True)
        return stop, (save or steps_due) and not last

    def _agree(self, time_may_be_due: bool = False) -> tuple[bool, bool]:
        """(a stop signal on any rank, rank 0's checkpoint clock due): one tiny collective of all ranks.
        Also sets the steps until the next agreement (rank 0's measure of the step time)."""
        minutes = self.checkpoint_minutes
        time_due = time_may_be_due and bool(minutes) and time.monotonic() - self._last_save >= 60 * minutes
        stop = self._signals.received is not None
        if not self.distributed:
            return stop, time_due
        interval = self._next_interval() if self.rank == 0 else 0
        flags = torch.tensor([stop, time_due and self.rank == 0, interval], dtype=torch.int64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self._control)
        self._until_check = max(1, int(flags[2]))
        return bool(flags[0]), bool(flags[1])

    def _next_interval(self) -> int:
        now, steps = time.perf_counter(), self._global_step
        (then, before), self._check_at = self._check_at, (now, steps)
        if steps <= before:
            return 1
        step_s = (now - then) / (steps - before)
        return max(1, min(1000, int(self.stop_grace / 10 / max(step_s, 1e-6))))

    def _stop(self, epoch: int, step: int) -> None:
        if self.distributed:
            # No rank leaves before rank 0 wrote the file: torchrun stops the other workers as soon
            # as one exits, and a restart must find the checkpoint of this step.
            dist.barrier(group=self._control)
        received, at = self._signals.received, self._signals.at
        self.stopped = received or "another rank's signal"
        after = f", {time.monotonic() - at:.1f} s after it" if at is not None else ""
        if received is not None:  # on the rank that got it: when, to tell how fast the stop was
            log.warning("rank %d: %s came after global step %d", self.rank, received, self._signals.after)
        if self.rank != 0:
            return
        log.warning(
            "%s: stopped at epoch %d, step %d, checkpoint %s written%s; resume with --resume",
            self.stopped, epoch, step, self.out / "checkpoint.pt", after,
        )  # fmt: skip

    def _save(self, epoch: int, progress: dict | None = None) -> None:
        """Checkpoint after epoch ``epoch`` (-1: none yet), and within the next one where
        ``progress`` says (its step, lr and sums so far): every rank must call it.

        One file, written by rank 0 with every rank's loader state, generator and sums gathered
        into it: one rename replaces the whole checkpoint, so a kill at any moment leaves either
        the last complete one or the new one, never ranks of two different steps."""
        started = time.perf_counter()
        # The loader that just ran (asking the schedule again would set it back to the epoch).
        loader = self.loader
        mine = {"loader": loader.state_dict(), "generator": self.generator.get_state(),
                "loss_sum": progress["loss_sum"] if progress else 0.0,
                "seen": progress["seen"] if progress else 0}  # fmt: skip
        state = {
            "epoch": epoch,
            # The epoch in progress: where it stands, for a resume mid-epoch (None: at a boundary).
            "progress": progress and {k: progress[k] for k in ("epoch", "step", "lr", "elapsed")},
            "global_step": self._global_step,
            "world_size": self.world_size,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "schedule": {"epoch": epoch + 1},  # Schedule.state_dict(): the epoch a resume runs
            "generator": mine["generator"],
            "loader": mine["loader"],
            "history": self.history,
            "config": self.config,
        }
        # each rank's loader, generator and sums differ; rank 0 writes them all
        state["per_rank"] = [mine]
        if self.distributed:
            state["per_rank"] = [None] * self.world_size
            dist.all_gather_object(state["per_rank"], mine)
        if self.rank == 0:
            checkpoint.save(state, self.out / "checkpoint.pt")
        self._last_save = time.monotonic()
        took = time.perf_counter() - started
        if self.rank == 0 and self.stop_grace and took > self.stop_grace / 2:
            log.warning(
                "the checkpoint took %.1f s, more than half of stop_grace (%g s): a save on SIGTERM may "
                "not finish before the SIGKILL", took, self.stop_grace,
            )  # fmt: skip

    def _load(self, path: Path) -> None:
        state = checkpoint.load(path, map_location=self.device)
        # Checkpoints from before the config was recorded go unchecked; their weights still must fit.
        _check_same_run(path, state.get("config", self.config), self.config)
        try:
            self.module.load_state_dict(state["model"])
        except RuntimeError as error:
            reason = str(error).splitlines()[0]
            raise ValueError(f"--resume: {path} holds another model ({reason}); use another --out") from error
        per_rank = [_rank_state(s) for s in state.get("per_rank") or [(state["loader"], state["generator"])]]
        saved_world = int(state.get("world_size", len(per_rank)))
        if saved_world == self.world_size:
            mine = per_rank[self.rank]
            self.generator.set_state(mine["generator"].cpu())
        else:
            self._check_world_size_change(path, saved_world)
            # Any rank's loader state names the epoch's global position: rank 0's, on every rank.
            # The sums of the epoch in progress go on on rank 0 (the record reduces them anyway).
            totals = {k: sum(r[k] for r in per_rank) for k in ("loss_sum", "seen")}
            mine = {**per_rank[0], **(totals if self.rank == 0 else {"loss_sum": 0.0, "seen": 0})}
            # The old ranks' draws belong to them: new ones, seeded by the rank and the step.
            seed = self.recipe.seed * 1009 + self.rank + 7919 * (int(state.get("global_step", 0)) + 1)
            self.generator.manual_seed(seed % 2**64)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.schedule.load_state_dict(state["schedule"])
        self.history = state["history"]
        self.start_epoch = state["epoch"] + 1
        self._global_step = int(state.get("global_step", 0))
        progress = state.get("progress")
        if progress is not None:
            self._partial = {**progress, "loss_sum": mine["loss_sum"], "seen": mine["seen"]}
        if self.start_epoch < self.recipe.epochs:
            loader = self.schedule.loader_at(self.start_epoch)
            # The saved pipeline goes on into the next epoch only when the phase keeps the whole
            # loader configuration; a phase with another one starts its own loader, as it did.
            # Mid-epoch the configuration is the phase's own.
            if mine["loader"]["config"] == loader.config.identity() or progress is not None:
                loader.load_state_dict(mine["loader"])
        where = f"epoch {self.start_epoch}" + (f", step {progress['step']}" if progress else "")
        log.info("resumed from %s at %s", path, where)

    def _check_world_size_change(self, path: Path, saved: int) -> None:
        batch, now = self.recipe.batch_size, self.world_size
        if not self.allow_world_size_change:
            raise ValueError(
                f"--resume: {path} was written by {saved} rank(s), this run has {now}: with the per-rank "
                f"batch ({batch}) kept, the global batch would change from {batch * saved} to {batch * now}; "
                f"resume on {saved} rank(s), or pass --allow-world-size-change to go on (the learning-rate "
                "schedule stays the recipe's, not scaled)"
            )
        if self.rank == 0:
            log.warning(
                "--allow-world-size-change: resuming %s written by %d rank(s) on %d: global batch %d -> %d "
                "(per-rank batch %d kept); the learning rate is not scaled (the recipe's schedule goes on "
                "by epoch); the epoch in progress serves each sample it had not delivered once across the "
                "%d ranks, with new augmentation draws", path, saved, now, batch * saved, batch * now,
                batch, now,
            )  # fmt: skip

    # --- the sample log -----------------------------------------------------------------------

    def _open_sample_log(self) -> None:
        folder = self.out / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        self._sample_log = open(folder / f"rank{self.rank}.jsonl", "a")
        start = {"global_step": self._global_step, "epoch": self.start_epoch, "rank": self.rank,
                 "world_size": self.world_size, "pid": os.getpid()}  # fmt: skip
        self._sample_log.write(json.dumps({"start": start}) + "\n")
        self._sample_log.flush()

    def _log_samples(self, epoch: int, step: int, ids: torch.Tensor | None) -> None:
        line = {"epoch": epoch, "step": step, "global_step": self._global_step,
                "ids": [] if ids is None else ids.tolist()}  # fmt: skip
        self._sample_log.write(json.dumps(line) + "\n")
        self._sample_log.flush()  # in the OS's hands: a SIGKILL loses none of it


def _rank_state(saved) -> dict:
    """A rank's entry of ``per_rank``; checkpoints before mid-epoch saves held (loader, generator)."""
    if isinstance(saved, dict):
        return saved
    loader, generator = saved
    return {"loader": loader, "generator": generator, "loss_sum": 0.0, "seen": 0}


def _format(record: dict) -> str:
    keys = ("epoch", "phase", "lr", "train_loss", "test_loss", "top1", "top5", "clean_train_loss",
            "augmented_train_loss", "images_per_s")  # fmt: skip
    parts = []
    for key in keys:
        if key in record:
            value = record[key]
            parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


def _check_classes(
    train_dir: str | Path, train: list[str], eval_dir: str | Path, evaluation: list[str]
) -> None:
    # A label is an index into the sorted class list: one class more or less shifts every label after it.
    if train != evaluation:
        missing, extra = sorted(set(train) - set(evaluation)), sorted(set(evaluation) - set(train))
        raise ValueError(
            f"--data: {str(train_dir)!r} and {str(eval_dir)!r} must hold the same classes; only in "
            f"{_folder_name(train_dir)}/: {missing or 'none'}, "
            f"only in {_folder_name(eval_dir)}/: {extra or 'none'}"
        )


def _check_num_classes(operators: list, num_classes: int, train_dir: str | Path, data: str | None) -> None:
    counts = sorted({op.num_classes for op in operators if getattr(op, "num_classes", None) is not None})
    if counts and counts != [num_classes]:
        hint = " (no --data given: the embedded digits were used)" if data is None else ""
        raise ValueError(
            f"recipe: its operators have num_classes={', '.join(map(str, counts))}, but "
            f"{str(train_dir)!r} has {num_classes} classes{hint}; give the recipe's --data or fix num_classes"
        )


def _check_same_run(path: Path, saved: dict, now: dict) -> None:
    # Resuming under other settings would splice two schedules (or models) into one run. Where the
    # data lives may change between jobs (copied to each job's local disk): that is no other run.
    keys = (saved.keys() | now.keys()) - {"data", *RUN_KEEPING}
    differing = sorted(key for key in keys if saved.get(key) != now.get(key))
    if differing:
        changes = "; ".join(
            f"{key}: {_short(saved.get(key))} there, {_short(now.get(key))} now" for key in differing
        )
        raise ValueError(f"--resume: {path} was written under other settings ({changes}); use another --out")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)

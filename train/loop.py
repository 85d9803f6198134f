"""The training loop: a plain PyTorch loop over dalaug loaders, asking a dalaug Schedule what to do.

Per epoch: the schedule gives the loader (heavy or clean pipeline), the batch operators and the
learning-rate hint; the loop trains with soft-target cross-entropy, evaluates top-1/top-5, measures
the clean-vs-augmented loss gap on a fixed set of training samples (He et al., Table 2), logs, and
checkpoints atomically. Under ``torchrun`` it runs DDP (NCCL on GPUs, gloo on CPUs); every rank
reads its own shard and only rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import os
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
from dalaug.ops import ManifoldMixup
from dalaug.schedule import unfaded
from train.models import create_model
from train.recipe import Recipe

log = logging.getLogger("dalaug.train")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def soft_cross_entropy(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against soft targets (B, C): the one loss every batch operator feeds."""
    return -(soft * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def data_folders(data: str | None) -> tuple[Path, Path]:
    """``data/train`` and ``data/val`` (or ``data/test``); None: the embedded digits data set."""
    if data is None:
        from dalaug.datasets import write_digits

        return write_digits(Path("data") / "digits")
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"--data: {str(root)!r} is not a directory")
    evaluation = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or evaluation is None:
        raise ValueError(f"--data: {str(root)!r} must hold train/ and val/ (or test/) ImageFolders")
    return root / "train", evaluation


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
        checkpoint: write ``out/checkpoint.pt`` after each epoch (False: a run that is not resumed).
        progress: show a progress bar per epoch.
    """

    def __init__(
        self, recipe: Recipe, out: str | Path, device: str | None = None, resume: bool = False, *,
        eval_every: int = 1, gap_every: int | None = None, checkpoint: bool = True, progress: bool = True,
    ):  # fmt: skip
        gap_every = eval_every if gap_every is None else gap_every
        for name, every in (("eval_every", eval_every), ("gap_every", gap_every)):
            if isinstance(every, bool) or not isinstance(every, int) or every < 1:
                raise ValueError(f"{name}: expected a positive int, got {every!r}")
        self.recipe = recipe
        self.eval_every, self.gap_every = eval_every, gap_every
        self.checkpoint, self.progress = checkpoint, progress
        self.out = Path(out)
        # Before the loaders are built: a file in the way would only show when the run writes.
        blocking = next((p for p in (self.out, *self.out.parents) if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise ValueError(f"--out: {str(blocking)!r} is a file; give a folder for the run")
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if device in (None, "cuda") and torch.cuda.is_available():
            device = f"cuda:{local_rank}"  # each rank its own GPU, also for a bare "cuda"
        self.device = resolve_device(device)
        on_gpu = self.device.type == "cuda"
        if on_gpu:
            torch.cuda.set_device(self.device)  # before the process group: NCCL binds to it
            torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels once
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if on_gpu else "gloo", device_id=self.device if on_gpu else None)
        self.rank = dist.get_rank() if self.distributed else 0
        torch.manual_seed(recipe.seed)

        train_dir, eval_dir = data_folders(recipe.data)
        first = recipe.phases[0]
        self.amp = AMP_DTYPES.get(recipe.precision) if on_gpu else None
        self.memory_format = (
            torch.channels_last if on_gpu and recipe.channels_last else torch.contiguous_format
        )
        # DALI emits the layout and (for fp16) the dtype the model takes: no conversion pass per step.
        emitted = dict(memory_format=self.memory_format, dtype=self.amp or torch.float32, device=self.device)
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
        # What config.json records and a resume must match: the settings as this run uses them.
        self.config = {f.name: _jsonable(getattr(recipe, f.name)) for f in fields(recipe)}
        self.config.update(
            epochs=recipe.epochs,
            data=str(train_dir.parent.resolve()),
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
        """Train from the current epoch to the end (or up to epoch ``until``); return the history."""
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(self.config, indent=2))
            # The checkpoint's history is the truth: a run killed after logging an epoch but
            # before checkpointing it must not log that epoch twice.
            (self.out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.history))
        self.schedule.load_state_dict({"epoch": self.start_epoch})
        for epoch in self.schedule:  # the schedule's cursor moves on: its state is the next epoch
            if until is not None and epoch >= until:
                self.schedule.load_state_dict({"epoch": epoch})
                break
            record = self.train_epoch(epoch)
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
        self.schedule.close()
        for hooks in self.hooks:
            hooks.detach()
        self.hooks = []
        return self.history

    def train_epoch(self, epoch: int) -> dict:
        recipe = self.recipe
        index, phase, _ = self.schedule.phase_at(epoch)
        loader = self.loader = self.schedule.loader_at(epoch)
        operators = self.schedule.operators_at(epoch)
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        seen, start = 0, time.perf_counter()
        quiet = self.rank != 0 or not self.progress
        bar = tqdm(loader, desc=f"epoch {epoch} [{phase.name or index}]", disable=quiet, leave=False)
        for step, (images, targets) in enumerate(bar):
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
            if step % 10 == 0 and self.rank == 0:  # .item() syncs: only now and then
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}",
                                img_s=f"{seen / (time.perf_counter() - start):.0f}")  # fmt: skip
        elapsed = time.perf_counter() - start
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

    def _save(self, epoch: int) -> None:
        # The loader that just ran the epoch (asking the schedule again would set it back to it).
        loader = self.loader
        state = {
            "epoch": epoch,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "schedule": self.schedule.state_dict(),
            "generator": self.generator.get_state(),
            "loader": loader.state_dict(),
            "history": self.history,
            "config": self.config,
        }
        if self.distributed:
            # each rank's loader and generator differ; rank 0 writes them all
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (state["loader"], state["generator"]))
            state["loader"], state["generator"] = gathered[0]
            state["per_rank"] = gathered
        if self.rank == 0:
            checkpoint.save(state, self.out / "checkpoint.pt")

    def _load(self, path: Path) -> None:
        state = checkpoint.load(path, map_location=self.device)
        # Checkpoints from before the config was recorded go unchecked; their weights still must fit.
        _check_same_run(path, state.get("config", self.config), self.config)
        try:
            self.module.load_state_dict(state["model"])
        except RuntimeError as error:
            reason = str(error).splitlines()[0]
            raise ValueError(f"--resume: {path} holds another model ({reason}); use another --out") from error
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.schedule.load_state_dict(state["schedule"])
        loader_state, generator_state = state.get("per_rank", [(state["loader"], state["generator"])])[
            self.rank
        ]
        self.generator.set_state(generator_state.cpu())
        self.history = state["history"]
        self.start_epoch = state["epoch"] + 1
        if self.start_epoch < self.recipe.epochs:
            loader = self.schedule.loader_at(self.start_epoch)
            # The saved pipeline goes on into the next epoch only when the phase keeps the whole
            # loader configuration; a phase with another one starts its own loader, as it did.
            if loader_state["config"] == loader.config.identity():
                loader.load_state_dict(loader_state)
        log.info("resumed from %s at epoch %d", path, self.start_epoch)


def _format(record: dict) -> str:
    keys = ("epoch", "phase", "lr", "train_loss", "test_loss", "top1", "top5", "clean_train_loss",
            "augmented_train_loss", "images_per_s")  # fmt: skip
    parts = []
    for key in keys:
        if key in record:
            value = record[key]
            parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


def _check_classes(train_dir: Path, train: list[str], eval_dir: Path, evaluation: list[str]) -> None:
    # A label is an index into the sorted class list: one class more or less shifts every label after it.
    if train != evaluation:
        missing, extra = sorted(set(train) - set(evaluation)), sorted(set(evaluation) - set(train))
        raise ValueError(
            f"--data: {str(train_dir)!r} and {str(eval_dir)!r} must hold the same classes; only in "
            f"{train_dir.name}/: {missing or 'none'}, only in {eval_dir.name}/: {extra or 'none'}"
        )


def _check_num_classes(operators: list, num_classes: int, train_dir: Path, data: str | None) -> None:
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
    keys = (saved.keys() | now.keys()) - {"data"}
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

"""Evidence: the seed papers' comparisons, re-run on real data with dalaug, in one command.

Run: ``python -m benchmarks.evidence [--data PATH] [--seeds 5] [--epochs 40] [--out EXPERIMENTS.md]``
(``--quick``: 1 seed, 4 epochs, a smoke test). It writes a Markdown report and a plot next to it.

The claims it checks:

- Removal and mixing: Cutout (partial feature removal) and Mixup (feature mixing) each beat no
  batch augmentation; CutMix and SaliencyMix, which do both, beat either ("Towards Understanding
  Why Data Augmentation Improves Generalization", arXiv 2502.08940; "Provable Benefit of Cutout and
  CutMix for Feature Learning", arXiv 2410.23672).
- Refinement: training N epochs with heavy augmentation and the last M on the clean pipeline beats
  N + M epochs of heavy augmentation, and lowers the model's loss on clean training data, which heavy
  augmentation leaves high (He et al., "Data Augmentation Revisited", 2019, Algorithm 1, Table 2).
- Early-stopped Mixup: Mixup's benefit comes early, so Mixup for the first K epochs only does as
  well as Mixup throughout (Zou et al., "The Benefits of Mixup for Feature Learning", ICML 2023).

The grid: {none, Cutout, Mixup, CutMix, SaliencyMix} x {augmented for all epochs, last 20% of the
epochs refined on the clean pipeline}, plus Mixup for the first half of the epochs only; every cell
with the same total epochs, seeds, data order, standard augmentation (random-resized-crop, no flip)
and learning-rate schedule. The default data set is scikit-learn's 1,797 handwritten digits, 25
training images per class (250), the other 1,547 for test, at 16 px; ``--data`` runs the same grid
on any ImageFolder with ``train/`` and ``val/`` (or ``test/``). "none" with refinement is the same
run as without (a clean phase after a clean phase changes nothing), so it is trained once.

Each cell is a :class:`train.recipe.Recipe` (phases from :func:`dalaug.refine` and
:func:`dalaug.early_stop`) run by the lean loop :func:`run_cell`, which does what
``train.loop.Trainer.train_epoch`` does per epoch (a :class:`dalaug.Schedule` hands out the loader,
the operators and the learning rate; the operators draw from one seeded generator; the loss is
``train.loop.soft_cross_entropy``) but evaluates only at the end and measures the gap
(:func:`dalaug.measure_gap`) only at the two epochs the report needs. Not ``Trainer`` itself, for
three reasons, measured on this data (CPU, one thread): Trainer evaluates on the whole test set,
measures the gap and writes a checkpoint after every epoch, which took 1.1 s of each 1.4 s epoch
(the training itself 0.3 s), about 37 core-minutes of extras over the 50 runs of 40 epochs, more
than the whole grid takes here; it builds its models through ``train.models.create_model``, which
offers no small CNN; and it builds four DALI pipelines per run where this grid reuses the
evaluation pipeline for every run of a worker process. Runs are spread over ``--workers`` spawned
processes (DALI pipelines cannot be pickled, so each process builds its own loaders), each on one
thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

import dalaug
from benchmarks.report import machine, markdown_table
from dalaug.sources import resolve_source
from train.loop import data_folders, soft_cross_entropy
from train.recipe import Recipe

METHODS = ("none", "cutout", "mixup", "cutmix", "saliencymix")
LABELS = {
    "none": "none",
    "cutout": "Cutout",
    "mixup": "Mixup",
    "cutmix": "CutMix",
    "saliencymix": "SaliencyMix",
}
VARIANTS = ("augmented", "refined", "early_stop")
DIGITS_PER_CLASS = 25
DIGITS_SIZE = 16
REFINE_SHARE = 0.2  # He et al. refine 50 of 400 epochs on CIFAR; a little more here, at few epochs
STOP_SHARE = 0.5  # Zou et al. stop Mixup part-way; half of the epochs here
GAP_SAMPLES = 256


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every cell of the grid shares (plain values only: it travels to spawned workers)."""

    train_dir: str
    eval_dir: str
    epochs: int
    refine_epochs: int
    stop_epochs: int
    crop: int
    scale: tuple[float, float] = (0.5, 1.0)
    flip: bool = False
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    width: int = 16
    alpha: float = 1.0


@dataclasses.dataclass(frozen=True)
class Cell:
    """One configuration of the grid: a batch operator and what the schedule does with it."""

    method: str
    variant: str  # "augmented" (all epochs), "refined" (last epochs clean), "early_stop"

    @property
    def label(self) -> str:
        if self.variant == "early_stop":
            return f"{LABELS[self.method]}, early-stopped"
        return LABELS[self.method] + (" + refinement" if self.variant == "refined" else "")


def grid() -> list[Cell]:
    """The configurations, in report order; ``none + refinement`` is left out (same run as ``none``)."""
    cells = [Cell(m, v) for m in METHODS for v in ("augmented", "refined") if (m, v) != ("none", "refined")]
    return cells + [Cell("mixup", "early_stop")]


class SmallCNN(nn.Module):
    """Three 3x3 conv layers (width, 2 width, 2 width) with batch norm, one pooling, a linear head."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def operators(method: str, num_classes: int, settings: Settings) -> list[dalaug.ops.BatchOp]:
    """The papers' default settings: α = 1, p = 1, a Cutout hole of half the image side."""
    alpha = settings.alpha
    if method == "none":
        return []
    if method == "cutout":
        return [dalaug.Cutout(size=max(1, settings.crop // 2), num_classes=num_classes)]
    if method == "mixup":
        return [dalaug.Mixup(alpha=alpha, num_classes=num_classes)]
    if method == "cutmix":
        return [dalaug.CutMix(alpha=alpha, num_classes=num_classes)]
    if method == "saliencymix":
        return [dalaug.SaliencyMix(alpha=alpha, num_classes=num_classes)]
    raise ValueError(f"method: expected one of {METHODS}, got {method!r}")


def recipe(cell: Cell, seed: int, num_classes: int, settings: Settings) -> Recipe:
    """The cell as a Recipe: its phases, and the optimizer and schedule every cell shares."""
    ops = operators(cell.method, num_classes, settings)
    total = settings.epochs
    if cell.variant == "augmented":
        phases = [dalaug.Phase(total, operators=ops, name="augmented")]
    elif cell.variant == "refined":
        heavy = dalaug.Phase(total - settings.refine_epochs, operators=ops, name="augmented")
        phases = dalaug.refine(heavy, settings.refine_epochs)
    elif cell.variant == "early_stop":
        phases = dalaug.early_stop(dalaug.Phase(total, operators=ops, name="augmented"), settings.stop_epochs)
    else:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {cell.variant!r}")
    return Recipe(
        name=f"{cell.method}-{cell.variant}-seed{seed}",
        model="SmallCNN (benchmarks.evidence)",
        phases=phases,
        data=settings.train_dir,
        model_kwargs={"width": settings.width},
        crop=settings.crop,
        eval_resize=settings.crop,
        scale=settings.scale,
        flip=settings.flip,
        batch_size=settings.batch_size,
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        lr_schedule="cosine",
        precision="fp32",
        gap_samples=GAP_SAMPLES,
        seed=seed,
    )


# --- one run ---------------------------------------------------------------------------------------

# Per process: the evaluation loader (one pipeline for all the process's runs) and, per seed, the
# clean training batches the gap is measured on.
_cache: dict = {}


def _eval_loader(settings: Settings) -> dalaug.Loader:
    key = ("eval", settings.eval_dir, settings.crop, settings.batch_size)
    if key not in _cache:
        _cache[key] = dalaug.Loader(
            settings.eval_dir,
            256,
            train=False,
            crop=settings.crop,
            resize=settings.crop,
            device="cpu",
            num_threads=1,
        )
    return _cache[key]


def _gap_batches(train: dalaug.Loader, seed: int, settings: Settings) -> list:
    """Clean training batches (the clean pipeline, epoch 0) of at most GAP_SAMPLES samples.

    A random subset, not the first samples: an ImageFolder lists its samples class by class.
    """
    key = ("gap", settings.train_dir, seed)
    if key not in _cache:
        samples = train.samples
        if len(samples) > GAP_SAMPLES:
            order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))
            samples = samples.without(order[GAP_SAMPLES:].tolist())
        loader = dalaug.Loader(
            samples,
            min(settings.batch_size, len(samples)), train=True,
            crop=settings.crop,
            scale=settings.scale,
            flip=settings.flip,
            seed=seed,
            device="cpu",
            num_threads=1,
        )
        _cache[key] = list(loader)
        loader.close()
    return _cache[key]


def run_cell(task: tuple[Cell, int, Settings]) -> dict:
    """:func:`train_cell` on one torch thread, restoring the caller's thread count afterwards."""
    threads = torch.get_num_threads()
    try:
        return train_cell(task)
    finally:
        torch.set_num_threads(threads)


def train_cell(task: tuple[Cell, int, Settings]) -> dict:
    """Train one cell with one seed; return its test accuracy and gaps.

    Returns:
        ``{"method", "variant", "seed", "top1", "test_loss", "train_loss", "gap_heavy", "gap_end",
        "seconds"}``: ``gap_heavy`` is the (clean, augmented) training loss at the end of the last
        epoch with operators, ``gap_end`` after the last epoch (None when that is the same epoch).
    """
    cell, seed, settings = task
    start = time.perf_counter()
    torch.set_num_threads(1)
    train = dalaug.Loader(
        settings.train_dir,
        settings.batch_size, train=True,
        crop=settings.crop,
        scale=settings.scale,
        flip=settings.flip,
        seed=seed,
        device="cpu",
        num_threads=1,
    )
    num_classes = len(train.classes)
    spec = recipe(cell, seed, num_classes, settings)
    heavy_ops = list(spec.phases[0].operators)
    heavy_end = spec.phases[0].epochs - 1  # the last epoch with the operators
    gap_batches = _gap_batches(train, seed, settings)

    torch.manual_seed(seed)
    model = SmallCNN(num_classes, **spec.model_kwargs)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
    )
    generator = torch.Generator().manual_seed(seed * 1009)
    gaps: dict[int, dalaug.Gap] = {}
    with dalaug.Schedule(spec.phases, train) as schedule:
        for epoch in schedule:
            loader, ops = schedule.loader_at(epoch), schedule.operators_at(epoch)
            model.train()
            loss_sum, seen = 0.0, 0
            for step, (images, targets) in enumerate(loader):
                lr = schedule.lr_at(epoch, spec.base_lr(epoch + step / len(loader)))
                for group in optimizer.param_groups:
                    group["lr"] = lr
                soft = dalaug.soft_targets(targets, num_classes)
                for op in ops:
                    images, soft = op(images, soft, generator=generator)
                loss = soft_cross_entropy(model(images), soft)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(images)
                seen += len(images)
            if epoch in (heavy_end, spec.epochs - 1):
                gaps[epoch] = dalaug.measure_gap(model, gap_batches, heavy_ops, seed=seed)
    top1, test_loss = evaluate(model, _eval_loader(settings))
    end = gaps[spec.epochs - 1]
    return {
        "method": cell.method,
        "variant": cell.variant,
        "seed": seed,
        "top1": top1,
        "test_loss": test_loss,
        "train_loss": loss_sum / max(seen, 1),
        "gap_heavy": _gap_values(gaps[heavy_end]),
        "gap_end": None if heavy_end == spec.epochs - 1 else _gap_values(end),
        "seconds": time.perf_counter() - start,
    }


def _gap_values(gap: dalaug.Gap) -> dict:
    return {"clean": gap.clean, "augmented": gap.augmented, "gap": gap.gap, "samples": gap.samples}


@torch.no_grad()
def evaluate(model: nn.Module, loader: dalaug.Loader) -> tuple[float, float]:
    """Top-1 accuracy (%) and mean cross-entropy over the whole evaluation loader."""
    model.eval()
    hits = count = 0
    loss = 0.0
    for images, targets in loader:
        logits = model(images)
        hits += int((logits.argmax(1) == targets).sum())
        loss += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
        count += len(targets)
    return 100.0 * hits / count, loss / count


def _clear_cache() -> None:
    for value in _cache.values():
        if isinstance(value, dalaug.Loader):
            value.close()
    _cache.clear()


def _init_worker() -> None:
    torch.set_num_threads(1)


def run_grid(
    settings: Settings, seeds: int, workers: int, progress: Callable[[dict, int, int], None] | None = None
) -> list[dict]:
    """Every cell with seeds 0 .. seeds-1; in ``workers`` spawned processes when more than one."""
    tasks = [(cell, seed, settings) for seed in range(seeds) for cell in grid()]
    # The slowest operator first, so that no worker is left with a long run at the end.
    tasks.sort(key=lambda t: t[0].method != "saliencymix")
    results = []
    if workers <= 1:
        for task in tasks:
            results.append(run_cell(task))
            if progress:
                progress(results[-1], len(results), len(tasks))
        _clear_cache()
        return results
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker) as pool:
        for result in pool.imap_unordered(run_cell, tasks, chunksize=1):
            results.append(result)
            if progress:
                progress(result, len(results), len(tasks))
    return results


# --- statistics and the report -------------------------------------------------------------------

# Two-sided 95% quantiles of Student's t for 1..10 degrees of freedom; above, 1.96 + 2.5/df is within
# 0.005 of the exact value.
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def t95(df: int) -> float:
    return T95[df - 1] if df <= len(T95) else 1.96 + 2.5 / df


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def _pm(values: Sequence[float], digits: int) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A paired comparison over seeds (the same seed: same initial weights and data order)."""

    diffs: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.diffs)

    @property
    def resolved(self) -> bool | None:
        """True: the mean difference is beyond the 95% paired t interval; None: too few seeds."""
        n = len(self.diffs)
        if n < 2:
            return None
        se = statistics.stdev(self.diffs) / math.sqrt(n)
        if se == 0:
            return self.mean != 0
        return abs(self.mean) / se > t95(n - 1)

    def describe(self, unit: str = " points") -> str:
        n = len(self.diffs)
        wins = sum(d > 0 for d in self.diffs)
        if n < 2:
            return f"{self.mean:+.2f}{unit} (one seed: no test)"
        half = t95(n - 1) * statistics.stdev(self.diffs) / math.sqrt(n)
        return f"{self.mean:+.2f}{unit} (95% CI ± {half:.2f}; higher in {wins} of {n} seeds)"


def compare(
    results: list[dict],
    a: tuple[str, str],
    b: tuple[str, str],
    value: Callable[[dict], float] = lambda r: r["top1"],
) -> Comparison:
    """Paired differences ``value(a) - value(b)`` over the seeds both cells ran (default: top-1)."""
    by = {(r["method"], r["variant"], r["seed"]): r for r in results}
    seeds = sorted({s for (m, v, s) in by if (m, v) == a} & {s for (m, v, s) in by if (m, v) == b})
    return Comparison(tuple(value(by[(*a, s)]) - value(by[(*b, s)]) for s in seeds))


def _final_clean_loss(run: dict) -> float:
    """The clean training loss after the last epoch (gap_end is None when that ends the heavy phase)."""
    return (run["gap_end"] or run["gap_heavy"])["clean"]


def _verdict(comparison: Comparison, claim_holds_if_positive: bool = True) -> str:
    resolved = comparison.resolved
    if resolved is None:
        return "not tested (one seed)"
    if not resolved:
        return "not resolved: the difference is within the seed-to-seed noise"
    return "holds" if (comparison.mean > 0) == claim_holds_if_positive else "the opposite holds"


def reading(results: list[dict]) -> list[str]:
    """One bullet per claim, with the paired differences that decide it."""
    aug = "augmented"
    lines = []

    def claim(text: str, pairs: list[tuple[str, tuple, tuple]]) -> None:
        parts = []
        for name, a, b in pairs:
            comparison = compare(results, a, b)
            parts.append(f"{name}: {comparison.describe()}: **{_verdict(comparison)}**")
        lines.append(f"- {text}\n" + "\n".join(f"  - {p}" for p in parts))

    claim(
        "Partial feature removal helps (arXiv 2502.08940; arXiv 2410.23672)",
        [("Cutout − none", ("cutout", aug), ("none", aug))],
    )
    claim(
        "Feature mixing helps (arXiv 2502.08940; Zou et al. 2023)",
        [("Mixup − none", ("mixup", aug), ("none", aug))],
    )
    claim(
        "Removal and mixing together help most: CutMix and SaliencyMix beat Cutout and Mixup "
        "(arXiv 2502.08940; arXiv 2410.23672)",
        [
            (f"{LABELS[x]} − {LABELS[y]}", (x, aug), (y, aug))
            for x in ("cutmix", "saliencymix")
            for y in ("cutout", "mixup")
        ],
    )
    claim(
        "A clean refinement phase raises accuracy at equal total epochs (He et al. 2019)",
        [(f"{LABELS[m]}: refined − not refined", (m, "refined"), (m, aug)) for m in METHODS if m != "none"],
    )
    # He et al., Table 2: heavy augmentation leaves the clean training loss R(f|P) high and its
    # augmented loss R(f|P_aug) far above it; refinement lowers R(f|P). dalaug.gap's docstring also
    # expects the gap R(f|P_aug) - R(f|P) to shrink during refinement; both are checked.
    gap_parts, clean_parts, shrink_parts = [], [], []
    for m in METHODS[1:]:
        rows = [r for r in results if (r["method"], r["variant"]) == (m, "refined")]
        if not rows:
            continue
        heavy = Comparison(tuple(r["gap_heavy"]["gap"] for r in rows))
        gap_parts.append(f"{LABELS[m]}: {heavy.describe(' nats')}: **{_verdict(heavy)}**")
        clean = compare(results, (m, "refined"), (m, aug), _final_clean_loss)
        clean_parts.append(
            f"{LABELS[m]}: refined − not refined {clean.describe(' nats')}: "
            f"**{_verdict(clean, claim_holds_if_positive=False)}**"
        )
        change = Comparison(tuple(r["gap_end"]["gap"] - r["gap_heavy"]["gap"] for r in rows))
        shrink_parts.append(
            f"{LABELS[m]}: after − before {change.describe(' nats')}: "
            f"**{_verdict(change, claim_holds_if_positive=False)}**"
        )
    for text, parts in (
        (
            "Heavy augmentation leaves a gap: augmented minus clean training loss > 0 at the end of the "
            "augmented phase (He et al. 2019, Table 2)",
            gap_parts,
        ),
        (
            "Refinement lowers the clean training loss (the empirical risk) at equal epochs: final clean "
            "training loss, refined minus not refined, < 0 (He et al. 2019, Table 2)",
            clean_parts,
        ),
        (
            "The gap shrinks during refinement (as `dalaug.gap` expects): gap after refinement minus gap "
            "at the end of the augmented phase, same runs, < 0",
            shrink_parts,
        ),
    ):
        lines.append(f"- {text}\n" + "\n".join(f"  - {p}" for p in parts))
    stopped = compare(results, ("mixup", "early_stop"), ("mixup", aug))
    if stopped.resolved is None:
        verdict = _verdict(stopped)
    elif not stopped.resolved:
        verdict = "holds: no difference beyond the seed-to-seed noise"
    elif stopped.mean > 0:
        verdict = "holds: early-stopped Mixup is better"
    else:
        verdict = "does not hold: early-stopped Mixup is worse"
    lines.append(
        "- Early-stopped Mixup does as well as Mixup throughout (Zou et al. 2023)\n"
        f"  - early-stopped − Mixup: {stopped.describe()}: **{verdict}**"
    )
    means = {
        cell: statistics.fmean(
            r["top1"] for r in results if (r["method"], r["variant"]) == (cell.method, cell.variant)
        )
        for cell in grid()
        if any((r["method"], r["variant"]) == (cell.method, cell.variant) for r in results)
    }
    ranking = sorted(means, key=means.get, reverse=True)
    lines.append(
        "- Ranking by mean accuracy (the papers put CutMix and SaliencyMix on top, and each refined cell "
        "above its unrefined one): " + ", ".join(f"{cell.label} {means[cell]:.2f}" for cell in ranking)
    )
    return lines


def summary_rows(results: list[dict]) -> list[dict]:
    """Per cell: accuracies and gaps over seeds, in grid order (``none + refinement`` copied)."""
    rows = []
    for cell in grid():
        runs = [r for r in results if (r["method"], r["variant"]) == (cell.method, cell.variant)]
        if not runs:
            continue
        rows.append({"cell": cell, "runs": runs})
        if cell == Cell("none", "augmented"):
            rows.append({"cell": Cell("none", "refined"), "runs": runs, "same_as": cell})
    return rows


def write_plot(results: list[dict], path: Path) -> Path:
    """Accuracy per cell (mean ± std) and the gap at the end of the augmented phase and at the end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, gap_ax) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.38
    colours = {"augmented": "tab:blue", "refined": "tab:orange", "early_stop": "tab:green"}
    names = {"augmented": "augmented throughout", "refined": "+ refinement", "early_stop": "early-stopped"}

    def bars(axis, x, values, variant, seen):
        mean, std = mean_std(values)
        axis.bar(
            x,
            mean,
            width,
            yerr=0 if math.isnan(std) else std,
            capsize=3,
            color=colours[variant],
            label=None if variant in seen else names[variant],
        )
        seen.add(variant)

    seen: set = set()
    for i, method in enumerate(METHODS):
        # "none" has one bar: refining it is the same run.
        pairs = (
            ((0.0, "augmented"),) if method == "none" else ((-width / 2, "augmented"), (width / 2, "refined"))
        )
        for offset, variant in pairs:
            values = [r["top1"] for r in results if (r["method"], r["variant"]) == (method, variant)]
            if values:
                bars(acc_ax, i + offset, values, variant, seen)
    stopped = [r["top1"] for r in results if (r["method"], r["variant"]) == ("mixup", "early_stop")]
    if stopped:
        bars(acc_ax, len(METHODS), stopped, "early_stop", seen)
    tops = [r["top1"] for r in results]
    acc_ax.set_ylim(max(0.0, min(tops) - 5), min(100.0, max(tops) + 3))
    acc_ax.set_xticks(
        range(len(METHODS) + 1), [LABELS[m] for m in METHODS] + ["Mixup\nearly-stop"], fontsize=8
    )
    acc_ax.set_ylabel("test top-1 (%)")
    acc_ax.set_title("accuracy, mean ± std over seeds")
    acc_ax.legend(fontsize=8, loc="lower right")

    gap_cells = [(m, "refined") for m in METHODS[1:]] + [("mixup", "early_stop")]
    seen = set()
    for i, (method, variant) in enumerate(gap_cells):
        rows = [r for r in results if (r["method"], r["variant"]) == (method, variant) and r["gap_end"]]
        if not rows:
            continue
        for offset, key, colour, label in (
            (-width / 2, "gap_heavy", "tab:red", "end of augmented phase"),
            (width / 2, "gap_end", "tab:gray", "end of training (clean)"),
        ):
            mean, std = mean_std([r[key]["gap"] for r in rows])
            gap_ax.bar(
                i + offset,
                mean,
                width,
                yerr=0 if math.isnan(std) else std,
                capsize=3,
                color=colour,
                label=None if key in seen else label,
            )
            seen.add(key)
    gap_ax.set_xticks(
        range(len(gap_cells)),
        [LABELS[m] + ("\nearly-stop" if v == "early_stop" else "") for m, v in gap_cells],
        fontsize=8,
    )
    gap_ax.axhline(0, color="black", linewidth=0.8)
    gap_ax.set_ylabel("augmented − clean train loss")
    gap_ax.set_title("distribution gap before / after the clean phase")
    gap_ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def render(results: list[dict], settings: Settings, meta: dict, plot: Path) -> str:
    """The Markdown report: setup, table, the claims' reading, plot, per-seed numbers."""
    seeds = sorted({r["seed"] for r in results})
    header = [
        "method",
        "refinement",
        "test top-1 (%)",
        "gap, end of augmented phase",
        "gap after refinement",
        "last-epoch train loss",
    ]
    table = []
    for row in summary_rows(results):
        cell, runs = row["cell"], row["runs"]
        refinement = {
            "augmented": "no",
            "refined": f"last {settings.refine_epochs} epochs",
            "early_stop": f"Mixup stops after epoch {settings.stop_epochs}",
        }[cell.variant]
        if "same_as" in row:
            table.append([LABELS[cell.method], refinement, "same run as above", "—", "—", "—"])
            continue
        heavy = "—" if cell.method == "none" else _pm([r["gap_heavy"]["gap"] for r in runs], 3)
        end = (
            "—"
            if cell.method == "none" or runs[0]["gap_end"] is None
            else _pm([r["gap_end"]["gap"] for r in runs], 3)
        )
        table.append(
            [
                LABELS[cell.method],
                refinement,
                _pm([r["top1"] for r in runs], 2),
                heavy,
                end,
                _pm([r["train_loss"] for r in runs], 3),
            ]
        )
    per_seed = [
        [
            r["method"],
            r["variant"],
            r["seed"],
            f"{r['top1']:.2f}",
            f"{r['test_loss']:.3f}",
            f"{r['gap_heavy']['clean']:.3f} / {r['gap_heavy']['augmented']:.3f}",
            "—" if r["gap_end"] is None else f"{r['gap_end']['clean']:.3f} / {r['gap_end']['augmented']:.3f}",
            f"{r['seconds']:.1f}",
        ]
        for r in sorted(
            results, key=lambda r: (METHODS.index(r["method"]), VARIANTS.index(r["variant"]), r["seed"])
        )
    ]
    heavy_epochs = settings.epochs - settings.refine_epochs
    lines = [
        "# Evidence: removal, mixing, refinement and early-stopped Mixup on real data",
        "",
        f"Written by `{meta['command']}` on {meta['date']}; {meta['machine']}, {meta['workers']} worker "
        f"process(es) of one thread; {meta['runs']} runs in {meta['runtime'] / 60:.1f} min. Rerun the "
        "command to regenerate this file and the plot; nothing here was edited by hand.",
        "",
        "## Setup",
        "",
        f"- Data: {meta['data']}: {meta['train_size']} training images, {meta['eval_size']} test "
        f"images, {meta['classes']} classes, {settings.crop} px.",
        f"- Model: a small CNN (3 conv layers, {settings.width}-{2 * settings.width} channels, batch "
        "norm, one max-pool, global average pool, linear head), trained from scratch on the CPU.",
        f"- Training: {settings.epochs} epochs in every cell; SGD, momentum {settings.momentum}, weight "
        f"decay {settings.weight_decay}, batch {settings.batch_size}, learning rate {settings.lr} on a "
        "per-batch cosine schedule to 0 (the refinement and the epochs after early stopping continue "
        "the same schedule, so they run at a small rate, as He et al. refine). Soft-target "
        "cross-entropy.",
        f"- Standard augmentation in every cell and phase: random-resized-crop, area "
        f"{settings.scale[0]}-{settings.scale[1]}, {'with' if settings.flip else 'no'} flips. Test: "
        f"the whole image resized to {settings.crop} px.",
        f"- Batch operators (dalaug's defaults, α = {settings.alpha}, p = 1, one λ per batch for Mixup "
        f"and CutMix, per sample for SaliencyMix): Cutout with one {max(1, settings.crop // 2)} px "
        "hole; Mixup; CutMix; SaliencyMix (spectral-residual saliency).",
        f"- Refinement (He et al., Algorithm 1, via `dalaug.refine`): the operators for "
        f"{heavy_epochs} epochs, then {settings.refine_epochs} epochs of the same pipeline without "
        f"them. Early-stopped Mixup (`dalaug.early_stop`): Mixup for the first {settings.stop_epochs} "
        "epochs, then none.",
        f"- Seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} per cell): one seed fixes the weights' "
        "initialisation, the loader's order and crops, and the operators' random stream, so two cells "
        "with the same seed differ only in their schedule; comparisons below are paired by seed.",
        f"- Gap (He et al., Table 2): `dalaug.measure_gap` on {meta['gap_samples']} training samples "
        "through the clean pipeline, the cell's operators applied with a fixed seed: mean "
        "cross-entropy on the augmented version minus that on the clean version, in nats. Measured "
        "after the last epoch with the operators and after the last epoch.",
        "",
        "## Results",
        "",
        f"Mean ± standard deviation over {len(seeds)} seed(s).",
        "",
        markdown_table(header, table),
        "",
        "## The papers' claims, here",
        "",
        "A claim is marked as holding when the mean paired difference lies outside its 95% "
        "confidence interval (paired t over seeds); otherwise it is not resolved at this number of "
        "seeds. Differences in accuracy points.",
        "",
        *reading(results),
        "",
        f"![accuracy and gap]({plot.name})",
        "",
        "<details><summary>Every run</summary>",
        "",
        markdown_table(
            [
                "method",
                "variant",
                "seed",
                "top-1 (%)",
                "test loss",
                "clean / augmented loss, end of augmented phase",
                "clean / augmented loss, end",
                "s",
            ],
            per_seed,
        ),
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.evidence", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", help="ImageFolder root with train/ and val/ (or test/); default: digits")
    parser.add_argument("--seeds", type=int, help="seeds per cell (default 5; --quick: 1)")
    parser.add_argument("--epochs", type=int, help="total epochs of every cell (default 40; --quick: 4)")
    parser.add_argument("--crop", type=int, default=DIGITS_SIZE, help="image side in pixels (default 16)")
    parser.add_argument("--flip", action="store_true", help="random horizontal flips (off: digits)")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, len(os.sched_getaffinity(0))),
        help="processes running cells in parallel (default: up to 2)",
    )
    parser.add_argument(
        "--out",
        help="the Markdown report (default EXPERIMENTS.md; --quick: "
        "runs/evidence-quick/EXPERIMENTS.md); the plot goes next to it as <name>.png",
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 4 epochs: a smoke test")
    args = parser.parse_args(argv)
    args.seeds = args.seeds if args.seeds is not None else (1 if args.quick else 5)
    args.epochs = args.epochs if args.epochs is not None else (4 if args.quick else 40)
    default_out = "runs/evidence-quick/EXPERIMENTS.md" if args.quick else "EXPERIMENTS.md"
    args.out = Path(args.out or default_out)
    for name in ("seeds", "crop", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: expected a positive int, got {getattr(args, name)}")
    if args.epochs < 2:
        parser.error(f"--epochs: expected at least 2 (an augmented and a clean phase), got {args.epochs}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.data is None:
        from dalaug.datasets import write_digits

        root = Path("data") / f"digits-{DIGITS_PER_CLASS}pc-{DIGITS_SIZE}px"
        train_dir, eval_dir = write_digits(root, train_per_class=DIGITS_PER_CLASS, size=DIGITS_SIZE, seed=0)
        data = (
            f"scikit-learn's handwritten digits, {DIGITS_PER_CLASS} training images per class "
            f"(`{root}`, written by `dalaug.datasets.write_digits`)"
        )
    else:
        try:
            train_dir, eval_dir = data_folders(args.data)
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        data = f"`{args.data}` (test: `{eval_dir.name}/`)"
    settings = Settings(
        train_dir=str(train_dir),
        eval_dir=str(eval_dir),
        epochs=args.epochs,
        refine_epochs=max(1, round(REFINE_SHARE * args.epochs)),
        stop_epochs=max(1, round(STOP_SHARE * args.epochs)),
        crop=args.crop,
        flip=args.flip,
    )
    train_samples, eval_samples = resolve_source(train_dir), resolve_source(eval_dir)
    runs = len(grid()) * args.seeds
    print(
        f"evidence: {len(grid())} cells x {args.seeds} seeds = {runs} runs of {args.epochs} epochs, "
        f"{args.workers} worker(s)",
        flush=True,
    )
    start = time.perf_counter()

    def progress(result: dict, done: int, total: int) -> None:
        print(
            f"[{done}/{total} {time.perf_counter() - start:6.0f} s] {result['method']:<11} "
            f"{result['variant']:<10} seed {result['seed']}: top-1 {result['top1']:.2f}%  "
            f"({result['seconds']:.1f} s)",
            flush=True,
        )

    results = run_grid(settings, args.seeds, args.workers, progress)
    runtime = time.perf_counter() - start
    command = " ".join(["python -m benchmarks.evidence", *(sys.argv[1:] if argv is None else argv)])
    meta = {
        "command": command,
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "workers": args.workers,
        "runs": len(results),
        "runtime": runtime,
        "data": data,
        "train_size": len(train_samples),
        "eval_size": len(eval_samples),
        "classes": len(train_samples.classes),
        "gap_samples": results[0]["gap_heavy"]["samples"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot = write_plot(results, args.out.with_suffix(".png"))
    args.out.write_text(render(results, settings, meta, plot))
    print(f"\n{runtime / 60:.1f} min; report: {args.out}, plot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

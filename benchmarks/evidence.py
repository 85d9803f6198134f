"""Evidence: the seed papers' claims on an image grid in their regime, with the synthetic experiments.

Run: ``python -m benchmarks.evidence [--quick] [--seeds N] [--epochs N] [--width N] [--out EXPERIMENTS.md]``.
It writes one Markdown report and a plot next to it, and folds in the verdicts of the synthetic
experiments (``benchmarks/synthetic.py``) from their report (``--synthetic``; ``--rerun-synthetic``
regenerates that report first).

The claims it checks on images:

- Removal and mixing: Cutout (partial feature removal) and Mixup (feature mixing) each beat no
  batch augmentation, and CutMix, which does both, beats either ("Towards Understanding Why Data
  Augmentation Improves Generalization", arXiv 2502.08940; "Provable Benefit of Cutout and CutMix
  for Feature Learning", arXiv 2410.23672).
- Refinement: N epochs with a batch operator then M on the clean pipeline beat N + M epochs with it,
  and end at a lower clean training loss, which heavy augmentation leaves high (He et al., "Data
  Augmentation Revisited", 2019, Algorithm 1, Table 2).
- Early-stopped Mixup does as well as Mixup throughout (Zou et al., "The Benefits of Mixup for
  Feature Learning", ICML 2023).

The regime is the papers': a network that fits its training set without batch augmentation
(PreActResNet-18, clean training loss below 0.05 at the end), on a step learning-rate schedule
shaped like He et al.'s (divided by 10 at half and three quarters of the augmented epochs), the
refinement at the last rate. The data: scikit-learn's handwritten digits at 32 px, 25 training
images per class, the other 1,547 for test (``--data``: any ImageFolder with ``train/`` and
``val/`` or ``test/``). The grid is {none, Cutout, Mixup, CutMix} x {with the operator throughout,
refined for the last ninth of the epochs (He et al.: 50 of 450)}, plus Mixup for the first half of
the epochs only. "none" refined is the same run as "none" and is trained once. Every cell is a
:class:`train.recipe.Recipe` run by :class:`train.loop.Trainer`, which evaluates and measures the
gap every few epochs and at the end of each phase; runs are spread over ``--workers`` spawned
processes (DALI pipelines cannot be pickled), each on one torch thread.

Every comparison is paired by seed (one seed fixes the initial weights, the data order and crops and
the operators' stream) and judged as the synthetic experiments are: "holds" when the 95% t interval
of the paired differences lies on the predicted side, "opposite" when it lies on the other side,
"not resolved" otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import dalaug
from benchmarks import synthetic
from benchmarks.report import machine, markdown_table
from benchmarks.synthetic import Claim, judge
from dalaug.reading.sources import resolve_source
from train.loop import Trainer, data_folders
from train.recipe import Recipe

METHODS = ("none", "cutout", "mixup", "cutmix")
LABELS = {"none": "none", "cutout": "Cutout", "mixup": "Mixup", "cutmix": "CutMix"}
VARIANTS = ("augmented", "refined", "early_stop")
DIGITS_PER_CLASS = 25
REFINE_SHARE = 1 / 9  # He et al. refine the last 50 of 450 epochs
STOP_SHARE = 0.5  # Zou et al. stop Mixup part-way; half of the epochs here
FIT_LOSS = 0.05  # the regime: the baseline's clean training loss ends below this
EARLY_STOP_MARGIN = 1.0  # "does as well as": no more than this many points worse
# The test set is evaluated at the end of each phase only (the report reads no accuracy in between);
# the gap monitor, a few hundred training samples, runs every gap_every epochs for the curves.
FULL = {"seeds": 5, "epochs": 90, "width": 32, "gap_every": 5}
QUICK = {"seeds": 5, "epochs": 45, "width": 8, "gap_every": 5}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every cell of the grid shares (plain values only: it travels to spawned workers)."""

    data: str
    runs: str
    num_classes: int
    epochs: int
    width: int
    gap_every: int = 1
    crop: int = 32
    scale: tuple[float, float] = (0.64, 1.0)
    flip: bool = False
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    alpha: float = 1.0
    device: str | None = None

    @property
    def refine_epochs(self) -> int:
        return max(1, round(REFINE_SHARE * self.epochs))

    @property
    def stop_epochs(self) -> int:
        return max(1, round(STOP_SHARE * self.epochs))

    @property
    def milestones(self) -> tuple[int, ...]:
        """He et al.'s shape: the rate divided by 10 at 1/2 and 3/4 of the augmented epochs."""
        heavy = self.epochs - self.refine_epochs
        return tuple(sorted({m for m in (round(heavy / 2), round(3 * heavy / 4)) if 0 < m < self.epochs}))


@dataclasses.dataclass(frozen=True)
class Cell:
    """One configuration of the grid: a batch operator and what the schedule does with it."""

    method: str
    variant: str  # "augmented" (all epochs), "refined" (last epochs clean), "early_stop"

    @property
    def name(self) -> str:
        if self.variant == "early_stop":
            return f"{LABELS[self.method]}, early-stopped"
        return LABELS[self.method] + (" + refinement" if self.variant == "refined" else "")


def grid() -> list[Cell]:
    """The configurations, in report order; ``none + refinement`` is left out (same run as ``none``)."""
    cells = [Cell(m, v) for m in METHODS for v in ("augmented", "refined") if (m, v) != ("none", "refined")]
    return cells + [Cell("mixup", "early_stop")]


def operators(method: str, settings: Settings) -> list[dalaug.ops.BatchOp]:
    """The papers' default settings: α = 1, p = 1, a Cutout hole of half the image side."""
    num_classes = settings.num_classes
    if method == "none":
        return []
    if method == "cutout":
        return [dalaug.Cutout(size=max(1, settings.crop // 2), num_classes=num_classes)]
    if method == "mixup":
        return [dalaug.Mixup(alpha=settings.alpha, num_classes=num_classes)]
    if method == "cutmix":
        return [dalaug.CutMix(alpha=settings.alpha, num_classes=num_classes)]
    raise ValueError(f"method: expected one of {METHODS}, got {method!r}")


def recipe(cell: Cell, seed: int, settings: Settings) -> Recipe:
    """The cell as a Recipe: its phases, and the model, optimizer and schedule every cell shares."""
    heavy = dalaug.Phase(settings.epochs, operators=operators(cell.method, settings), name="augmented")
    if cell.variant == "augmented":
        phases = [heavy]
    elif cell.variant == "refined":
        phases = dalaug.refine(dataclasses.replace(heavy, epochs=settings.epochs - settings.refine_epochs),
                               settings.refine_epochs)  # fmt: skip
    elif cell.variant == "early_stop":
        phases = dalaug.early_stop(heavy, settings.stop_epochs)
    else:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {cell.variant!r}")
    return Recipe(
        name=f"{cell.method}-{cell.variant}-seed{seed}",
        model="preact_resnet18",
        phases=phases,
        data=settings.data,
        model_kwargs={"width": settings.width},
        crop=settings.crop,
        eval_resize=settings.crop,
        scale=settings.scale,
        flip=settings.flip,
        batch_size=settings.batch_size,
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        lr_schedule="step",
        milestones=settings.milestones,
        precision="fp32",
        seed=seed,
    )


# --- the runs -------------------------------------------------------------------------------------


def run_cell(task: tuple[Cell, int, Settings]) -> dict:
    """Train one cell with one seed through the Trainer, on one torch thread.

    Returns:
        The run's figures: ``top1`` and ``test_loss`` after the last epoch; ``clean_heavy`` and
        ``augmented_heavy``, the clean and augmented training losses (gap monitor) after the last
        epoch with the operators, ``gap_heavy`` their difference; ``clean_end``, ``augmented_end``,
        ``gap_end`` after the last epoch; ``clean_end_recalibrated``, the clean loss after the last
        epoch with BatchNorm statistics re-estimated on the clean samples; ``train_loss`` of the
        last epoch; ``history`` (the Trainer's); ``seconds``.
    """
    cell, seed, settings = task
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        spec = recipe(cell, seed, settings)
        out = Path(settings.runs) / f"{cell.method}-{cell.variant}" / f"seed{seed}"
        trainer = Trainer(spec, out, device=settings.device, eval_every=settings.epochs,
                          gap_every=settings.gap_every, checkpoint=False, progress=False)  # fmt: skip
        history = trainer.run()
        # The same clean samples, BatchNorm statistics re-estimated on them (see measure_gap).
        recalibrated = dalaug.measure_gap(trainer.module, trainer.gap_batches[0], recalibrate_bn=True)
    finally:
        torch.set_num_threads(threads)
    heavy, end = history[spec.phases[0].epochs - 1], history[-1]
    return {
        "cell": cell,
        "seed": seed,
        "top1": end["top1"],
        "test_loss": end["test_loss"],
        "clean_heavy": heavy["clean_train_loss"],
        "augmented_heavy": heavy["augmented_train_loss"],
        "gap_heavy": heavy["augmented_train_loss"] - heavy["clean_train_loss"],
        "clean_end": end["clean_train_loss"],
        "clean_end_recalibrated": recalibrated.clean,
        "augmented_end": end["augmented_train_loss"],
        "gap_end": end["augmented_train_loss"] - end["clean_train_loss"],
        "train_loss": end["train_loss"],
        "history": history,
        "seconds": time.perf_counter() - start,
    }


def run_grid(
    settings: Settings, seeds: int, workers: int, progress: Callable[[dict, int, int], None] | None = None
) -> dict[tuple[str, int], dict]:
    """Every cell with seeds 0 .. seeds-1, in ``workers`` spawned processes when more than one.

    Returns:
        ``{(cell name, seed): run}`` (see :func:`run_cell`), the shape ``synthetic.judge`` reads.
    """
    tasks = [(cell, seed, settings) for seed in range(seeds) for cell in grid()]
    done: list[dict] = []

    def collect(result: dict) -> None:
        done.append(result)
        if progress:
            progress(result, len(done), len(tasks))

    if workers <= 1:
        for task in tasks:
            collect(run_cell(task))
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for result in pool.imap_unordered(run_cell, tasks, chunksize=1):
                collect(result)
    return {(r["cell"].name, r["seed"]): r for r in done}


# --- the claims -----------------------------------------------------------------------------------

NONE, CUTOUT, MIXUP, CUTMIX = (Cell(m, "augmented").name for m in METHODS)
STOPPED = Cell("mixup", "early_stop").name


def claims() -> list[Claim]:
    """The claims of the image grid as paired comparisons (metrics of :func:`run_cell`)."""
    removal_mixing = "arXiv 2502.08940; arXiv 2410.23672"
    out = [
        Claim(f"The regime: without batch augmentation the network fits its training set (clean "
              f"training loss < {FIT_LOSS})", NONE, NONE, "clean_end", sign=-1, margin=FIT_LOSS),
        Claim(f"Partial feature removal helps ({removal_mixing})", CUTOUT, NONE, "top1"),
        Claim("Feature mixing helps (arXiv 2502.08940; Zou et al. 2023)", MIXUP, NONE, "top1"),
        Claim(f"Removal and mixing together help ({removal_mixing})", CUTMIX, NONE, "top1"),
        Claim(f"Removal and mixing together beat removal alone ({removal_mixing})", CUTMIX, CUTOUT, "top1"),
        Claim(f"Removal and mixing together beat mixing alone ({removal_mixing})", CUTMIX, MIXUP, "top1"),
    ]  # fmt: skip
    for method in METHODS[1:]:
        plain, refined = Cell(method, "augmented").name, Cell(method, "refined").name
        out += [
            Claim("A clean refinement phase raises accuracy at equal epochs (He et al. 2019)",
                  refined, plain, "top1"),
            Claim("Heavy augmentation leaves a gap: augmented minus clean training loss > 0 at the end "
                  "of the augmented phase (He et al. 2019, Table 2)", refined, refined, "gap_heavy"),
            Claim("Refinement lowers the clean training loss at equal epochs (He et al. 2019, Table 2)",
                  refined, plain, "clean_end", sign=-1),
            Claim("Refinement lowers the clean training loss at equal epochs, BatchNorm statistics "
                  "re-estimated on the clean samples (He et al. 2019, Table 2)",
                  refined, plain, "clean_end_recalibrated", sign=-1),
            Claim("The gap shrinks during refinement (as `dalaug.gap` expects)",
                  refined, refined, "gap_end - gap_heavy", sign=-1),
        ]  # fmt: skip
    out.append(
        Claim(f"Early-stopped Mixup does as well as Mixup throughout (Zou et al. 2023; margin "
              f"{EARLY_STOP_MARGIN:g} point)", STOPPED, MIXUP, "top1", margin=-EARLY_STOP_MARGIN)
    )  # fmt: skip
    return out


def _interval(row: dict, digits: int) -> str:
    if row["n"] < 2:
        return f"{row['mean']:+.{digits}f} (one seed)"
    return f"{row['mean']:+.{digits}f} [{row['low']:+.{digits}f}, {row['high']:+.{digits}f}]"


def verdict_rows(results: dict[tuple[str, int], dict]) -> list[list[str]]:
    """One row per claim: the comparison, mean [95% CI], seeds agreeing, verdict."""
    rows = []
    for claim in claims():
        row = judge(claim, results)
        unit = "points" if claim.metric == "top1" else "nats"
        versus = "" if claim.method == claim.baseline else f" − {claim.baseline}"
        rows.append([
            claim.text, f"{claim.method}{versus}: {claim.metric} ({unit})",
            _interval(row, 2 if unit == "points" else 3), f"{row['wins']}/{row['n']}",
            f"**{row['verdict']}**",
        ])  # fmt: skip
    return rows


# --- the synthetic experiments ---------------------------------------------------------------------


def synthetic_verdicts(path: Path) -> tuple[str, list[str]]:
    """The "Written by" line and the verdict table of a ``benchmarks.synthetic`` report.

    Raises:
        ValueError: the file has no "## Verdicts" table.
    """
    lines = path.read_text().splitlines()
    written = next((line for line in lines if line.startswith("Written by")), "")
    try:
        start = lines.index("## Verdicts") + 1
    except ValueError:
        raise ValueError(f"--synthetic: {str(path)!r} has no '## Verdicts' section") from None
    table = []
    for line in lines[start:]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    if not table:
        raise ValueError(f"--synthetic: {str(path)!r} has no verdict table under '## Verdicts'")
    return written, table


# --- the plot and the report ----------------------------------------------------------------------


def _runs(results: dict, cell: Cell) -> list[dict]:
    return [r for (name, _), r in sorted(results.items()) if name == cell.name]


def write_plot(results: dict, settings: Settings, path: Path) -> Path:
    """Accuracy per method with and without refinement; clean training loss and gap over epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, loss_ax, gap_ax) = plt.subplots(
        1, 3, figsize=(14, 4), gridspec_kw={"width_ratios": [4, 3, 3]}
    )
    colours = {"augmented": "tab:blue", "refined": "tab:orange", "early_stop": "tab:green"}
    names = {"augmented": "operator throughout", "refined": "+ refinement",
             "early_stop": "Mixup, early-stopped"}  # fmt: skip
    width, seen = 0.38, set()
    for i, method in enumerate(METHODS):
        variants = ["augmented"] if method == "none" else ["augmented", "refined"]
        variants += ["early_stop"] if method == "mixup" else []
        for j, variant in enumerate(variants):
            tops = [r["top1"] for r in _runs(results, Cell(method, variant))]
            x = i + (j - (len(variants) - 1) / 2) * width
            label = None if variant in seen else names[variant]
            acc_ax.bar(x, statistics.fmean(tops), width * 0.95, color=colours[variant], label=label)
            acc_ax.plot([x] * len(tops), tops, "k.", markersize=4)
            seen.add(variant)
    tops = [r["top1"] for r in results.values()]
    acc_ax.set_ylim(max(0.0, min(tops) - 4), min(100.0, max(tops) + 2))
    acc_ax.set_xticks(range(len(METHODS)), [LABELS[m] for m in METHODS])
    acc_ax.set_ylabel("test top-1 (%)")
    acc_ax.set_title("accuracy: bars mean, dots seeds")
    acc_ax.legend(fontsize=8, loc="lower left")

    boundary = settings.epochs - settings.refine_epochs
    for cell in grid():
        runs = _runs(results, cell)
        epochs = [rec["epoch"] + 1 for rec in runs[0]["history"] if "clean_train_loss" in rec]

        def mean_over_seeds(key: Callable[[dict], float], runs: list[dict] = runs) -> list[float]:
            per_seed = [[key(rec) for rec in r["history"] if "clean_train_loss" in rec] for r in runs]
            return [statistics.fmean(v) for v in zip(*per_seed, strict=True)]

        line = {"augmented": "-", "refined": "--", "early_stop": ":"}[cell.variant]
        style = {"linestyle": line, "color": f"C{METHODS.index(cell.method)}"}
        loss_ax.plot(epochs, mean_over_seeds(lambda rec: rec["clean_train_loss"]), label=cell.name, **style)
        if cell.method != "none":
            gap = mean_over_seeds(lambda rec: rec["augmented_train_loss"] - rec["clean_train_loss"])
            gap_ax.plot(epochs, gap, label=cell.name, **style)
    loss_ax.axhline(FIT_LOSS, color="grey", linewidth=0.8)
    loss_ax.set_yscale("log")
    loss_ax.set_title(f"clean training loss (line: {FIT_LOSS})")
    gap_ax.axhline(0, color="black", linewidth=0.8)
    gap_ax.set_title("gap: augmented − clean training loss")
    for axis in (loss_ax, gap_ax):
        axis.axvline(boundary, color="grey", linestyle="--", linewidth=0.8)
        axis.set_xlabel("epoch (dashed line: refinement starts)")
    gap_ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _pm(values: list[float], digits: int) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def render(results: dict, settings: Settings, meta: dict, plot: Path, synthetic_report: Path | None) -> str:
    """The Markdown report: setup, verdicts, plot, per-cell table, synthetic verdicts, every run."""
    seeds = sorted({seed for _, seed in results})
    heavy = settings.epochs - settings.refine_epochs
    rows = []
    for cell in grid():
        runs = _runs(results, cell)
        rows.append([
            cell.name, _pm([r["top1"] for r in runs], 2), _pm([r["clean_heavy"] for r in runs], 3),
            _pm([r["gap_heavy"] for r in runs], 3), _pm([r["clean_end"] for r in runs], 3),
            _pm([r["gap_end"] for r in runs], 3), f"{statistics.fmean(r['seconds'] for r in runs):.0f}",
        ])  # fmt: skip
    if meta["quick"]:
        scope = (
            f"**Quick grid (`--quick`)**: {len(seeds)} seeds, {settings.epochs} epochs, width "
            f"{settings.width}, sized for a 2-core CPU; the full grid (`python -m benchmarks.evidence`: "
            f"{FULL['seeds']} seeds, {FULL['epochs']} epochs, width {FULL['width']}) is meant for a GPU "
            "and has not been run or timed on a GPU in this session."
        )
    else:
        scope = f"Full grid: {len(seeds)} seeds, {settings.epochs} epochs, width {settings.width}."
    lines = [
        "# Evidence: removal, mixing, refinement and early-stopped Mixup",
        "",
        f"Written by `{meta['command']}` on {meta['date']}; {meta['machine']}, {meta['workers']} worker "
        f"process(es) of one thread; {len(results)} runs in {meta['runtime'] / 60:.1f} min. Rerun the "
        "command to regenerate this file and the plot; nothing here was edited by hand.",
        "",
        scope,
        "",
        "Every claim is a paired comparison over seeds (one seed fixes the initial weights, the data order "
        "and crops, and the operators' stream, so two cells of a seed differ only in their schedule). "
        "**holds**: the 95% t interval of the paired differences lies on the side the paper predicts; "
        "**opposite**: on the other side; **not resolved**: it straddles it.",
        "",
        "## Image grid: setup",
        "",
        f"- Data: {meta['data']}: {meta['train_size']} training images, {meta['eval_size']} test "
        f"images, {settings.num_classes} classes, {settings.crop} px.",
        f"- Model: PreActResNet-18 (`train.models`, width {settings.width}: stages of {settings.width}-"
        f"{8 * settings.width} channels), trained from scratch by `train.loop.Trainer`.",
        f"- Schedule (He et al.'s shape): {settings.epochs} epochs in every cell; SGD, momentum "
        f"{settings.momentum}, weight decay {settings.weight_decay}, batch {settings.batch_size}, "
        f"learning rate {settings.lr} divided by 10 at epochs {', '.join(map(str, settings.milestones))}; "
        "the refinement runs at the last rate. Soft-target cross-entropy.",
        f"- Standard augmentation in every cell and phase: random-resized-crop, area {settings.scale[0]}-"
        f"{settings.scale[1]}, {'with' if settings.flip else 'no'} flips. Test: the whole image at "
        f"{settings.crop} px.",
        f"- Batch operators (α = {settings.alpha}, p = 1): Cutout with one {settings.crop // 2} px hole; "
        "Mixup and CutMix with one λ per batch.",
        f"- Refinement (He et al., Algorithm 1, `dalaug.refine`): the operator for {heavy} epochs, then "
        f"{settings.refine_epochs} without it. Early-stopped Mixup (`dalaug.early_stop`): Mixup for the "
        f"first {settings.stop_epochs} epochs. `none` refined is the same run as `none`.",
        f"- Clean / augmented training loss: the Trainer's gap monitor (`dalaug.measure_gap`, "
        f"{meta['gap_samples']} training samples, clean pipeline, the cell's operators with a fixed "
        f"seed), every {settings.gap_every} epochs and at the end of each phase; the gap is augmented "
        "minus clean, in nats. The monitor runs the model in eval mode, whose BatchNorm statistics "
        "were gathered on the last phase's images: mixed ones, unless refined. The clean loss at the "
        "end is therefore measured a second time with statistics re-estimated on the clean samples "
        "(`measure_gap(..., recalibrate_bn=True)`).",
        "",
        "## Image grid: the claims",
        "",
        markdown_table(["claim", "comparison", "mean [95% CI]", "seeds agreeing", "verdict"],
                       verdict_rows(results)),  # fmt: skip
        "",
        f"![accuracy with and without refinement, training loss and gap over epochs]({plot.name})",
        "",
        f"## Image grid: results (mean ± std over {len(seeds)} seeds)",
        "",
        markdown_table(
            ["cell", "test top-1 (%)", "clean train loss, end of augmented phase",
             "gap, end of augmented phase", "clean train loss, end", "gap, end", "s per run"], rows,
        ),  # fmt: skip
        "",
    ]
    if synthetic_report is not None:
        written, table = synthetic_verdicts(synthetic_report)
        lines += [
            "## Synthetic experiments: the theory papers' own data models",
            "",
            f"The verdicts of `{synthetic_report.name}` (`benchmarks/synthetic.py`; its setup, per-tier "
            f"tables and plot are there). {written}",
            "",
            *table,
            "",
        ]
        figure = synthetic_report.with_suffix(".png")
        if figure.exists():
            lines += [f"![synthetic experiments: accuracy per method and feature tier]({figure.name})", ""]
    per_run = [
        [r["cell"].name, r["seed"], f"{r['top1']:.2f}", f"{r['test_loss']:.3f}",
         f"{r['clean_heavy']:.3f} / {r['augmented_heavy']:.3f}",
         f"{r['clean_end']:.3f} / {r['augmented_end']:.3f}",
         f"{r['train_loss']:.3f}", f"{r['seconds']:.0f}"]
        for cell in grid() for r in _runs(results, cell)
    ]  # fmt: skip
    lines += [
        "<details><summary>Every run</summary>",
        "",
        markdown_table(
            ["cell", "seed", "top-1 (%)", "test loss", "clean / augmented loss, end of augmented phase",
             "clean / augmented loss, end", "last-epoch train loss", "s"], per_run,
        ),  # fmt: skip
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
    parser.add_argument("--quick", action="store_true",
                        help=f"a grid for a 2-core CPU: {QUICK['seeds']} seeds, {QUICK['epochs']} epochs, "
                             f"width {QUICK['width']}")  # fmt: skip
    parser.add_argument("--seeds", type=int, help=f"seeds per cell (default {FULL['seeds']})")
    parser.add_argument("--epochs", type=int, help=f"total epochs of every cell (default {FULL['epochs']})")
    parser.add_argument("--width", type=int, help=f"PreActResNet-18 width (default {FULL['width']})")
    parser.add_argument("--gap-every", type=int, help="measure the clean and augmented training loss every N "
                        "epochs (and at phase ends)")  # fmt: skip
    parser.add_argument("--data", help="ImageFolder root with train/ and val/ (or test/); default: digits")
    parser.add_argument("--crop", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--flip", action="store_true", help="random horizontal flips (off: digits)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: CUDA if available")
    parser.add_argument("--workers", type=int, default=min(2, len(os.sched_getaffinity(0))),
                        help="processes running cells in parallel (default: up to 2)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("EXPERIMENTS.md"),
                        help="the Markdown report; the plot goes next to it as <name>.png")  # fmt: skip
    parser.add_argument("--synthetic", type=Path, default=Path("EXPERIMENTS_SYNTHETIC.md"),
                        help="the benchmarks.synthetic report whose verdicts are folded in")  # fmt: skip
    parser.add_argument("--rerun-synthetic", action="store_true",
                        help="regenerate the synthetic report first (with --quick: its --quick)")  # fmt: skip
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("seeds", "width", "gap_every", "crop", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a positive int, got {getattr(args, name)}")
    if args.epochs < 4:
        parser.error(f"--epochs: expected at least 4 (two rate steps and a refinement), got {args.epochs}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.data is None:
        from dalaug.datasets import write_digits

        root = Path("data") / f"digits-{DIGITS_PER_CLASS}pc-{args.crop}px"
        write_digits(root, train_per_class=DIGITS_PER_CLASS, size=args.crop, seed=0)
        data = (
            f"scikit-learn's handwritten digits, {DIGITS_PER_CLASS} training images per class "
            f"(`{root}`, written by `dalaug.datasets.write_digits`)"
        )
    else:
        root = Path(args.data)
        data = f"`{args.data}`"
    try:
        train_dir, eval_dir = data_folders(str(root))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.rerun_synthetic or not args.synthetic.exists():
        synthetic.main([*(["--quick"] if args.quick else []), "--out", str(args.synthetic)])
    train_samples, eval_samples = resolve_source(train_dir), resolve_source(eval_dir)
    settings = Settings(
        data=str(root),
        runs=str(args.out.parent / "runs" / f"evidence-{args.out.stem}"),
        num_classes=len(train_samples.classes),
        epochs=args.epochs,
        width=args.width,
        gap_every=args.gap_every,
        crop=args.crop,
        flip=args.flip,
        device=args.device,
    )
    runs = len(grid()) * args.seeds
    print(f"evidence: {len(grid())} cells x {args.seeds} seeds = {runs} runs of {args.epochs} epochs "
          f"(width {args.width}), {args.workers} worker(s)", flush=True)  # fmt: skip
    start = time.perf_counter()

    def progress(result: dict, done: int, total: int) -> None:
        print(f"[{done}/{total} {time.perf_counter() - start:6.0f} s] {result['cell'].name:<22} seed "
              f"{result['seed']}: top-1 {result['top1']:.2f}%, clean train loss {result['clean_end']:.3f} "
              f"({result['seconds']:.0f} s)", flush=True)  # fmt: skip

    results = run_grid(settings, args.seeds, args.workers, progress)
    runtime = time.perf_counter() - start
    meta = {
        "command": " ".join(["python -m benchmarks.evidence", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "workers": args.workers,
        "runtime": runtime,
        "quick": args.quick,
        "data": data,
        "train_size": len(train_samples),
        "eval_size": len(eval_samples),
        "gap_samples": min(Recipe.gap_samples, len(train_samples)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot = write_plot(results, settings, args.out.with_suffix(".png"))
    args.out.write_text(render(results, settings, meta, plot, args.synthetic))
    print(f"\n{runtime / 60:.1f} min; report: {args.out}, plot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

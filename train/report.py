"""The end-of-run summary: a short table and a plot like Figure 1 of He et al. (the loss gap between
clean and augmented training data, and what refinement does to it)."""

from __future__ import annotations

import math
from pathlib import Path

from train.recipe import Recipe


def phase_boundaries(recipe: Recipe) -> list[int]:
    """Epochs at which a new phase starts (after the first)."""
    boundaries, total = [], 0
    for phase in recipe.phases[:-1]:
        total += phase.epochs
        boundaries.append(total)
    return boundaries


def summary_table(recipe: Recipe, history: list[dict]) -> str:
    """Accuracy and clean/augmented training loss at the end of each phase."""
    # Two spaces between columns and 4 significant digits: a large loss widens its column instead
    # of running into the next one.
    columns = ("epoch", 6), ("top-1", 6), ("top-5", 6), ("clean loss", 10), ("aug. loss", 10)
    header = f"{'end of phase':<22}" + "".join(f"{name:>{width}}  " for name, width in columns).rstrip()
    lines = [header, "-" * len(header)]
    end = -1
    for index, phase in enumerate(recipe.phases):
        end += phase.epochs
        rows = [r for r in history if r["epoch"] == end]
        if not rows:
            continue
        r = rows[-1]
        name = phase.name or f"phase {index}"
        clean, augmented = r.get("clean_train_loss", math.nan), r.get("augmented_train_loss", math.nan)
        lines.append(
            f"{name:<22}{end + 1:>6}  {r['top1']:>6.2f}  {r['top5']:>6.2f}  {clean:>10.4g}  "
            f"{augmented:>10.4g}"
        )
    return "\n".join(lines)


def write_plot(recipe: Recipe, history: list[dict], path: str | Path) -> Path:
    """Losses (clean train, augmented train, test) and test accuracy per epoch, phases marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[int], list[float]]:
        # A Trainer with eval_every or gap_every > 1 measures only some epochs.
        measured = [r for r in history if key in r]
        return [r["epoch"] + 1 for r in measured], [r[key] for r in measured]

    fig, (losses, accuracy) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("clean_train_loss", "clean train"), ("augmented_train_loss", "augmented train"),
                       ("test_loss", "test")):  # fmt: skip
        epochs, values = series(key)
        if values:  # no gap monitor: no training-loss curves
            losses.plot(epochs, values, label=label)
    accuracy.plot(*series("top1"), label="test top-1", color="tab:green")
    for axis in (losses, accuracy):
        for boundary in phase_boundaries(recipe):
            axis.axvline(boundary + 0.5, color="grey", linestyle="--", linewidth=1)
        axis.set_xlabel("epoch")
        axis.legend()
    losses.set_ylabel("cross-entropy")
    accuracy.set_ylabel("top-1 (%)")
    fig.suptitle(f"{recipe.name}: dashed line = start of the clean refinement phase")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

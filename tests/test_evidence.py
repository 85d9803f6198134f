"""The evidence command (benchmarks/evidence.py): a tiny grid through the Trainer writes a report naming
every cell and claim with the synthetic verdicts folded in, the cells differ only in their schedule, and
the verdicts follow the paired interval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import evidence, synthetic
from train.loop import Trainer

REPO = Path(__file__).resolve().parent.parent
TEST_PER_CLASS = 4
EPOCHS, GAP_EVERY = 4, 3
VERDICTS = {"**holds**", "**opposite**", "**not resolved**"}


@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory) -> Path:
    """Digits as an ImageFolder: 6 training images per class and 4 test images per class, 16 px."""
    from dalaug.datasets import write_digits

    root = tmp_path_factory.mktemp("digits")
    _, test_dir = write_digits(root, train_per_class=6, size=16)
    for folder in test_dir.iterdir():
        for path in sorted(folder.iterdir())[TEST_PER_CLASS:]:
            path.unlink()
    return root


def _table(report: str, first_header: str) -> list[list[str]]:
    """The rows of the Markdown table whose first column is headed ``first_header``."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.split("|")[1:-1]])
    return rows


def test_tiny_grid_runs_through_the_trainer_and_writes_the_report(tiny_digits, tmp_path):
    synthetic_report = tmp_path / "EXPERIMENTS_SYNTHETIC.md"
    argv = ["--quick", "--only", "variance", "--seeds", "2", "--no-plot", "--out", str(synthetic_report)]
    assert synthetic.main(argv) == 0
    out = tmp_path / "report" / "EXPERIMENTS.md"
    before = _stamp(REPO / "EXPERIMENTS.md")
    argv = ["--quick", "--data", str(tiny_digits), "--crop", "16", "--seeds", "1", "--epochs", str(EPOCHS),
            "--width", "4", "--gap-every", str(GAP_EVERY), "--workers", "1", "--out", str(out),
            "--synthetic", str(synthetic_report)]  # fmt: skip
    assert evidence.main(argv) == 0

    report = out.read_text()
    results = {row[0]: row for row in _table(report, "cell")}
    assert set(results) == {cell.name for cell in evidence.grid()}
    assert all(0.0 <= float(row[1]) <= 100.0 for row in results.values())
    claims = _table(report, "claim")
    assert len(claims) == len(evidence.claims())
    assert {row[-1] for row in claims} == {"**not resolved**"}  # one seed decides nothing
    assert "**Quick grid (`--quick`)**" in report and "has not been run or timed on a GPU" in report
    assert f"{10 * TEST_PER_CLASS} test images" in report
    written, table = evidence.synthetic_verdicts(synthetic_report)
    assert written in report and all(line in report for line in table)
    assert {line.split("|")[-2].strip() for line in table[2:]} <= VERDICTS

    plot = out.with_suffix(".png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({plot.name})" in report
    assert _stamp(REPO / "EXPERIMENTS.md") == before  # --out was honoured

    # The Trainer's own run folders: no checkpoints, the test set at phase ends only, the gap every
    # GAP_EVERY epochs and at phase ends.
    run = out.parent / "runs" / "evidence-EXPERIMENTS" / "cutmix-refined" / "seed0"
    assert not (run / "checkpoint.pt").exists()
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == EPOCHS
    heavy = EPOCHS - max(1, round(evidence.REFINE_SHARE * EPOCHS))
    assert {r["epoch"] for r in history if "top1" in r} == {heavy - 1, EPOCHS - 1}
    assert {r["epoch"] for r in history if "clean_train_loss" in r} == {GAP_EVERY - 1, heavy - 1, EPOCHS - 1}


def _stamp(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def test_cells_share_everything_but_the_schedule():
    settings = evidence.Settings(data="d", runs="r", num_classes=10, epochs=18, width=8)
    recipes = {cell: evidence.recipe(cell, 3, settings) for cell in evidence.grid()}
    shared = {(r.epochs, r.lr, r.milestones, r.batch_size, r.scale, r.weight_decay, r.model,
               tuple(r.model_kwargs.items()), r.seed) for r in recipes.values()}  # fmt: skip
    assert len(shared) == 1
    refined = recipes[evidence.Cell("cutmix", "refined")]
    assert [p.epochs for p in refined.phases] == [16, 2] and refined.phases[1].operators == ()
    stopped = recipes[evidence.Cell("mixup", "early_stop")]
    assert [p.epochs for p in stopped.phases] == [9, 9] and stopped.phases[1].operators == ()
    assert recipes[evidence.Cell("none", "augmented")].phases[0].operators == ()
    # He et al.'s shape: two steps inside the augmented phase, the refinement at the last rate.
    assert settings.milestones == (8, 12)
    assert refined.base_lr(16) == refined.base_lr(15) == pytest.approx(settings.lr / 100)


def _results(top1: dict[str, list[float]], seeds: int = 5) -> dict[tuple[str, int], dict]:
    """Every cell's metrics per seed: the given accuracies, losses in the regime and shrinking gaps."""
    runs = {}
    for cell in evidence.grid():
        for seed in range(seeds):
            runs[(cell.name, seed)] = {
                "top1": top1.get(cell.name, [90.0 + seed] * seeds)[seed],
                "clean_end": 0.01 + 0.001 * seed, "gap_heavy": 0.5 + 0.01 * seed, "gap_end": 0.1,
                "clean_end_recalibrated": 0.02 + 0.001 * seed,
            }  # fmt: skip
    return runs


def test_verdicts_follow_the_paired_interval():
    base = [90.0 + s for s in range(5)]
    rows = evidence.verdict_rows(
        _results({
            "none": base,
            "CutMix": [a + 2.0 + 0.1 * s for s, a in enumerate(base)],  # clearly better
            "Cutout": [a - 3.0 + 0.1 * s for s, a in enumerate(base)],  # clearly worse
            "Mixup": [a + d for a, d in zip(base, (1.0, -1.2, 0.8, -0.9, 0.2), strict=True)],  # noise
        })  # fmt: skip
    )
    verdict = {row[1].split(":")[0]: row[-1] for row in rows}
    assert verdict["CutMix − none"] == "**holds**"
    assert verdict["Cutout − none"] == "**opposite**"
    assert verdict["Mixup − none"] == "**not resolved**"
    assert verdict["none"] == "**holds**"  # the regime: clean training loss below 0.05
    assert verdict["CutMix + refinement"] == "**holds**"  # the gap, and its shrinking, in every seed


def test_grid_switches_are_checked():
    with pytest.raises(ValueError, match="eval_every"):
        Trainer(None, "unused", eval_every=0)
    with pytest.raises(ValueError, match="gap_every"):
        Trainer(None, "unused", gap_every=True)
    with pytest.raises(SystemExit):
        evidence.parse_args(["--epochs", "3"])

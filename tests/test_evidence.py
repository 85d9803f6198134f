"""The evidence command (benchmarks/evidence.py): a quick grid on a tiny digits folder writes a report
naming every configuration, and the paired statistics that decide the claims behave."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import evidence

REPO = Path(__file__).resolve().parent.parent
TEST_PER_CLASS = 4


@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory) -> Path:
    """Digits as an ImageFolder: 6 training images per class and 4 test images per class."""
    from dalaug.datasets import write_digits

    root = tmp_path_factory.mktemp("digits")
    _, test_dir = write_digits(root, train_per_class=6, size=16)
    for folder in test_dir.iterdir():
        for path in sorted(folder.iterdir())[TEST_PER_CLASS:]:
            path.unlink()
    return root


def test_quick_grid_writes_every_configuration(tiny_digits, tmp_path):
    out = tmp_path / "report" / "EXPERIMENTS.md"
    before = _stamp(REPO / "EXPERIMENTS.md")
    argv = ["--quick", "--data", str(tiny_digits), "--epochs", "2", "--workers", "1", "--out", str(out)]
    assert evidence.main(argv) == 0

    report = out.read_text()
    rows = [line.split("|")[1:-1] for line in report.splitlines() if line.startswith("| ")]
    table = {(r[0].strip(), r[1].strip()): r for r in rows if len(r) == 6 and r[0].strip() != "method"}
    expected = {
        (evidence.LABELS[m], refinement) for m in evidence.METHODS for refinement in ("no", "last 1 epochs")
    }
    expected.add(("Mixup", "Mixup stops after epoch 1"))
    assert expected <= set(table), sorted(expected - set(table))
    assert len(expected) == 11
    for (method, _), row in table.items():
        if row[2].strip() != "same run as above":
            accuracy = float(row[2].split("±")[0])
            assert 0.0 <= accuracy <= 100.0, (method, row)
    assert "python -m benchmarks.evidence --quick" in report
    assert f"{10 * TEST_PER_CLASS} test images" in report
    assert report.count("**not tested (one seed)**") >= 10  # one seed: no claim is decided

    plot = out.with_suffix(".png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({plot.name})" in report
    assert _stamp(REPO / "EXPERIMENTS.md") == before  # --out was honoured


def _stamp(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def test_cells_share_total_epochs_and_differ_in_schedule_only():
    settings = evidence.Settings(
        train_dir="t", eval_dir="e", epochs=10, refine_epochs=2, stop_epochs=5, crop=16
    )
    recipes = {cell: evidence.recipe(cell, 3, 10, settings) for cell in evidence.grid()}
    assert {r.epochs for r in recipes.values()} == {10}
    assert len({(r.lr, r.batch_size, r.scale, r.flip, r.weight_decay, r.seed) for r in recipes.values()}) == 1
    refined = recipes[evidence.Cell("cutmix", "refined")]
    assert [p.epochs for p in refined.phases] == [8, 2] and refined.phases[1].operators == ()
    stopped = recipes[evidence.Cell("mixup", "early_stop")]
    assert [p.epochs for p in stopped.phases] == [5, 5] and stopped.phases[1].operators == ()
    assert recipes[evidence.Cell("none", "augmented")].phases[0].operators == ()


def _results(method: str, variant: str, accuracies: list[float]) -> list[dict]:
    return [{"method": method, "variant": variant, "seed": s, "top1": a} for s, a in enumerate(accuracies)]


def test_paired_comparison_decides_only_beyond_the_noise():
    base = [90.0, 91.0, 89.5, 92.0, 90.5]
    clear = evidence.compare(
        _results("cutmix", "augmented", [a + 2.0 + 0.1 * i for i, a in enumerate(base)])
        + _results("none", "augmented", base),
        ("cutmix", "augmented"),
        ("none", "augmented"),
    )
    assert clear.resolved and clear.mean > 0
    assert evidence._verdict(clear) == "holds"
    noisy = evidence.Comparison((1.0, -1.2, 0.8, -0.9, 0.2))
    assert noisy.resolved is False
    assert evidence._verdict(noisy).startswith("not resolved")
    assert evidence._verdict(evidence.Comparison((-3.0, -2.5, -3.5))) == "the opposite holds"
    assert evidence.Comparison((1.0,)).resolved is None
    assert re.search(r"higher in 5 of 5 seeds", clear.describe())


def test_epochs_below_two_are_refused(capsys):
    with pytest.raises(SystemExit):
        evidence.parse_args(["--epochs", "1"])
    assert "--epochs" in capsys.readouterr().err

"""What DALI decodes among unusual and broken files, and `dalaug verify` reporting the rest."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
import time

import pytest
import torch
from data_faults import DECODABLE, LARGE, LARGE_COLOUR, UNDECODABLE, expected_quadrants, write_fault

import dalaug
from dalaug.__main__ import main
from dalaug.reading.sources import resolve_source
from dalaug.reading.verification import sniff, verify

CROP = 32
# What each undecodable kind is reported as.
REASONS = {
    "truncated_jpeg": "JPEG data that does not decode",
    "random_bytes": "not an image",
    "empty_file": "empty file",
    "gif_named_jpg": "GIF image: DALI has no GIF decoder",
    "broken_symlink": "broken symbolic link",
}


def delivered(root) -> torch.Tensor:
    """The single image of the one-file folder ``root``, on the 0-255 scale, via an eval Loader."""
    loader = dalaug.Loader(root, 1, train=False, crop=CROP, resize=CROP, device="cpu")
    (images, _), *rest = list(loader)
    assert not rest and not loader.bad_samples
    mean = torch.tensor(dalaug.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(dalaug.IMAGENET_STD).view(3, 1, 1)
    return (images[0] * std + mean) * 255


@pytest.mark.parametrize("kind", DECODABLE)
def test_what_dali_decodes_arrives_as_rgb_the_right_way_up(kind, tmp_path):
    write_fault(kind, tmp_path / "c0" / "image.jpg")
    image = delivered(tmp_path)
    assert image.shape == (3, CROP, CROP)
    half = CROP // 2
    top, bottom = image[:, :half], image[:, half:]
    quadrants = [top[..., :half], top[..., half:], bottom[..., :half], bottom[..., half:]]
    for got, want in zip(quadrants, expected_quadrants(kind), strict=True):
        # Away from the quadrant edges (resize blurs them); JPEG shifts colours by a few levels.
        core = got[:, 3:-3, 3:-3].mean(dim=(1, 2))
        assert torch.allclose(core, torch.tensor(want, dtype=torch.float32), atol=25), (kind, core, want)


def test_a_12000x9000_image_is_delivered(tmp_path):
    start = time.perf_counter()
    write_fault("large", tmp_path / "c0" / "large.jpg")
    image = delivered(tmp_path)
    assert torch.allclose(image.mean(dim=(1, 2)), torch.tensor(LARGE_COLOUR, dtype=torch.float32), atol=6)
    assert time.perf_counter() - start < 60, f"{LARGE} image took too long"


@pytest.fixture(scope="module")
def faulty_folder(tmp_path_factory, photo_folder):
    """The photo folder plus one file of every kind, decodable or not, in class_001."""
    root = tmp_path_factory.mktemp("faulty") / "data"
    shutil.copytree(photo_folder, root)
    for kind in DECODABLE + UNDECODABLE:
        write_fault(kind, root / "class_001" / f"{kind}.jpg")
    return root


def test_verify_names_every_file_that_fails_and_why(faulty_folder):
    report = verify(faulty_folder, workers=2)
    assert not report.ok
    assert report.num_samples == 60 + len(DECODABLE) + len(UNDECODABLE)
    failing = {os.path.basename(k).removesuffix(".jpg"): reason for k, reason in report.failures.items()}
    assert set(failing) == set(UNDECODABLE)
    for kind, reason in failing.items():
        assert REASONS[kind] in reason, (kind, reason)
    # Files that decode but are not what their name says are noted, not failed.
    noted = {os.path.basename(name) for name in report.notes}
    assert {"png_named_jpg.jpg", "webp_named_jpg.jpg", "bmp_named_jpg.jpg", "tiff_named_jpg.jpg"} <= noted
    assert report.formats["JPEG"] >= 60


def test_verify_finds_the_same_failures_as_the_training_decoder(faulty_folder):
    # `verify` and the loader's bad-file handling must agree on what fails: train on the folder.
    loader = dalaug.Loader(faulty_folder, 8, train=False, crop=CROP, device="cpu", max_bad_fraction=0.2)
    for _ in loader:
        pass
    assert set(loader.bad_samples) == set(verify(faulty_folder).failures)


def test_cli_reports_failures_and_exits_non_zero(faulty_folder, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    assert main(["verify", str(faulty_folder), "--report", str(report_path), "--no-progress"]) == 1
    out = capsys.readouterr().out
    for kind in UNDECODABLE:
        assert f"FAIL {faulty_folder / 'class_001' / kind}.jpg" in out
    report = json.loads(report_path.read_text())
    assert report["num_failed"] == len(UNDECODABLE)
    assert {os.path.basename(f["sample"]) for f in report["failures"]} == {f"{k}.jpg" for k in UNDECODABLE}


def test_cli_passes_a_clean_folder_and_writes_the_default_report(photo_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["verify", str(photo_folder), "--no-progress"]) == 0
    report = json.loads((tmp_path / "dalaug-verify.json").read_text())
    assert report["num_failed"] == 0 and report["num_samples"] == 60


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["verify", str(tmp_path), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["missing folder", "directory"])
def test_cli_refuses_an_unwritable_report_before_decoding(faulty_folder, tmp_path, capsys, where):
    report = tmp_path / "missing" / "r.json" if where == "missing folder" else tmp_path
    assert main(["verify", str(faulty_folder), "--report", str(report), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing decoded, so no FAIL lines
    assert captured.err.startswith("dalaug verify: report: ") and captured.err.count("\n") == 1
    assert str(report) in captured.err
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_console_script_runs(faulty_folder, tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "dalaug")
    result = subprocess.run(
        [script, "verify", str(faulty_folder), "--report", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "truncated_jpeg.jpg" in result.stdout
    assert "verify: 100%" in result.stderr  # the progress bar


@pytest.mark.filterwarnings("ignore:'dalaug.__main__' found in sys.modules")
def test_python_m_dalaug_runs(photo_folder, tmp_path, monkeypatch):
    argv = ["dalaug", "verify", str(photo_folder), "--report", str(tmp_path / "r.json")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("dalaug", run_name="__main__")
    assert exit_.value.code == 0


def test_broken_symlink_is_reported_by_the_scan_not_listed_as_a_sample(tmp_path):
    write_fault("png_named_jpg", tmp_path / "c0" / "good.jpg")
    write_fault("broken_symlink", tmp_path / "c0" / "link.jpg")
    samples = resolve_source(tmp_path)
    assert len(samples) == 1
    (name, reason), *_ = samples.unreadable
    assert name.endswith("link.jpg") and "broken symbolic link" in reason


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root reads files whatever their mode; the vanished-file test covers the path"
)
def test_a_file_without_read_permission_fails_with_the_reason(tmp_path):
    path = write_fault("png_named_jpg", tmp_path / "c0" / "locked.jpg")
    path.chmod(0)
    try:
        assert "Permission denied" in verify(tmp_path).failures[str(path)]
    finally:
        path.chmod(0o644)


def test_a_file_that_vanishes_after_the_scan_fails_as_unreadable(tmp_path):
    # The same code path as a file without permission: opening it raises OSError.
    write_fault("png_named_jpg", tmp_path / "c0" / "a.jpg")
    gone = write_fault("png_named_jpg", tmp_path / "c0" / "b.jpg")
    samples = resolve_source(tmp_path)
    gone.unlink()
    report = verify(samples)
    assert list(report.failures) == [str(gone)] and "cannot read" in report.failures[str(gone)]


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\xff\xd8\xff\xe0", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF89a", "GIF"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WebP"), (b"BM", "BMP"), (b"II*\x00", "TIFF"),
        (b"P6\n", "PNM"), (b"hello", "unknown"), (b"", "unknown"),
    ],
)  # fmt: skip
def test_sniff_reads_the_format_from_the_header(data, kind):
    assert sniff(data) == kind


def test_verify_rejects_bad_workers(photo_folder):
    with pytest.raises(ValueError, match="workers"):
        verify(photo_folder, workers=0)

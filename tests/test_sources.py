"""What sources.py says about folders it cannot use, and what ``dalaug verify`` says about bad files."""

from __future__ import annotations

import os
import shutil

import pytest

from dalaug.reading import sources
from dalaug.reading.sources import resolve_source
from dalaug.reading.verification import verify


@pytest.fixture
def folder(tmp_path, photo_folder):
    copy = tmp_path / "data"
    shutil.copytree(photo_folder, copy)
    return copy


def test_a_class_folder_that_cannot_be_listed_is_named_with_its_reason(folder, monkeypatch):
    locked = str(folder / sorted(os.listdir(folder))[1])
    scandir = os.scandir

    def refusing(path="."):
        if os.fspath(path) == locked:  # as chmod 000 would, for a user other than root
            raise PermissionError(13, "Permission denied", locked)
        return scandir(path)

    monkeypatch.setattr(sources.os, "scandir", refusing)
    with pytest.raises(PermissionError, match=f"class folder '{locked}' cannot be listed: Permission denied"):
        resolve_source(folder)
    monkeypatch.setattr(sources.os, "scandir", lambda path=".": refusing(locked))
    with pytest.raises(PermissionError, match="cannot list folder .*Permission denied"):
        resolve_source(folder)


def test_a_symbolic_link_loop_under_a_class_folder_is_refused(folder):
    class_folder = folder / sorted(os.listdir(folder))[0]
    (class_folder / "deeper").mkdir()
    (class_folder / "deeper" / "again").symlink_to(class_folder)
    with pytest.raises(ValueError, match=r"symbolic link .*deeper/again' -> .* loops back"):
        resolve_source(folder)


def test_a_link_to_a_folder_beside_it_is_followed(folder, photo_folder):
    first, second = sorted(os.listdir(folder))[:2]
    (folder / first / "more").symlink_to(photo_folder / second)
    assert len(resolve_source(folder)) == len(resolve_source(photo_folder)) + len(os.listdir(folder / second))


def test_verify_gives_the_loaders_reason_for_a_bad_file(folder):
    bad = next((folder / sorted(os.listdir(folder))[0]).glob("*.jpg"))
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    report = verify(folder, workers=1)
    reason = "JPEG data that does not decode: truncated JPEG (no end-of-image marker)"
    assert report.failures == {str(bad): reason}

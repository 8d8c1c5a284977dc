"""Files and folders the kit writes appear whole or not at all."""

from __future__ import annotations

import pytest

from helpers.atomic import staged_file, staged_folder


def test_a_failure_leaves_neither_the_folder_nor_its_staging(tmp_path):
    with pytest.raises(RuntimeError), staged_folder(tmp_path / "model") as staging:
        (staging / "config.json").write_text("{}")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_replace_swaps_the_whole_folder(tmp_path):
    destination = tmp_path / "model"
    destination.mkdir()
    (destination / "old.bin").write_text("old")
    with staged_folder(destination, replace=True) as staging:
        (staging / "new.bin").write_text("new")
    assert [path.name for path in destination.iterdir()] == ["new.bin"]
    assert [path.name for path in tmp_path.iterdir()] == ["model"]
    assert oct(destination.stat().st_mode & 0o777) == oct(0o755)


def test_without_replace_an_existing_folder_wins(tmp_path):
    destination = tmp_path / "model"
    destination.mkdir()
    (destination / "first.bin").write_text("first")
    with staged_folder(destination) as staging:
        (staging / "second.bin").write_text("second")
    assert [path.name for path in destination.iterdir()] == ["first.bin"]
    assert [path.name for path in tmp_path.iterdir()] == ["model"]


def test_a_staged_file_replaces_its_destination_whole_and_readable_by_all(tmp_path):
    destination = tmp_path / "new folder" / "figure.png"
    with staged_file(destination, suffix=".gif") as temporary:
        assert temporary.parent == destination.parent and temporary.suffix == ".gif"
        temporary.write_text("drawn")
    assert destination.read_text() == "drawn"
    assert oct(destination.stat().st_mode & 0o777) == oct(0o644)
    with pytest.raises(RuntimeError), staged_file(destination) as temporary:
        assert temporary.suffix == ".png"
        temporary.write_text("half")
        raise RuntimeError("disk full")
    assert destination.read_text() == "drawn", "a failed write leaves the previous file"
    assert [path.name for path in destination.parent.iterdir()] == ["figure.png"]

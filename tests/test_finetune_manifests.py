"""TSV manifests: the three formats, comments, relative paths, and every bad line reported at once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers import sample_path
from helpers.finetune import ManifestError, check_manifest, read_manifest


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A dataset folder: images/ with two photos, a broken image, and manifests written by each test."""
    (tmp_path / "images").mkdir()
    for name in ("cat", "rocket"):
        shutil.copy(sample_path(name), tmp_path / "images" / f"{name}.jpg")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return tmp_path


def test_caption_manifest_resolves_relative_paths_against_its_folder(folder: Path, monkeypatch) -> None:
    manifest = folder / "train.tsv"
    manifest.write_text(
        "# image_path<TAB>caption\n\nimages/cat.jpg\ta cat on a couch\n  \nimages/rocket.jpg\ta rocket\n"
    )
    monkeypatch.chdir(folder.parent)  # the working directory must not matter
    read = read_manifest(manifest, "caption")
    assert [(e.image, e.text, e.line) for e in read.examples] == [
        (folder / "images" / "cat.jpg", "a cat on a couch", 3),
        (folder / "images" / "rocket.jpg", "a rocket", 5),
    ]


def test_vqa_and_retrieval_columns(folder: Path) -> None:
    vqa = folder / "vqa.tsv"
    vqa.write_text("images/cat.jpg\twhat animal is this?\tcat\n")
    assert read_manifest(vqa, "vqa").examples[0].answer == "cat"
    retrieval = folder / "retrieval.tsv"
    retrieval.write_text(f"{folder / 'images' / 'cat.jpg'}\ta tabby cat\n")  # absolute paths work too
    example = read_manifest(retrieval, "retrieval").examples[0]
    assert (example.text, example.answer) == ("a tabby cat", None)


def test_every_bad_line_is_reported_with_its_number_and_reason(folder: Path) -> None:
    manifest = folder / "bad.tsv"
    lines = [
        b"images/cat.jpg\ta cat",  # 1 good
        b"images/missing.jpg\ta ghost",  # 2 missing file
        b"images/cat.jpg a cat without a tab",  # 3 wrong column count
        b"images/cat.jpg\t  ",  # 4 empty caption
        b"images/broken.jpg\ta broken file",  # 5 unreadable image
        b"images/cat.jpg\tcaf\xe9 latte",  # 6 Latin-1, not UTF-8
        b"# images/missing.jpg\tcommented out",  # 7 ignored
        b"images/rocket.jpg\ta rocket",  # 8 good
    ]
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    examples, problems = check_manifest(manifest, "caption")
    assert [e.line for e in examples] == [1, 8]
    reasons = {problem.line: problem.reason for problem in problems}
    assert sorted(reasons) == [2, 3, 4, 5, 6]
    assert "image not found" in reasons[2] and "missing.jpg" in reasons[2]
    assert "1 column(s), expected 2" in reasons[3]
    assert "empty caption" in reasons[4]
    assert "unreadable image" in reasons[5]
    assert "UTF-8" in reasons[6]
    with pytest.raises(ManifestError) as raised:
        read_manifest(manifest, "caption")
    message = str(raised.value)
    assert "5 bad line(s)" in message
    assert all(f"{manifest}:{line}:" in message for line in (2, 3, 4, 5, 6))


def test_vqa_line_with_a_missing_answer_is_a_column_count_problem(folder: Path) -> None:
    manifest = folder / "vqa.tsv"
    manifest.write_text("images/cat.jpg\twhat is it?\n")
    _, problems = check_manifest(manifest, "vqa")
    assert "2 column(s), expected 3" in problems[0].reason and "question<TAB>answer" in problems[0].reason


def test_an_empty_manifest_and_a_missing_one_are_refused(folder: Path) -> None:
    empty = folder / "empty.tsv"
    empty.write_text("# nothing yet\n\n")
    with pytest.raises(ManifestError, match="no examples"):
        read_manifest(empty, "retrieval")
    with pytest.raises(FileNotFoundError, match=r"nope\.tsv"):
        read_manifest(folder / "nope.tsv", "caption")
    with pytest.raises(ValueError, match="not a training task"):
        read_manifest(empty, "captioning")


def test_windows_line_endings_and_a_byte_order_mark_are_accepted(folder: Path) -> None:
    manifest = folder / "windows.tsv"
    manifest.write_bytes(b"\xef\xbb\xbfimages/cat.jpg\ta cat\r\nimages/rocket.jpg\ta rocket\r\n")
    assert [e.text for e in read_manifest(manifest, "caption").examples] == ["a cat", "a rocket"]


def test_the_image_of_a_line_is_read_once_however_often_it_appears(folder: Path, monkeypatch) -> None:
    opened: list[str] = []
    from helpers.finetune import manifests

    original = manifests._image_problem
    monkeypatch.setattr(
        manifests, "_image_problem", lambda image: opened.append(os.fspath(image)) or original(image)
    )
    manifest = folder / "many.tsv"
    manifest.write_text("".join(f"images/cat.jpg\tcaption {i}\n" for i in range(5)))
    assert len(read_manifest(manifest, "caption")) == 5
    assert opened == [os.fspath(folder / "images" / "cat.jpg")]

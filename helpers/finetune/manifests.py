"""TSV manifests: the caption, VQA and retrieval formats users already have, checked before any training.

One example per line, columns separated by a TAB:

    caption     image_path<TAB>caption
    vqa         image_path<TAB>question<TAB>answer
    retrieval   image_path<TAB>text

Lines starting with `#` and blank lines are ignored. A relative image path is resolved against the folder
that holds the manifest (not the working directory), so a manifest and its images can move together.
An image may appear on several lines: extra captions, questions or texts for the same image.

Validation reads the whole file and reports every bad line with its number and reason (wrong column count,
empty field, missing or unreadable image, bad encoding), so a user fixes them all in one go instead of
meeting them one by one hours into a run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from helpers.backends.base import check_task
from helpers.images import MAX_PIXELS, ImageLoadError, load_image

COLUMNS: dict[str, tuple[str, ...]] = {
    "caption": ("image_path", "caption"),
    "vqa": ("image_path", "question", "answer"),
    "retrieval": ("image_path", "text"),
}
"""The columns of each task's manifest, in order."""


@dataclass(frozen=True)
class Example:
    """One manifest line: the image, its text (caption, question or retrieval text) and, for VQA, the answer."""

    image: Path
    text: str
    answer: str | None
    line: int


@dataclass(frozen=True)
class Problem:
    """A bad manifest line and why it is bad."""

    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class ManifestError(ValueError):
    """A manifest with bad lines; the message lists every one of them."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        listed = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(
            f"{path}: {len(problems)} bad line(s); fix them (or comment them out with #) and run again:\n{listed}"
        )


@dataclass(frozen=True)
class Manifest:
    """The valid examples of a manifest for one task."""

    path: Path
    task: str
    examples: list[Example]

    def __len__(self) -> int:
        return len(self.examples)


def template(task: str) -> str:
    """The expected line shape, for error messages: e.g. `image_path<TAB>caption`."""
    return "<TAB>".join(COLUMNS[check_task(task)])


def check_manifest(path: str | Path, task: str) -> tuple[list[Example], list[Problem]]:
    """Every valid example and every problem of a manifest; reads all lines and opens every image once."""
    manifest = Path(path).expanduser()
    if manifest.is_dir():
        raise FileNotFoundError(f"manifest {manifest} is a directory; pass the path of a TSV file inside it")
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {manifest} does not exist; pass the path of a TSV file")
    columns = COLUMNS[check_task(task)]
    examples: list[Example] = []
    problems: list[Problem] = []
    image_checks: dict[Path, str | None] = {}
    for number, line in _lines(manifest):
        reason, example = _parse(line, number, columns, manifest.parent, image_checks)
        if reason is not None:
            problems.append(Problem(manifest, number, reason))
        elif example is not None:
            examples.append(example)
    if not examples and not problems:
        problems.append(Problem(manifest, 0, f"no examples; each line should be {template(task)}"))
    return examples, problems


def read_manifest(path: str | Path, task: str) -> Manifest:
    """The examples of a manifest, or a ManifestError listing every bad line."""
    examples, problems = check_manifest(path, task)
    if problems:
        raise ManifestError(Path(path), problems)
    return Manifest(Path(path), task, examples)


def _lines(path: Path) -> Iterator[tuple[int, str | bytes]]:
    """(line number, text) for each line; a line that is not UTF-8 comes back as its raw bytes."""
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r")
        except UnicodeDecodeError:
            yield number, raw


def _parse(
    line: str | bytes,
    number: int,
    columns: tuple[str, ...],
    folder: Path,
    image_checks: dict[Path, str | None],
) -> tuple[str | None, Example | None]:
    """(reason, None) for a bad line, (None, None) for a comment or blank line, (None, example) otherwise."""
    if isinstance(line, bytes):
        return "not valid UTF-8; save the manifest with UTF-8 encoding", None
    if not line.strip() or line.lstrip().startswith("#"):
        return None, None
    fields = line.split("\t")
    if len(fields) != len(columns):
        return (
            f"{len(fields)} column(s), expected {len(columns)} separated by TABs: {'<TAB>'.join(columns)}",
            None,
        )
    empty = [name for name, field in zip(columns, fields, strict=True) if not field.strip()]
    if empty:
        return f"empty {', '.join(empty)}", None
    image = Path(fields[0].strip())
    image = image if image.is_absolute() else folder / image
    if image not in image_checks:
        image_checks[image] = _image_problem(image)
    if image_checks[image] is not None:
        return image_checks[image], None
    text = fields[1].strip()
    answer = fields[2].strip() if len(columns) == 3 else None
    return None, Example(image=image, text=text, answer=answer, line=number)


def _image_problem(image: Path) -> str | None:
    """Load the image exactly as training will (`load_image`, same max_pixels guard), so a line that passes
    here cannot fail mid-epoch; an oversized image is refused from its header, before any decoding."""
    if not image.is_file():
        return f"image not found: {image} (relative paths are resolved against the manifest's folder)"
    try:
        load_image(image, max_pixels=MAX_PIXELS)
    except ImageLoadError as error:
        return f"unreadable image: {error}"
    return None

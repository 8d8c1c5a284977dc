"""What a learner sees in an executed notebook: no noise, nothing stale, every model load intended.

`output_problems` reads an executed notebook (what papermill leaves in build/notebooks/) and lists what a
learner should never see: stderr output (library warnings they can do nothing about), progress bars frozen
below 100%, the same image twice in one cell, a widget saved as its raw repr, text lines wider than 110
columns, and the word "random" describing the offline model. `models_loaded` reads which models a notebook
loaded from the kit's "loading the ... model (first use)" lines. tests/test_notebooks.py applies both to every
notebook it executes, so the checks run on fresh copies in the same session; the tests below show that each
check catches what it is for.
"""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Iterator

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

MAX_COLUMNS = 110
_PROGRESS = re.compile(r"(\d{1,3})%\|")
_WIDGET_REPR = re.compile(r"^\s*[A-Z]\w*\(children=\(|b'\\x89PNG")
_RANDOM_OFFLINE = re.compile(r"\brandom\b", re.IGNORECASE)
_OFFLINE_WORDS = re.compile(r"\b(offline|miniature)\b", re.IGNORECASE)
_LOADED = re.compile(r"loading the (generation|retrieval) model \(first use\)")


def _texts(output: nbformat.NotebookNode) -> Iterator[str]:
    """The plain-text parts of one output: a stream's text, or a display's text/plain."""
    if output.get("output_type") == "stream":
        yield output.get("text", "")
    elif "data" in output:
        yield output["data"].get("text/plain", "")


def _shown_lines(text: str) -> list[str]:
    """The lines a frontend shows: a carriage return rewrites its line, so only the last rewrite stays."""
    return [line.split("\r")[-1] for line in text.split("\n")]


def _sentences(text: str) -> list[str]:
    return re.split(r"(?<=[.!?])\s+|\n\s*\n", " ".join(text.split("\n")))


def output_problems(notebook: nbformat.NotebookNode) -> list[str]:
    """Every problem of the executed `notebook`, each naming its cell (0-based index) and what is wrong."""
    problems = []
    for index, cell in enumerate(notebook.cells):
        where = f"cell {index}"
        if cell.cell_type == "markdown":
            problems += [
                f"{where}: 'random' describes the offline model: {sentence.strip()[:100]!r}"
                for sentence in _sentences(cell.source)
                if _RANDOM_OFFLINE.search(sentence) and _OFFLINE_WORDS.search(sentence)
            ]
            continue
        if cell.cell_type != "code":
            continue
        images: list[str] = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                problems.append(f"{where}: stderr output: {output.get('text', '').strip()[:200]!r}")
            images += [output["data"]["image/png"]] if "image/png" in output.get("data", {}) else []
            for text in _texts(output):
                if _WIDGET_REPR.search(text):
                    problems.append(f"{where}: a widget saved as its raw repr: {text[:80]!r}")
                    continue
                for line in _shown_lines(text):
                    stuck = _PROGRESS.search(line)
                    if stuck and int(stuck.group(1)) < 100:
                        problems.append(
                            f"{where}: a progress bar stuck at {stuck.group(1)}%: {line.strip()!r}"
                        )
                    if len(line) > MAX_COLUMNS:
                        problems.append(
                            f"{where}: a line of {len(line)} > {MAX_COLUMNS} columns: {line[:60]!r}..."
                        )
                for sentence in _sentences(text):
                    if _RANDOM_OFFLINE.search(sentence) and _OFFLINE_WORDS.search(sentence):
                        problems.append(
                            f"{where}: 'random' describes the offline model: {sentence.strip()[:100]!r}"
                        )
        if len(set(images)) < len(images):
            problems.append(f"{where}: the same image is shown {len(images) - len(set(images)) + 1} times")
    return problems


def models_loaded(notebook: nbformat.NotebookNode) -> set[str]:
    """The models ("generation", "retrieval") the notebook's `load_blip2` models loaded, from their load lines."""
    return {
        match.group(1)
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        for text in _texts(output)
        for match in _LOADED.finditer(text)
    }


# ---- the checks catch what they are for ---------------------------------------------------------------
_PNG = base64.b64encode(b"\x89PNG fake image bytes").decode()


def _notebook(*outputs: nbformat.NotebookNode, markdown: str = "") -> nbformat.NotebookNode:
    cell = new_code_cell("pass")
    cell.outputs = list(outputs)
    return new_notebook(cells=[new_markdown_cell(markdown), cell])


def _stream(text: str, name: str = "stdout") -> nbformat.NotebookNode:
    return new_output("stream", name=name, text=text)


def _display(text: str, png: str | None = None) -> nbformat.NotebookNode:
    data = {"text/plain": text} | ({"image/png": png} if png else {})
    return new_output("display_data", data=data)


def test_a_clean_notebook_has_no_problems():
    notebook = _notebook(
        _stream("caption: 'one small red triangle on the left'\n"),
        _stream("stage 1:  40%|####      | 2/5\rstage 1: 100%|##########| 5/5\n"),
        _display("<Figure size 640x480 with 1 Axes>", _PNG),
        markdown="Nucleus sampling draws each token at random. The offline miniature was trained by the kit.",
    )
    assert output_problems(notebook) == []


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (_stream("FutureWarning: Importing from timm.models.hub is deprecated\n", "stderr"), "stderr output"),
        (_display("Loading weights:   0%|          | 0/183 [00:00<?, ?it/s]"), "stuck at 0%"),
        (_stream("fine-tuning (caption):  50%|#####     | 4/8\n"), "stuck at 50%"),
        (_display("VBox(children=(HBox(children=(Image(value=b'\\x89PNG\\r\\n"), "raw repr"),
        (_stream("x" * 111 + "\n"), "111 > 110 columns"),
        (_stream("The offline miniature's weights are random, so its caption is nonsense.\n"), "'random'"),
    ],
    ids=["stderr", "bar in a widget", "bar in a stream", "widget repr", "wide line", "random offline model"],
)
def test_each_kind_of_noise_is_reported(output, expected):
    problems = output_problems(_notebook(output))
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_same_image_twice_in_one_cell_is_reported():
    notebook = _notebook(_display("<Figure>", _PNG), _display("<Figure>", _PNG))
    assert output_problems(notebook) == ["cell 1: the same image is shown 2 times"]


def test_random_describing_the_offline_model_in_markdown_is_reported():
    notebook = _notebook(markdown="Under the `offline` profile the\nminiature's weights are random for now.")
    assert len(output_problems(notebook)) == 1


def test_models_loaded_reads_the_kits_load_lines():
    notebook = _notebook(
        _stream(
            "BLIP-2 | profile 'offline'\n       | loading the retrieval model (first use): data/toyworld\n"
        )
    )
    assert models_loaded(notebook) == {"retrieval"}
    assert models_loaded(_notebook(_stream("no model here\n"))) == set()


@pytest.mark.parametrize(
    ("allow_stdin", "live"), [(True, True), (False, False)], ids=["a person", "papermill"]
)
def test_progress_bars_are_live_only_when_a_person_is_at_the_frontend(monkeypatch, allow_stdin, live):
    from types import SimpleNamespace

    from helpers.environment import live_progress

    request = {"content": {"allow_stdin": allow_stdin}}
    shell = SimpleNamespace(kernel=SimpleNamespace(get_parent=lambda: request))
    monkeypatch.setitem(sys.modules, "IPython", SimpleNamespace(get_ipython=lambda: shell))
    assert live_progress() is live

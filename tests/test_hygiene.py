"""Repository hygiene CI enforces: clean notebooks that follow the kit's conventions, lint, packaging."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from helpers.install import COLAB_NOTEBOOKS_URL

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHECKED_MARK = "NBVAL_CHECK_OUTPUT"
COLAB_PREFIX = COLAB_NOTEBOOKS_URL


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _checked_by_nbval(cell: dict) -> bool:
    """nbval recognises the marker only as a whole comment line."""
    return any(line.strip() == f"# {CHECKED_MARK}" for line in _source(cell).splitlines())


def test_there_are_notebooks():
    assert [path.name[:2] for path in NOTEBOOKS][:4] == ["00", "01", "02", "03"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_committed_clean(path: Path) -> None:
    notebook = _load(path)
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert "widgets" not in notebook["metadata"], "widget state is saved; clear it before committing"
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code" or _checked_by_nbval(cell):
            continue
        assert not cell.get("outputs"), f"cell {index} has outputs but no {CHECKED_MARK} marker"
        assert cell.get("execution_count") is None, f"cell {index} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_follows_the_conventions(path: Path) -> None:
    cells = _load(path)["cells"]
    assert cells[0]["cell_type"] == "markdown"
    assert COLAB_PREFIX + path.name in _source(cells[0]), "the first cell needs this notebook's Colab badge"
    tagged = [cell for cell in cells if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert "PROFILE" in _source(tagged[0]) and "BACKEND" in _source(tagged[0])
    assert any('"google.colab" in sys.modules' in _source(cell) for cell in cells), (
        "the Colab-only install cell"
    )
    assert cells[-1]["cell_type"] == "markdown" and "Exercises" in _source(cells[-1])


def test_ruff_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_is_formatted():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "helpers", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


CONDA_NAMES = {"torch": "pytorch"}
CONDA_ONLY = {"python", "pip"}


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [
        Requirement(text)
        for text in project["dependencies"]
        + [req for extra in project["optional-dependencies"].values() for req in extra]
    ]
    conda = {}
    for entry in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]:
        requirement = Requirement(entry)
        conda[requirement.name] = str(requirement.specifier)
    for requirement in wanted:
        name = CONDA_NAMES.get(requirement.name, requirement.name)
        assert name in conda, f"environment.yml lacks {name} (pyproject: {requirement})"
        assert conda[name] == str(requirement.specifier), (
            f"{name}: {conda[name]} vs pyproject {requirement.specifier}"
        )
    assert set(conda) - {CONDA_NAMES.get(r.name, r.name) for r in wanted} <= CONDA_ONLY
    assert conda["python"] == project["requires-python"]


def test_nbval_has_stored_outputs_to_compare():
    # nbval --nbval-lax compares only marked cells; without any, it would merely check that cells run.
    checked = [
        cell
        for path in NOTEBOOKS
        for cell in _load(path)["cells"]
        if cell["cell_type"] == "code" and _checked_by_nbval(cell)
    ]
    assert checked and all(cell.get("outputs") for cell in checked)

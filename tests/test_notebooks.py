"""Every notebook runs headlessly under papermill with the offline profile, for every backend.

The executed copies land in build/notebooks/<backend>/ (`make run` writes build/notebooks/ the same way), and
each is read as a learner would see it (tests/test_executed_notebooks.py): no noise, nothing stale, and only
the models the notebook needs loaded.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest
from test_executed_notebooks import models_loaded, output_problems

from helpers.loading import BACKENDS

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXECUTED = ROOT / "build" / "notebooks"
MODELS_LOADED = {
    # 00's backend-parity cell also loads both offline models, quietly: two full models never meet there.
    "00_setup": {"generation"},
    "01_captioning": {"generation"},
    "02_vqa_and_instructed_generation": {"generation"},
    "03_retrieval_and_features": {"retrieval"},
    "04_qformer_anatomy": {"generation"},
    "05_two_stage_pretraining": set(),  # it trains its own miniature through helpers.pretraining_run
    "06_finetuning": {"generation"},
    "07_paper_comparison": {"generation", "retrieval"},
    "08_colab_guide": {"generation"},
}
"""The models each notebook's `load_blip2` models load (reported by their "loading the ... model" lines): on a
T4 the generation and retrieval models of a real profile should never be loaded for nothing."""


def _stdout(notebook: nbformat.NotebookNode) -> str:
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
    )


@pytest.mark.notebooks
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_offline(path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel inherits the environment: without conftest's MPLBACKEND=Agg it draws figures inline, as
    # Jupyter does, so the executed copy holds the images a learner sees (and that the checks read).
    monkeypatch.delenv("MPLBACKEND", raising=False)
    (EXECUTED / backend).mkdir(parents=True, exist_ok=True)
    executed = papermill.execute_notebook(
        str(path),
        str(EXECUTED / backend / path.name),
        parameters={"PROFILE": "offline", "BACKEND": backend},
        kernel_name="python3",
        cwd=str(path.parent),
        progress_bar=False,
    )
    code_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code_cells), "a code cell was skipped"
    assert not any(o.get("output_type") == "error" for cell in code_cells for o in cell.get("outputs", []))
    assert "profile 'offline'" in _stdout(executed), "the notebook must print the profile it chose"
    assert output_problems(executed) == [], "what a learner would see in the executed copy"
    assert not any(
        "<Figure size" in output.get("data", {}).get("text/plain", "")
        and "image/png" not in output.get("data", {})
        for cell in code_cells
        for output in cell.get("outputs", [])
    ), "a figure was not drawn inline"
    assert path.stem in MODELS_LOADED, f"say in MODELS_LOADED which models {path.name} should load"
    assert models_loaded(executed) == MODELS_LOADED[path.stem], (
        "a model loaded that the notebook does not need"
    )

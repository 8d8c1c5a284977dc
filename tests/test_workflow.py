"""The CI workflow a fork gets: valid for GitHub Actions, running the suite the way `.ci/run` does, with pip cached."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def _lint(path: Path) -> subprocess.CompletedProcess:
    """check-jsonschema with the GitHub workflow schema it bundles: no network needed."""
    linter = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert linter, "check-jsonschema is missing: install the kit's test extra (pip install -e '.[test]')"
    command = [linter, "--builtin-schema", "vendor.github-workflows", str(path)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_the_linter_rejects_a_broken_workflow(tmp_path):
    broken = yaml.safe_load(WORKFLOW.read_text())
    del broken["jobs"]["test"]["runs-on"]
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    assert _lint(path).returncode != 0


def test_workflow_runs_the_suite_with_pip_cached():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request"} <= set(triggers)
    steps = workflow["jobs"]["test"]["steps"]
    setup = next(step for step in steps if step.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["cache"] == "pip" and setup["with"]["cache-dependency-path"] == "pyproject.toml"
    version = tuple(int(part) for part in str(setup["with"]["python-version"]).split("."))
    assert (3, 11) <= version <= (3, 13), "a Python the kit supports"
    assert any(step.get("run", "").strip() == ".ci/run" for step in steps)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize(
    "path", sorted((ROOT / ".github" / "workflows").glob("*.y*ml")), ids=lambda p: p.name
)
def test_every_workflow_passes_the_linter(path: Path) -> None:
    result = _lint(path)
    assert result.returncode == 0, result.stdout + result.stderr

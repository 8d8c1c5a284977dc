"""Notebook benchmark: wall time of every notebook as `make run` executes it (offline profile, papermill).

The floor is what every notebook pays before its first cell does any work: starting a `python3` kernel and
importing `helpers`. Goals: each notebook <= 30 s, all of them together <= 3 min on this machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from helpers import benchmarking

GOAL_EACH_SECONDS = 30.0
GOAL_TOTAL_SECONDS = 180.0
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def papermill(notebook: Path, output: Path, parameters: dict[str, str]) -> float:
    """Seconds to execute one notebook exactly as `make run` does; a failing notebook is an error."""
    command = [sys.executable, "-m", "papermill", "--log-level", "WARNING", "-k", "python3"]
    for name, value in parameters.items():
        command += ["-p", name, value]
    environment = {**os.environ, "BLIP2_PROFILE": "offline", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    completed = subprocess.run(
        [*command, str(notebook), str(output)], capture_output=True, text=True, env=environment, check=False
    )
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise RuntimeError(f"{notebook.name} failed under papermill:\n{completed.stderr[-4000:]}")
    return seconds


def floor_notebook(folder: Path) -> Path:
    """A one-cell notebook that imports helpers: kernel start + import, the cost no notebook avoids."""
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell("import helpers")]
    path = folder / "floor.ipynb"
    nbformat.write(notebook, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench")
    parser.add_argument("--only", nargs="*", help="notebook names to time (default: all)")
    args = parser.parse_args()
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    if args.only:
        notebooks = [path for path in notebooks if path.stem in args.only or path.name in args.only]
    if not notebooks:
        raise SystemExit(f"no notebooks to time in {NOTEBOOKS} (--only {args.only})")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        floor = papermill(floor_notebook(folder), folder / "floor-out.ipynb", {})
        print(f"floor (kernel start + import helpers): {floor:.1f} s")
        seconds = {}
        for notebook in notebooks:
            seconds[notebook.stem] = papermill(notebook, folder / notebook.name, {"PROFILE": "offline"})
            print(f"{notebook.stem}: {seconds[notebook.stem]:.1f} s")
    total = sum(seconds.values())
    goals = [
        benchmarking.Goal(f"{name}: wall time", value, "<=", GOAL_EACH_SECONDS, "s")
        for name, value in seconds.items()
    ]
    if not args.only:
        goals.append(benchmarking.Goal("all notebooks: wall time", total, "<=", GOAL_TOTAL_SECONDS, "s"))
    figures = {"floor_seconds": floor, "notebook_seconds": seconds, "total_seconds": total}
    settings = {
        "runner": "papermill -k python3 -p PROFILE offline, BLIP2_PROFILE=offline OMP_NUM_THREADS=1 (as `make run`)",
        "backend": "hf (the notebooks' default BACKEND)",
        "floor": "a one-cell notebook running `import helpers` in a fresh python3 kernel",
        "notebooks": [path.name for path in notebooks],
    }
    benchmarking.save(benchmarking.record("notebooks", settings, figures, goals), args.out)


if __name__ == "__main__":
    main()

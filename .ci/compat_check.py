"""`make compat-check`: the kit on Colab's current stack and on its declared minimums, each in a fresh venv.

For each stack: a venv with the stack's interpreter; the stack's packages installed first (standing in for what
Colab preinstalls); then the kit installed the Colab way (`pip install --no-deps <checkout>`, then
`python -m helpers.install --backend lavis --extra test`); then the suite, which runs every notebook under
papermill for both backends. A stack is green when the install moved no installed package (torch and
transformers included) and pytest passed. One JSON per stack and a summary table land in build/compat/.

Not part of `make test`: each stack downloads torch (several GB with its CUDA libraries).
`--stacks colab` runs one stack; `--pytest-args "-k guide"` runs a subset of the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

from helpers.install import UPGRADABLE

ROOT = Path(__file__).resolve().parent.parent


def declared_minimum(name: str) -> str:
    """The lower bound pyproject.toml declares for `name`: the minimum stack checks what the kit claims."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        if requirement.name == name:
            bounds = [spec.version for spec in requirement.specifier if spec.operator == ">="]
            if bounds:
                return bounds[0]
    raise SystemExit(f"pyproject.toml declares no lower bound for {name}")


@dataclass(frozen=True)
class Stack:
    """An interpreter and the packages the runtime has before the kit arrives."""

    name: str
    python: str
    preinstalled: tuple[str, ...]


COLAB_BASE = ("accelerate", "psutil", "pillow", "matplotlib", "tqdm", "pyyaml", "packaging")
"""Packages every Colab runtime has that `import helpers` (and so `python -m helpers.install`) needs before
the installer adds the rest; tests/test_install.py checks that the import needs nothing beyond such."""


def stacks() -> dict[str, Stack]:
    return {
        # Colab's runtime as of this check: Python 3.13, torch 2.11, transformers 5.15, ipywidgets 7.7.1.
        "colab": Stack(
            "colab",
            "3.13",
            (
                "torch==2.11.0",
                "torchvision==0.26.0",
                "torchaudio==2.11.0",
                "transformers==5.15.1",
                "ipywidgets==7.7.1",
                *COLAB_BASE,
            ),
        ),
        # The oldest torch and transformers pyproject.toml accepts, on the oldest Python it accepts.
        "minimum": Stack(
            "minimum",
            "3.11",
            (
                f"torch=={declared_minimum('torch')}",
                f"transformers=={declared_minimum('transformers')}",
                *COLAB_BASE,
            ),
        ),
    }


def interpreter(version: str) -> str:
    """pyenv's newest installation of Python `version`, else `python3.X` on PATH (not a pyenv shim, which
    answers only for the active version)."""
    try:
        latest = subprocess.run(["pyenv", "latest", version], capture_output=True, text=True, check=True)
        prefix = subprocess.run(
            ["pyenv", "prefix", latest.stdout.strip()], capture_output=True, text=True, check=True
        ).stdout.strip()
        return str(Path(prefix) / "bin" / f"python{version}")
    except (OSError, subprocess.CalledProcessError):
        found = shutil.which(f"python{version}")
        if found and "/shims/" not in found:
            return found
    raise SystemExit(f"no Python {version}: install it (e.g. `pyenv install {version}`)")


def run(command: list[str], log: Path, **kwargs) -> subprocess.CompletedProcess:
    print(f"$ {shlex.join(command)}", flush=True)
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {shlex.join(command)}\n{result.stdout}{result.stderr}\n")
    return result


def versions(python: str) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m; "
        "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"
    )
    return json.loads(subprocess.check_output([python, "-c", code], text=True))


def check(stack: Stack, out: Path, pytest_args: list[str], reuse: bool = False) -> dict:
    """`reuse` keeps a venv from an earlier check (its downloads are the slow part), kit included: the kit is
    reinstalled over it, and what the install adds is then only what changed since."""
    folder = out / stack.name
    if not reuse:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.txt"
    if not (folder / "venv").is_dir():
        subprocess.run([interpreter(stack.python), "-m", "venv", str(folder / "venv")], check=True)
    python = str(folder / "venv" / "bin" / "python")
    report: dict = {"stack": stack.name, "preinstalled": list(stack.preinstalled), "log": str(log)}
    step = run([python, "-m", "pip", "install", "--quiet", *stack.preinstalled], log)
    if step.returncode != 0:
        return report | {
            "green": False,
            "failed_step": "preinstalling the stack",
            "error": step.stderr[-2000:],
        }
    before = versions(python)
    for command in (
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-warn-conflicts", str(ROOT)],
        [python, "-m", "helpers.install", "--backend", "lavis", "--extra", "test"],
    ):
        step = run(command, log, cwd=folder)  # not the checkout: the installed kit must do the work
        if step.returncode != 0:
            return report | {
                "green": False,
                "failed_step": shlex.join(command[1:]),
                "error": step.stderr[-2000:],
            }
    report["install_summary"] = step.stdout.strip()
    after = versions(python)
    moved = {
        name: [before[name], after[name]]
        for name in before
        if after.get(name) != before[name] and name not in UPGRADABLE
    }
    python_version = subprocess.check_output(
        [python, "-c", "import platform; print(platform.python_version())"], text=True
    ).strip()
    report |= {
        "python": python_version,
        "torch": [before.get("torch"), after.get("torch")],
        "transformers": [before.get("transformers"), after.get("transformers")],
        "moved_by_install": moved,
    }
    subprocess.run([python, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"], check=True)
    environment = os.environ | {"BLIP2_PROFILE": "offline", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    command = [python, "-m", "pytest", *(pytest_args or ["tests", "notebooks", "--nbval-lax"])]
    tests = run([*command, "-q", "-p", "no:cacheprovider"], log, cwd=ROOT, env=environment)
    lines = tests.stdout.strip().splitlines()
    report |= {
        "pytest": shlex.join(command[1:]),
        "pytest_result": lines[-1] if lines else tests.stderr[-500:],
    }
    report["green"] = tests.returncode == 0 and not moved
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "compat")
    parser.add_argument("--stacks", nargs="+", default=list(stacks()), choices=list(stacks()))
    parser.add_argument("--pytest-args", default="", help="instead of the whole suite, e.g. '-k guide tests'")
    parser.add_argument("--reuse", action="store_true", help="keep the venvs of an earlier check")
    arguments = parser.parse_args()
    arguments.out = arguments.out.resolve()
    arguments.out.mkdir(parents=True, exist_ok=True)
    reports = []
    for name in arguments.stacks:
        report = check(stacks()[name], arguments.out, shlex.split(arguments.pytest_args), arguments.reuse)
        (arguments.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        reports.append(report)
    print(
        "\n| stack | python | torch before -> after | transformers before -> after | moved | pytest | green |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in reports:
        torch_versions = " -> ".join(map(str, r.get("torch", ["-"])))
        transformers_versions = " -> ".join(map(str, r.get("transformers", ["-"])))
        result = r.get("pytest_result", r.get("failed_step", "-"))
        moved = len(r.get("moved_by_install", {}))
        print(
            f"| {r['stack']} | {r.get('python', '-')} | {torch_versions} | {transformers_versions} | {moved} "
            f"| {result} | {'yes' if r['green'] else 'NO'} |"
        )
    return 0 if all(r["green"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())

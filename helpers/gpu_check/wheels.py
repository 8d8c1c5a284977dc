"""The wheels a GPU machine without network needs for the check, in one folder (`make gpu-wheels`).

The machine the check was written for has Python 3.12 with torch, transformers, accelerate, peft, timm,
safetensors, matplotlib and pytest, and nothing downloadable. It lacks the notebook runner (papermill and its
Jupyter stack: nbformat, nbclient, ipykernel ...), salesforce-lavis (installed without its unsatisfiable
pins, as `helpers.install_lavis` does) with the `lavis` extra, the kit's own other dependencies, and the kit.
pip resolves what these need for that Python and platform, what the machine already has is subtracted, and
the rest is downloaded as wheels, the kit built as one, all checked against the limit on what may be carried.

    python -m helpers.gpu_check.wheels --out build/gpu-wheels
    # there:  python -m pip install --no-index --find-links build/gpu-wheels -r build/gpu-wheels/requirements.txt
    #         python -m pip install --no-index --no-deps build/gpu-wheels/salesforce_lavis-*.whl build/gpu-wheels/blip2_kit-*.whl
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from helpers.atomic import staged_folder

REPOSITORY = Path(__file__).resolve().parents[2]
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64")
DEVICE_HAS = ("torch", "transformers", "accelerate", "peft", "timm", "safetensors", "matplotlib", "pytest")
"""What the GPU machine's Python already has: these and everything they depend on are not carried."""
NOTEBOOK_STACK = ("papermill", "nbformat", "nbclient", "ipykernel")
SOURCE_ONLY = ("iopath>=0.1.9", "fairscale>=0.4.4")
"""Published as source only (both from the `lavis` extra): built here as pure-Python wheels, which pip then
resolves from the folder like any other."""
NO_DEPS = ("salesforce-lavis==1.0.2",)
"""Installed without dependencies: LAVIS 1.0.2 pins versions no current Python can meet."""
LEFT_OUT = {
    "pycocoevalcap": (
        "about 100 MB (METEOR and SPICE jars): over the carry limit alone; only caption metrics use it, so "
        "notebook 06 (CIDEr in validation) is listed as left out where it is missing"
    ),
}
CARRY_LIMIT_BYTES = 64 * 2**20
MANIFEST = "MANIFEST.json"
REQUIREMENTS = "requirements.txt"


def normalise(name: str) -> str:
    """PEP 503 names: `Jupyter_Client` and `jupyter-client` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalise(re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0])


def wanted(pyproject: Mapping[str, Any]) -> list[str]:
    """The notebook stack, the `lavis` extra and the kit's dependencies, minus what is left out by design."""
    project = pyproject["project"]
    requirements = [*NOTEBOOK_STACK, *project["optional-dependencies"]["lavis"], *project["dependencies"]]
    return [r for r in dict.fromkeys(requirements) if requirement_name(r) not in LEFT_OUT]


def resolved(report: Mapping[str, Any]) -> dict[str, str]:
    """`pip install --dry-run --report` output -> {name: version} of every distribution pip would install."""
    return {
        normalise(item["metadata"]["name"]): item["metadata"]["version"] for item in report.get("install", [])
    }


def to_carry(needed: Mapping[str, str], present: Iterable[str]) -> dict[str, str]:
    """What the machine lacks: the resolved set minus what its own packages already bring."""
    have = {normalise(name) for name in present}
    return {name: version for name, version in sorted(needed.items()) if name not in have}


def size_check(files: Iterable[Path], limit: int = CARRY_LIMIT_BYTES) -> dict[str, Any]:
    """Total bytes against the limit, the largest files first, so an overrun says what to cut."""
    sizes = sorted(((path.name, path.stat().st_size) for path in files), key=lambda item: -item[1])
    total = sum(size for _, size in sizes)
    return {"total_bytes": total, "limit_bytes": limit, "fits": total <= limit, "largest": sizes[:5]}


def pip(*arguments: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "pip", *arguments], capture_output=True, text=True, check=True
    ).stdout


def target_options() -> list[str]:
    options = ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp"]
    for platform in PLATFORMS:
        options += ["--platform", platform]
    return options


def target_environment() -> dict[str, str]:
    """Marker values of the GPU machine: pip evaluates markers for the Python it runs on, not the target."""
    return {
        "python_version": PYTHON_VERSION,
        "python_full_version": f"{PYTHON_VERSION}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "extra": "",
    }


def applies(requirement: Requirement) -> bool:
    """Whether a dependency is installed on the target; optional extras never are."""
    return requirement.marker is None or requirement.marker.evaluate(target_environment())


def dependencies(report: Mapping[str, Any]) -> dict[str, list[Requirement]]:
    """{name: the dependencies that apply on the target} for every distribution in a pip report."""
    return {
        normalise(item["metadata"]["name"]): [
            requirement
            for requirement in map(Requirement, item["metadata"].get("requires_dist") or [])
            if applies(requirement)
        ]
        for item in report.get("install", [])
    }


def missing_for_target(report: Mapping[str, Any]) -> list[str]:
    """Dependencies the target needs that pip left out, e.g. papermill's aiohttp on Python 3.12 only."""
    present = set(resolved(report))
    missing = {
        normalise(requirement.name): f"{requirement.name}{requirement.specifier}"
        for requirements in dependencies(report).values()
        for requirement in requirements
        if normalise(requirement.name) not in present
    }
    return sorted(missing.values())


def closure(report: Mapping[str, Any], roots: Iterable[str]) -> set[str]:
    """`roots` and everything they depend on within the report: what those packages bring with them."""
    graph = dependencies(report)
    seen: set[str] = set()
    todo = [normalise(root) for root in roots]
    while todo:
        name = todo.pop()
        if name in seen or name not in graph:
            continue
        seen.add(name)
        todo += [normalise(requirement.name) for requirement in graph[name]]
    return seen


def resolve(requirements: Iterable[str], find_links: Path) -> dict[str, Any]:
    """pip's report for the GPU machine's Python and platform (metadata only, nothing installed)."""
    with tempfile.TemporaryDirectory() as target:
        report = pip(
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            "-",
            "--target",
            target,
            "--find-links",
            str(find_links),
            *target_options(),
            *requirements,
        )
    return json.loads(report)


def download(folder: Path) -> dict[str, Any]:
    """Resolve, subtract, download and size-check into `folder`, with requirements.txt and MANIFEST.json.

    Everything lands in a staging folder renamed into place at the end: a failed download leaves the
    previous folder, never half of a new one.
    """
    with staged_folder(folder, replace=True) as staging:
        pip("wheel", "--no-deps", "--wheel-dir", str(staging), *SOURCE_ONLY)
        requirements = wanted(tomllib.loads((REPOSITORY / "pyproject.toml").read_text()))
        report = resolve(requirements, staging)
        for _ in range(3):  # each round may bring dependencies with target-only dependencies of their own
            missing = missing_for_target(report)
            if not missing:
                break
            requirements += missing
            report = resolve(requirements, staging)
        carry = to_carry(resolved(report), closure(report, DEVICE_HAS))
        pins = [f"{name}=={version}" for name, version in carry.items()]
        built = {requirement_name(path.name.split("-")[0]) for path in staging.glob("*.whl")}
        to_download = [pin for pin in pins if requirement_name(pin) not in built]
        pip("download", "--no-deps", "--dest", str(staging), *target_options(), *to_download, *NO_DEPS)
        pip("wheel", "--no-deps", "--wheel-dir", str(staging), str(REPOSITORY))
        (staging / REQUIREMENTS).write_text("\n".join(pins) + "\n")
        manifest = {
            "python": PYTHON_VERSION,
            "platforms": list(PLATFORMS),
            "device_has": sorted(closure(report, DEVICE_HAS)),
            "requirements": pins,
            "built_from_source": list(SOURCE_ONLY),
            "no_deps": [*NO_DEPS, "blip2-kit (this checkout, built as a wheel)"],
            "left_out": LEFT_OUT,
            "size": size_check(staging.glob("*.whl")),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/gpu-wheels"))
    args = parser.parse_args()
    manifest = download(args.out)
    size = manifest["size"]
    print(
        f"{len(manifest['requirements'])} wheels + {len(manifest['no_deps'])} without dependencies in {args.out}"
    )
    print(
        f"{size['total_bytes'] / 2**20:.1f} MiB of {size['limit_bytes'] / 2**20:.0f} MiB; largest: {size['largest']}"
    )
    if not size["fits"]:
        print("over the carry limit: leave out the largest wheels not needed by the check", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

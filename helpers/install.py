"""Add the kit's dependencies to a runtime without moving anything it already has: `python -m helpers.install`.

Colab preinstalls torch, torchvision, torchaudio, transformers, ipywidgets, numpy and hundreds more, built
to work together (torchaudio's compiled library loads only beside the torch it was built for). A plain
`pip install` may upgrade any of them to satisfy a new package: timm pulls torchvision, whose newest release
pins a newer torch. So every pip call here runs with a constraints file that pins each installed
distribution to its installed version: pip can only add packages. A requirement the runtime's own version
cannot meet stops with an error naming the package and the fix, before pip runs.

The notebooks' install cell first puts the kit itself in with `pip install --no-deps` (which moves nothing)
and then runs this module, so it uses only the standard library and `packaging`. pip's output goes to a log
file; the notebook shows one line of what was added, with torch and transformers after.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distributions, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

REPOSITORY = "blip2-kit/blip2-reproduction-kit"
"""The kit's GitHub repository: the one place its name is written (tests check every copy against it)."""
REPOSITORY_URL = f"https://github.com/{REPOSITORY}"
PIP_SOURCE = f"git+{REPOSITORY_URL}"
"""What the notebooks' install cell passes to `pip install --no-deps`."""
COLAB_NOTEBOOKS_URL = f"https://colab.research.google.com/github/{REPOSITORY}/blob/main/notebooks/"
"""Prefix of every Open-in-Colab badge link."""
KIT_DISTRIBUTION = "blip2-kit"
"""The kit's distribution name: the install cell's "already installed?" check asks importlib.metadata for it."""
WATCHED = ("torch", "transformers")
"""Reported after every install, and checked to be unchanged."""
PIP_LOG = Path(tempfile.gettempdir()) / "blip2-kit-pip.log"


UPGRADABLE = frozenset({"pip", "setuptools", "wheel"})
"""Packaging tools, not runtime libraries: the install may upgrade them (a fresh Python 3.11 venv has
setuptools 65, the test extra needs 69 to build a wheel), and nothing the notebooks import moves with them."""


class InstallError(RuntimeError):
    """The runtime cannot take the kit as it is, or pip failed; the message says what to do."""


def installed_versions(path: list[str] | None = None) -> dict[str, str]:
    """Canonical distribution name -> installed version in `path` (default sys.path); the first one wins,
    as for imports."""
    found: dict[str, str] = {}
    for distribution in distributions(**({} if path is None else {"path": path})):
        name = distribution.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), distribution.version)
    return found


def constraints(versions: dict[str, str]) -> list[str]:
    """`name==version` for every installed distribution whose version pip can parse.

    Debian-packaged Python modules on Colab carry versions such as `2.4.0+ubuntu4` that are valid, and some
    such as `1.1build1` that are not; pip rejects a constraints file with one of those, and it never upgrades
    them anyway, so they are left out.
    """
    pins = []
    for name, version in sorted(versions.items()):
        if name in UPGRADABLE:
            continue
        try:
            Version(version)
        except InvalidVersion:
            continue
        pins.append(f"{name}=={version}")
    return pins


def kit_requirements(extras: Iterable[str] = ()) -> list[Requirement]:
    """The installed kit's dependencies, with those of the requested extras, markers resolved."""
    try:
        declared = requires(KIT_DISTRIBUTION) or []
    except PackageNotFoundError:
        raise InstallError(
            f"the kit ({KIT_DISTRIBUTION}) is not installed: run `pip install --no-deps {PIP_SOURCE}` first "
            "(the notebooks' install cell does), or `pip install -e .` in a clone"
        ) from None
    wanted = []
    for text in declared:
        requirement = Requirement(text)
        environments = [{"extra": extra} for extra in ("", *extras)]
        if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments):
            requirement.marker = None
            wanted.append(requirement)
    return wanted


def missing(requirements: Sequence[Requirement], versions: dict[str, str]) -> list[Requirement]:
    """The requirements nothing installed provides; an installed version that does not fit is an error."""
    absent = []
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        version = versions.get(name)
        if version is None or (name in UPGRADABLE and not requirement.specifier.contains(version)):
            absent.append(requirement)
        elif not requirement.specifier.contains(version, prereleases=True):
            raise InstallError(
                f"{requirement.name} {version} is installed, but the kit needs {requirement}; the install "
                "will not change installed packages. On Colab, Runtime > Disconnect and delete runtime brings "
                f"back its own versions (something such as the guide's `pip install transformers==4.28.0` "
                f"replaced them); elsewhere run `pip install '{requirement}'` yourself."
            )
    return absent


def pip_add(
    arguments: Sequence[str], versions: dict[str, str] | None = None, python: str = sys.executable
) -> None:
    """`pip install <arguments>` for `python` with every distribution of `versions` (default: this
    interpreter's) pinned; pip's output goes to PIP_LOG."""
    pins = constraints(installed_versions() if versions is None else versions)
    with tempfile.NamedTemporaryFile("w", suffix="-constraints.txt", delete=False) as handle:
        handle.write("\n".join(pins) + "\n")
    try:
        command = [python, "-m", "pip", "install", "--constraint", handle.name, *arguments]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        Path(handle.name).unlink()
    with PIP_LOG.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-8:])
        raise InstallError(
            f"pip could not add {' '.join(arguments)} without changing installed packages:\n{tail}\n"
            f"(full output in {PIP_LOG})"
        )


@dataclass(frozen=True)
class InstallSummary:
    """What an install added, and the watched packages' versions after it."""

    added: dict[str, str]
    watched: dict[str, str | None]

    def __str__(self) -> str:
        added = ", ".join(f"{name} {version}" for name, version in sorted(self.added.items()))
        kept = " and ".join(f"{name} {version}" for name, version in self.watched.items() if version)
        what = f"added {len(self.added)} packages ({added})" if self.added else "nothing to add"
        return f"{KIT_DISTRIBUTION}: {what}; {kept} unchanged"


def summarise(before: dict[str, str], after: dict[str, str]) -> InstallSummary:
    """Compare two `installed_versions()`; a changed version means the constraints were bypassed: an error."""
    changed = {
        name: (before[name], after[name])
        for name in before.keys() & after.keys()
        if before[name] != after[name] and name not in UPGRADABLE
    }
    if changed:
        moves = ", ".join(f"{name} {old} -> {new}" for name, (old, new) in sorted(changed.items()))
        raise InstallError(f"installed packages changed: {moves}; restart the runtime before going on")
    added = {name: after[name] for name in after.keys() - before.keys()}
    return InstallSummary(added, {name: after.get(name) for name in WATCHED})


def install(backend: str = "hf", extras: Sequence[str] = ()) -> InstallSummary:
    """Add what the kit needs for `backend` ("hf", or "lavis" for LAVIS 1.0.2 and its BLIP-2 runtime), and
    the dependencies of `extras` (e.g. "test", "lab")."""
    if backend not in ("hf", "lavis"):
        raise InstallError(f"backend={backend!r}: choose 'hf' or 'lavis'")
    before = installed_versions()
    extras = (*extras, "lavis") if backend == "lavis" else tuple(extras)
    needed = missing(kit_requirements(extras), before)
    if needed:
        pip_add([str(requirement) for requirement in needed], before)
    if backend == "lavis":
        from helpers.install_lavis import add_lavis

        add_lavis()
    return summarise(before, installed_versions())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.install", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("hf", "lavis"), default="hf", help="also add LAVIS for 'lavis'")
    parser.add_argument(
        "--extra", action="append", default=[], help="also an extra's dependencies (test, lab)"
    )
    arguments = parser.parse_args(argv)
    try:
        print(install(arguments.backend, arguments.extra))
    except InstallError as error:
        print(f"{KIT_DISTRIBUTION} install stopped: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

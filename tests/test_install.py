"""The Colab install: one repository name everywhere, a cell that only adds, and pip pinned to what is installed."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from helpers import install
from helpers.install import (
    COLAB_NOTEBOOKS_URL,
    KIT_DISTRIBUTION,
    PIP_SOURCE,
    REPOSITORY,
    InstallError,
    constraints,
    installed_versions,
    kit_requirements,
    missing,
    pip_add,
)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
THIRD_PARTY_REPOSITORIES = {"salesforce/LAVIS", "huggingface/transformers"}
"""Repositories the kit's text may link besides its own."""
GITHUB_REFERENCE = re.compile(r"(?:github\.com|colab\.research\.google\.com/github)/([\w.-]+/[\w-]+)")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _install_cell(path: Path) -> str:
    cells = [_source(c) for c in _cells(path) if '"google.colab" in sys.modules' in _source(c)]
    assert len(cells) == 1, f"{path.name}: exactly one Colab install cell"
    return cells[0]


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    suffixes = {".py", ".md", ".ipynb", ".toml", ".yml", ".yaml", ".cfg", ".txt"}
    return [ROOT / name for name in listed if Path(name).suffix in suffixes and (ROOT / name).is_file()]


def test_every_link_to_the_kits_repository_is_the_one_constant():
    """A renamed or mistyped copy of the repository name anywhere (badges, install cells, README, error
    messages, tests) fails here, naming the file."""
    wrong = []
    for path in _tracked_text_files():
        for match in GITHUB_REFERENCE.finditer(path.read_text(encoding="utf-8", errors="replace")):
            if match.group(1) not in THIRD_PARTY_REPOSITORIES | {REPOSITORY}:
                wrong.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert not wrong, f"links that are not {REPOSITORY}: {wrong}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_the_badge_and_the_install_cell_use_the_constant(path: Path) -> None:
    assert COLAB_NOTEBOOKS_URL + path.name in _source(_cells(path)[0])
    cell = _install_cell(path)
    assert cell.count(f'"{PIP_SOURCE}"') == 1
    assert f'version("{KIT_DISTRIBUTION}")' in cell, "the installed-check asks for the kit's distribution"
    assert "find_spec" not in cell, "a module name can be shadowed; check the distribution instead"
    assert '"--no-deps"' in cell and '"-m", "helpers.install", "--backend"' in cell


def test_the_readme_badges_use_the_constant():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        assert f"({COLAB_NOTEBOOKS_URL}{path.name})" in readme, f"README lacks the badge of {path.name}"


def test_importing_the_installer_needs_nothing_colab_lacks():
    """`python -m helpers.install` runs when only the kit (installed with --no-deps) is there: importing
    `helpers` may use what Colab preinstalls, never a dependency the installer has yet to add."""
    not_on_colab = {"pycocoevalcap", "peft"} | {
        requirement.name
        for requirement in kit_requirements(["lavis"])
        if requirement not in kit_requirements()
    }
    code = (
        "import sys, json, importlib.metadata as m; import helpers.install; "
        "names = m.packages_distributions(); "
        "print(json.dumps(sorted({d for mod in sys.modules for d in names.get(mod.split('.')[0], [])})))"
    )
    loaded = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    assert not {name.lower() for name in loaded} & {name.lower() for name in not_on_colab}
    assert "torch" in loaded, "the check must see what `import helpers` loads"


def test_constraints_pin_every_parsable_version():
    pins = constraints({"torch": "2.11.0+cu126", "python-apt": "2.4.0+ubuntu4", "distro-info": "1.1build1"})
    assert pins == ["python-apt==2.4.0+ubuntu4", "torch==2.11.0+cu126"]


def test_an_installed_version_the_kit_cannot_use_is_an_error_not_an_upgrade():
    requirements = [Requirement("transformers>=5.9,<6"), Requirement("peft>=0.13")]
    with pytest.raises(
        InstallError, match=r"transformers 4\.28\.0 is installed, but the kit needs transformers"
    ):
        missing(requirements, {"transformers": "4.28.0"})
    assert [str(r) for r in missing(requirements, {"transformers": "5.15.1"})] == ["peft>=0.13"]


def test_packaging_tools_are_upgraded_not_pinned():
    # A fresh Python 3.11 venv has setuptools 65; the test extra needs 69 to build the wheel it checks.
    assert constraints({"setuptools": "65.5.0", "pip": "24.0", "torch": "2.11.0"}) == ["torch==2.11.0"]
    requirements = [Requirement("setuptools>=69"), Requirement("torch>=2.6")]
    assert [str(r) for r in missing(requirements, {"setuptools": "65.5.0", "torch": "2.11.0"})] == [
        "setuptools>=69"
    ]
    before = {"setuptools": "65.5.0", "torch": "2.11.0"}
    assert install.summarise(before, before | {"setuptools": "80.9.0"}).added == {}


def test_summary_names_what_was_added_and_refuses_a_moved_package():
    before = {"torch": "2.11.0", "transformers": "5.15.1"}
    summary = install.summarise(before, before | {"peft": "0.17.1"})
    assert str(summary) == (
        f"{KIT_DISTRIBUTION}: added 1 packages (peft 0.17.1); torch 2.11.0 and transformers 5.15.1 unchanged"
    )
    with pytest.raises(InstallError, match=r"torch 2\.11\.0 -> 2\.12\.1"):
        install.summarise(before, before | {"torch": "2.12.1"})


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    """A minimal pure-Python wheel: one module, its metadata and RECORD."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": f"VERSION = {version!r}\n",
        f"{dist_info}/METADATA": "\n".join(
            ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
            + [f"Requires-Dist: {r}" for r in requires]
        )
        + "\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
        wheel.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """A venv standing in for Colab: `alpha 1.0` preinstalled; a local index with alpha 2.0 and packages
    that need alpha (any version, or >= 2.0, which plain pip would satisfy by upgrading)."""
    root = tmp_path_factory.mktemp("runtime")
    wheels = root / "wheels"
    wheels.mkdir()
    _wheel(wheels, "alpha", "1.0")
    _wheel(wheels, "alpha", "2.0")
    _wheel(wheels, "beta", "1.0", ("alpha",))
    _wheel(wheels, "gamma", "1.0", ("alpha>=2.0",))
    venv.create(root / "venv", with_pip=True)
    python = str(root / "venv" / "bin" / "python")
    index = ["--no-index", "--find-links", str(wheels), "--disable-pip-version-check"]
    subprocess.run([python, "-m", "pip", "install", "-q", *index, "alpha==1.0"], check=True)
    site = subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip()
    return python, index, [site]


def test_pip_add_only_adds(runtime):
    python, index, site = runtime
    before = installed_versions(site)
    pip_add([*index, "--upgrade", "--upgrade-strategy", "eager", "beta"], before, python=python)
    after = installed_versions(site)
    assert after["alpha"] == "1.0", "an eager upgrade of beta's dependency must be held back"
    assert after["beta"] == "1.0"


def test_pip_add_refuses_what_needs_an_upgrade(runtime):
    python, index, site = runtime
    with pytest.raises(InstallError, match=r"could not add .*gamma without changing installed packages"):
        pip_add([*index, "gamma"], installed_versions(site), python=python)
    assert installed_versions(site)["alpha"] == "1.0" and "gamma" not in installed_versions(site)

"""Install Salesforce LAVIS 1.0.2 for the kit's LAVIS backend: `python -m helpers.install_lavis`.

`pip install salesforce-lavis` cannot succeed on a current Python: the only PyPI release pins
transformers<4.27, timm 0.4.12, opencv 4.5.5.64, fairscale 0.4.4 and decord. This step installs LAVIS
without its pins, then the packages its BLIP-2 code really imports (the kit's `lavis` extra, listed once in
pyproject.toml). Video decoding, spaCy and OpenCV are left out: `import lavis` imports them, but BLIP-2 never
uses them, and `helpers.backends.lavis_compat` stands in for them. torch and transformers are not touched.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, requires

from packaging.requirements import Requirement

LAVIS_RELEASE = "salesforce-lavis==1.0.2"
KIT_DISTRIBUTION = "blip2-kit"


def runtime_requirements() -> list[str]:
    """The kit's `lavis` extra, read from its installed metadata."""
    try:
        declared = requires(KIT_DISTRIBUTION) or []
    except PackageNotFoundError:
        raise SystemExit(
            f"the kit ({KIT_DISTRIBUTION}) is not installed; run `pip install -e .` (or the notebook's install "
            "cell) first"
        ) from None
    wanted = []
    for text in declared:
        requirement = Requirement(text)
        if requirement.marker is not None and requirement.marker.evaluate({"extra": "lavis"}):
            requirement.marker = None
            wanted.append(str(requirement))
    return wanted


def install(quiet: bool = True) -> None:
    """Run both pip steps with this interpreter; raises CalledProcessError if pip fails."""
    pip = [sys.executable, "-m", "pip", "install", *(["--quiet"] if quiet else [])]
    subprocess.run([*pip, "--no-deps", LAVIS_RELEASE], check=True)
    subprocess.run([*pip, *runtime_requirements()], check=True)


if __name__ == "__main__":
    install(quiet="--verbose" not in sys.argv)
    print(
        f"installed {LAVIS_RELEASE} (without its pins) and its BLIP-2 runtime: {', '.join(runtime_requirements())}"
    )

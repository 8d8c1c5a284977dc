"""Install Salesforce LAVIS 1.0.2 for the kit's LAVIS backend: `python -m helpers.install_lavis`.

`pip install salesforce-lavis` cannot succeed on a current Python: the only PyPI release pins
transformers<4.27, timm 0.4.12, opencv 4.5.5.64, fairscale 0.4.4 and decord. This step installs LAVIS
without its pins, then the packages its BLIP-2 code really imports (the kit's `lavis` extra, listed once in
pyproject.toml). Video decoding, spaCy and OpenCV are left out: `import lavis` imports them, but BLIP-2 never
uses them, and `helpers.backends.lavis_compat` stands in for them.

Both steps go through `helpers.install.pip_add`, which pins every installed distribution: timm needs
torchvision, and without the pins pip would pick the newest torchvision and, with it, a newer torch (on
Colab that broke torchaudio's compiled library and `import helpers`). With them pip picks the torchvision
built for the installed torch, and torch, transformers and the rest stay as they are.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

from helpers.install import InstallError, install, pip_add

LAVIS_RELEASE = "salesforce-lavis==1.0.2"


def add_lavis() -> None:
    """LAVIS itself, without its dependencies (the `lavis` extra supplies the ones BLIP-2 uses)."""
    try:
        version("salesforce-lavis")
    except PackageNotFoundError:
        pip_add(["--no-deps", LAVIS_RELEASE])


if __name__ == "__main__":
    try:
        print(install("lavis"))
    except InstallError as error:
        sys.exit(f"LAVIS install stopped: {error}")

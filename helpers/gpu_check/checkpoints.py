"""The folder $BLIP2_CHECKPOINT_DIR points at during the check: hub ids -> full-size random checkpoints.

`helpers.full_size` keeps its checkpoints under its own names in the user's cache; the `t4` profile asks for
hub ids. Links named like the hub ids (`<root>/Salesforce/blip2-opt-2.7b`) join the two without copying
10 GB. blip2-flan-t5-xl gets its config alone: the pre-flight reads nothing else before refusing it on a T4.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from helpers import full_size
from helpers.variants import variant_config

LINKS = {
    "Salesforce/blip2-opt-2.7b": full_size.GENERATION,
    "Salesforce/blip2-itm-vit-g": full_size.RETRIEVAL,
}
CONFIG_ONLY = {"Salesforce/blip2-flan-t5-xl": "blip2-flan-t5-xl"}


def _link(target: Path, link: Path) -> None:
    """Point `link` at `target`, replacing an older link in one rename."""
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{link.name}.link")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target, target_is_directory=True)
    os.replace(temporary, link)


def prepare(root: Path) -> Path:
    """Fill `root` with one entry per hub id the check loads; the full-size checkpoints must be built."""
    for hub_id, variant in LINKS.items():
        if not full_size.is_built(variant):
            raise FileNotFoundError(
                f"the full-size {variant} checkpoint is not built in {full_size.cache_dir()}; "
                "the check's build jobs write it (python -m helpers.gpu_check)"
            )
        _link(full_size.folder(variant), root / hub_id)
    for hub_id, variant in CONFIG_ONLY.items():
        folder = root / hub_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(variant_config(variant).to_dict(), indent=2))
    return root

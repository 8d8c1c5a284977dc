"""`load_blip2`: the one entry point from a profile name to a ready model object."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from helpers import offline
from helpers.backends.base import Blip2Backend
from helpers.memory import check_fits
from helpers.precision import choose_precision
from helpers.profiles import ProfileChoice, checkpoint_location, choose_profile
from helpers.user_input import check_model_source

BACKENDS = ("hf", "lavis")


def lavis_installed() -> bool:
    """Whether Salesforce LAVIS can be imported: on Colab it is added only when a notebook asks for it."""
    return importlib.util.find_spec("lavis") is not None


def load_blip2(
    profile: str = "auto",
    backend: str = "hf",
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    model_id: str | None = None,
    *,
    retrieval_id: str | None = None,
    verbose: bool = True,
) -> Blip2Backend:
    """Load BLIP-2 for a profile; `model_id` replaces the profile's generation checkpoint (a hub id or folder).

    `retrieval_id` replaces its retrieval checkpoint, e.g. a freshly trained toy-world run's folder.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not available; use one of {BACKENDS}")
    if backend == "lavis" and not lavis_installed():
        raise ImportError(
            "backend='lavis' needs Salesforce LAVIS, which is not installed here: run "
            '`python -m helpers.install --backend lavis` (in a notebook: set BACKEND = "lavis" and rerun the '
            "install cell), or use backend='hf'"
        )
    choice = choose_profile(profile)
    # Every checkpoint is checked (exists, config.json, weights open, or reachable on the hub) before loading.
    given = {"model_id": model_id, "retrieval_id": retrieval_id}
    for name, location in given.items():
        if location is not None:
            check_model_source(location, name)
    caption_model, retrieval_model = checkpoint_locations(choice, model_id)
    retrieval_model = retrieval_id or retrieval_model
    for location in dict.fromkeys([caption_model, retrieval_model]):
        if location not in given.values():
            check_model_source(location, f"profile {choice.profile.name!r} checkpoint")
    encoder_decoder = "t5" in caption_model.lower()
    precision = choose_precision(device, dtype, encoder_decoder_lm=encoder_decoder)
    if not choice.profile.load_in_8bit:
        check_fits(caption_model, precision)
    if verbose:
        print(
            f"BLIP-2 | {choice}\n       | backend {backend}, {precision}\n"
            f"       | generation: {offline.shown_path(caption_model)}"
        )
    offline.mark_loaded(choice.profile.is_offline)
    if backend == "lavis":
        from helpers.backends.lavis import LavisBackend as Backend
    else:
        from helpers.backends.hf import HFBackend as Backend
    model = Backend(caption_model, retrieval_model, precision, load_in_8bit=choice.profile.load_in_8bit)
    model.verbose = verbose
    return model


def checkpoint_locations(choice: ProfileChoice, model_id: str | None = None) -> tuple[str, str]:
    """The generation and retrieval checkpoints a profile loads: hub ids (or their $BLIP2_CHECKPOINT_DIR
    folders, `profiles.checkpoint_location`), or the offline folders.

    `model_id` replaces the generation checkpoint, or the retrieval one when it is a local folder holding a
    Blip2ForImageTextRetrieval (what retrieval fine-tuning writes).
    """
    profile = choice.profile
    if profile.is_offline:
        caption = str(offline.checkpoint_path(offline.CAPTION))
        retrieval = str(offline.checkpoint_path(offline.RETRIEVAL))
    else:
        caption, retrieval = (
            checkpoint_location(profile.caption_model),
            checkpoint_location(profile.retrieval_model),
        )
    if model_id is not None and _is_retrieval_folder(model_id):
        return caption, model_id
    return (model_id or caption), retrieval


def _is_retrieval_folder(model_id: str) -> bool:
    config = Path(model_id) / "config.json"
    if not config.is_file():
        return False
    return "Blip2ForImageTextRetrieval" in json.loads(config.read_text()).get("architectures", [])

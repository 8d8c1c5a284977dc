"""`load_blip2`: the one entry point from a profile name to a ready model object."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from helpers import offline
from helpers.backends.base import Blip2Backend
from helpers.memory import check_fits
from helpers.precision import choose_precision
from helpers.profiles import ProfileChoice, choose_profile

BACKENDS = ("hf", "lavis")


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
    choice = choose_profile(profile)
    caption_model, retrieval_model = checkpoint_locations(choice, model_id)
    retrieval_model = retrieval_id or retrieval_model
    encoder_decoder = "t5" in caption_model.lower()
    precision = choose_precision(device, dtype, encoder_decoder_lm=encoder_decoder)
    if not choice.profile.load_in_8bit:
        check_fits(caption_model, precision)
    if verbose:
        print(
            f"BLIP-2 | {choice}\n       | backend {backend}, {precision}\n       | generation: {caption_model}"
        )
    if backend == "lavis":
        from helpers.backends.lavis import LavisBackend as Backend
    else:
        from helpers.backends.hf import HFBackend as Backend
    return Backend(caption_model, retrieval_model, precision, load_in_8bit=choice.profile.load_in_8bit)


def checkpoint_locations(choice: ProfileChoice, model_id: str | None = None) -> tuple[str, str]:
    """The generation and retrieval checkpoints a profile loads: hub ids, or the offline folders.

    `model_id` replaces the generation checkpoint, or the retrieval one when it is a local folder holding a
    Blip2ForImageTextRetrieval (what retrieval fine-tuning writes).
    """
    profile = choice.profile
    if profile.is_offline:
        caption = str(offline.checkpoint_path(offline.CAPTION))
        retrieval = str(offline.checkpoint_path(offline.RETRIEVAL))
    else:
        caption, retrieval = profile.caption_model, profile.retrieval_model
    if model_id is not None and _is_retrieval_folder(model_id):
        return caption, model_id
    return (model_id or caption), retrieval


def _is_retrieval_folder(model_id: str) -> bool:
    config = Path(model_id) / "config.json"
    if not config.is_file():
        return False
    return "Blip2ForImageTextRetrieval" in json.loads(config.read_text()).get("architectures", [])

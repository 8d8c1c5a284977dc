"""The guide's own loading call, `lavis.models.load_model_and_preprocess(...)`, runnable on every profile.

The guide loads BLIP-2 with LAVIS's `load_model_and_preprocess("blip2_opt", "pretrain_opt2.7b", ...)` and
preprocesses with `vis_processors["eval"]`. On a real profile that call downloads LAVIS's checkpoints as the
guide says; it only needs `lavis_compat`'s shims to run on transformers 5. Offline nothing can be
downloaded, so inside `guide_checkpoints("offline")` the same call is answered from the kit's miniature:
`lavis_sources.supplied_from` answers each of LAVIS's fetches from the folder, and the model type's yaml is
read with the folder's sizes (its number of queries and image size) instead of ViT-g's, for the model and
for its `vis_processors` alike. LAVIS's own `load_model_and_preprocess`, `from_config` and processors run
unchanged.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers import offline
from helpers.backends import lavis_compat
from helpers.backends.lavis_sources import supplied_from
from helpers.profiles import ProfileChoice, choose_profile


@contextlib.contextmanager
def guide_checkpoints(profile: str = "auto") -> Iterator[ProfileChoice]:
    """While active, `load_model_and_preprocess` loads the profile's BLIP-2: LAVIS's download, or the miniature."""
    choice = choose_profile(profile)
    lavis_compat.apply()
    if not choice.profile.is_offline:
        yield choice
        return
    caption = offline.checkpoint_path(offline.CAPTION)
    with (
        supplied_from(caption, bert_tokenizer_folder=offline.checkpoint_path(offline.RETRIEVAL)) as config,
        _model_types_sized(config.num_query_tokens, config.vision_config.image_size),
    ):
        yield choice


@contextlib.contextmanager
def _model_types_sized(num_query_token: int, image_size: int) -> Iterator[None]:
    """LAVIS reads each model type's yaml (model and preprocessing) with these sizes in place of ViT-g's."""
    from lavis.models.base_model import BaseModel
    from omegaconf import OmegaConf

    saved = BaseModel.__dict__["default_config_path"]
    read_yaml = saved.__func__
    with tempfile.TemporaryDirectory(prefix="blip2-guide-") as folder:

        def sized_config_path(cls: Any, model_type: str) -> str:
            settings = OmegaConf.load(read_yaml(cls, model_type))
            if "num_query_token" in settings.model:
                settings.model.num_query_token = num_query_token
            if "image_size" in settings.model:
                settings.model.image_size = image_size
            for processor in settings.get("preprocess", {}).get("vis_processor", {}).values():
                processor.image_size = image_size
            path = Path(folder) / f"{cls.__name__}-{model_type}.yaml"
            OmegaConf.save(settings, path)
            return str(path)

        BaseModel.default_config_path = classmethod(sized_config_path)
        try:
            yield
        finally:
            BaseModel.default_config_path = saved

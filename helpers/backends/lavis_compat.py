"""Make `salesforce-lavis==1.0.2` import and run BLIP-2 on today's torch and transformers.

LAVIS 1.0.2 (March 2023) was written against transformers 4.26. `apply()` patches exactly what its BLIP-2
paths need, each shim below says what it restores, and nothing here changes how transformers' own models
behave, so the HF backend is unaffected. `apply()` is idempotent and is called by the LAVIS backend; call
it yourself before `from lavis.models import load_model_and_preprocess` to use LAVIS's API directly.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch

_applied = False

OPTIONAL_IMPORTS = {
    "decord": "video decoding for LAVIS's video datasets",
    "spacy": "LAVIS's Img2Prompt VQA model",
    "cv2": "LAVIS's RandAugment training transform",
}
"""Packages `import lavis` imports at package level although no BLIP-2 path uses them."""


class _AbsentModule(types.ModuleType):
    """Stands in for an optional package that is not installed, so `import lavis` succeeds without it.

    Any name looked up on it is another stand-in (LAVIS does `from decord import VideoReader` and
    `decord.bridge.set_bridge("torch")` at import); calling one raises ImportError naming the package, so a
    feature that really needs it fails loudly at the point of use.
    """

    def __init__(self, name: str, purpose: str) -> None:
        super().__init__(name)
        self._purpose = purpose

    def __getattr__(self, attribute: str) -> _AbsentModule:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return _AbsentModule(f"{self.__name__}.{attribute}", self._purpose)

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        if self.__name__ == "decord.bridge.set_bridge":  # a setting LAVIS makes at import; nothing to set
            return None
        package = self.__name__.split(".")[0]
        raise ImportError(
            f"{self.__name__} needs the '{package}' package ({self._purpose}), which the kit does not install "
            f"because BLIP-2 never uses it; pip install it to use this LAVIS feature"
        )


def _unsupported(name: str, reason: str) -> Callable[..., Any]:
    def unsupported(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"{name} is not available on transformers 5 ({reason}); BLIP-2 never calls it"
        )

    unsupported.__name__ = name
    return unsupported


def _restore_moved_transformers_helpers() -> None:
    """transformers 5 moved or removed helpers that LAVIS's Q-Former, BERT and T5 copies import by name."""
    import transformers.modeling_utils as modeling_utils
    import transformers.pytorch_utils as pytorch_utils

    # Moved to transformers.pytorch_utils in 4.27; LAVIS imports them from modeling_utils.
    modeling_utils.apply_chunking_to_forward = pytorch_utils.apply_chunking_to_forward
    modeling_utils.prune_linear_layer = pytorch_utils.prune_linear_layer
    # Removed with attention-head pruning in 5.0; only LAVIS's `prune_heads` methods call it.
    pruning = _unsupported("find_pruneable_heads_and_indices", "attention-head pruning was removed")
    for module in (modeling_utils, pytorch_utils):
        if not hasattr(module, "find_pruneable_heads_and_indices"):
            module.find_pruneable_heads_and_indices = pruning
    # Removed with naive model parallelism in 5.0; LAVIS's T5 copy imports it for `parallelize()` only.
    name = "transformers.utils.model_parallel_utils"
    if importlib.util.find_spec(name) is None and name not in sys.modules:
        parallel = types.ModuleType(name)
        parallel.assert_device_map = _unsupported("assert_device_map", "naive model parallelism was removed")
        parallel.get_device_map = _unsupported("get_device_map", "naive model parallelism was removed")
        sys.modules[name] = parallel


def _invert_attention_mask(self: Any, encoder_attention_mask: torch.Tensor) -> torch.Tensor:
    """transformers 4's `ModuleUtilsMixin.invert_attention_mask`, removed in 5: a 0/1 mask over the image
    features becomes an additive one (0 where attending, the dtype's minimum where not)."""
    if encoder_attention_mask.dim() == 3:
        extended = encoder_attention_mask[:, None, :, :]
    else:
        extended = encoder_attention_mask[:, None, None, :]
    extended = extended.to(dtype=self.dtype)
    return (1.0 - extended) * torch.finfo(self.dtype).min


def _no_head_mask(self: Any, head_mask: torch.Tensor | None, num_hidden_layers: int) -> list[None]:
    """transformers 4's `get_head_mask`, removed in 5 with head masking; BLIP-2 never passes a head mask."""
    if head_mask is not None:
        raise NotImplementedError("head masks were removed in transformers 5; BLIP-2 does not use them")
    return [None] * num_hidden_layers


def _restore_v4_model_initialisation() -> None:
    """LAVIS's Q-Former calls `init_weights()` where transformers 5 expects `post_init()`.

    transformers 5's `init_weights` reads bookkeeping (`all_tied_weights_keys`) that only `post_init` sets;
    it also ties weights only through `_tied_weights_keys`, so the ITG head's decoder, which transformers 4
    tied to the word embeddings by convention, is declared tied here.
    """
    from lavis.models.blip2_models import Qformer
    from transformers import PreTrainedModel

    def init_weights(self: PreTrainedModel) -> None:
        if hasattr(self, "all_tied_weights_keys"):
            PreTrainedModel.init_weights(self)
        else:
            self.post_init()  # sets the bookkeeping, then calls init_weights again

    Qformer.BertPreTrainedModel.init_weights = init_weights
    Qformer.BertPreTrainedModel.invert_attention_mask = _invert_attention_mask
    Qformer.BertPreTrainedModel.get_head_mask = _no_head_mask
    Qformer.BertLMHeadModel._tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"
    }


def _use_maintained_language_models() -> None:
    """LAVIS 1.0.2 bundles copies of transformers 4.26's OPT and T5, whose generation internals no longer exist.

    Its BLIP-2 classes build the language model through these module-level names, so pointing them at
    transformers' own classes gives the same architecture and parameter names with today's `generate`.
    """
    import transformers
    from lavis.models.blip2_models import blip2_opt, blip2_t5

    blip2_opt.OPTForCausalLM = transformers.OPTForCausalLM
    blip2_t5.T5ForConditionalGeneration = transformers.T5ForConditionalGeneration


def _autocast_only_where_supported() -> None:
    """LAVIS autocasts to fp16 for the ViT and bf16 for Flan-T5 on any GPU; a T4 has no bf16.

    Autocast stays off on CPU (as in LAVIS) and for a dtype the GPU cannot compute in, so the model runs in
    the dtype its weights were loaded in; the backend chooses those per device and prints its choice.
    """
    from lavis.models.blip2_models.blip2 import Blip2Base

    def maybe_autocast(self: Blip2Base, dtype: torch.dtype = torch.float16) -> Any:
        supported = self.device.type == "cuda" and (dtype != torch.bfloat16 or torch.cuda.is_bf16_supported())
        return torch.autocast("cuda", dtype=dtype, enabled=supported)

    Blip2Base.maybe_autocast = maybe_autocast


def _stand_in_for_optional_imports() -> None:
    for package, purpose in OPTIONAL_IMPORTS.items():
        if package not in sys.modules and importlib.util.find_spec(package) is None:
            sys.modules[package] = _AbsentModule(package, purpose)


def _import_lavis_without_global_side_effects() -> None:
    """Import LAVIS (registering its models) but undo the one global setting it makes on the way.

    Its COCO caption dataset module sets PIL's `ImageFile.LOAD_TRUNCATED_IMAGES = True` at import, which
    would make every truncated image in the process load silently as a partly grey picture; the kit's
    image loader reports such files instead, so the setting is put back.
    """
    from PIL import ImageFile

    truncated_images = ImageFile.LOAD_TRUNCATED_IMAGES
    with warnings.catch_warnings():
        # LAVIS 1.0.2 imports timm's old module paths (timm.models.hub, .registry, .layers, .helpers), which
        # timm now warns about four times; only a new LAVIS release could change them, not the learner.
        warnings.filterwarnings("ignore", r"Importing from timm\.", FutureWarning)
        import lavis  # noqa: F401

    ImageFile.LOAD_TRUNCATED_IMAGES = truncated_images


def apply() -> None:
    """Install every shim, then import LAVIS. Safe to call many times."""
    global _applied
    if _applied:
        return
    _restore_moved_transformers_helpers()
    _stand_in_for_optional_imports()
    _import_lavis_without_global_side_effects()

    _restore_v4_model_initialisation()
    _use_maintained_language_models()
    _autocast_only_where_supported()
    from helpers.backends.lavis_generate import install

    install()
    _applied = True

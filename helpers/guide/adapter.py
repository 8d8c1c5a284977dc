"""One view of the model the guide passes: the kit's backend object, or a LAVIS model with its processors.

The guide loads `model, vis_processors, _ = load_model_and_preprocess("blip2_opt", ...)` and hands around
`image = vis_processors["eval"](raw_image).unsqueeze(0).to(device)`; kit users hand a `load_blip2()`
object and a PIL image or path. The guide's functions accept either and reach the same tasks here.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from helpers.backends.base import Blip2Backend
from helpers.images import ImageSource, load_image
from helpers.prompts import VQA_TEMPLATE

_COMPONENTS = {
    "vision encoder": ("vision_model", "visual_encoder"),
    "Q-Former": ("qformer", "Qformer"),
    "language projection": ("language_projection", "opt_proj", "t5_proj"),
    "language model": ("language_model", "opt_model", "t5_model"),
}
"""Attribute names of each part in transformers' Blip2 classes and in LAVIS's Blip2OPT / Blip2T5."""


class GuideModel:
    """Captioning, VQA, instructions and visual features for either kind of model."""

    def __init__(self, model: Any, vis_processors: dict[str, Any] | None = None, device: Any = None) -> None:
        self.model = model
        self.is_kit = isinstance(model, Blip2Backend)
        if not self.is_kit and not hasattr(model, "generate"):
            raise TypeError(
                f"model is a {type(model).__name__}; pass the kit's load_blip2() object or a LAVIS BLIP-2 model"
            )
        self.vis_processors = vis_processors
        self.device = device

    @property
    def module(self) -> torch.nn.Module:
        """The torch module holding the weights (the kit's generation model, or the LAVIS model itself)."""
        return self.model.model if self.is_kit else self.model

    def prepare(self, image: ImageSource | torch.Tensor) -> Image.Image | torch.Tensor:
        """The image in the form the model takes: PIL for the kit, a preprocessed (1, 3, H, W) tensor for LAVIS."""
        if isinstance(image, torch.Tensor):
            if self.is_kit:
                raise TypeError(
                    "the kit's model takes the raw image (PIL, path or URL), not vis_processors' tensor"
                )
            return image if image.ndim == 4 else image.unsqueeze(0)
        loaded = load_image(image)
        if self.is_kit:
            return loaded
        processor = self.vis_processors["eval"] if self.vis_processors else _lavis_eval_processor(self.model)
        device = self.device or next(self.model.parameters()).device
        return processor(loaded).unsqueeze(0).to(device)

    def _lavis_generate(self, image: torch.Tensor, prompt: str | None) -> str:
        samples = {"image": image} if prompt is None else {"image": image, "prompt": prompt}
        return self.model.generate(samples)[0]

    def caption(self, image: ImageSource | torch.Tensor) -> str:
        prepared = self.prepare(image)
        return self.model.caption(prepared)[0] if self.is_kit else self._lavis_generate(prepared, None)

    def caption_batch(self, images: list[ImageSource]) -> list[str]:
        """Caption several images in one batch (for throughput)."""
        if self.is_kit:
            return self.model.caption([load_image(image) for image in images])
        return self.model.generate({"image": torch.cat([self.prepare(image) for image in images])})

    def ask(self, image: ImageSource | torch.Tensor, question: str) -> str:
        prepared = self.prepare(image)
        if self.is_kit:
            return self.model.ask(prepared, question)[0]
        return self._lavis_generate(prepared, VQA_TEMPLATE.format(question))

    def instruct(self, image: ImageSource | torch.Tensor, instruction: str) -> str:
        prepared = self.prepare(image)
        if self.is_kit:
            return self.model.instruct(prepared, instruction)[0]
        return self._lavis_generate(prepared, instruction)

    @torch.inference_mode()
    def visual_features(self, image: ImageSource | torch.Tensor) -> dict[str, torch.Tensor]:
        """ViT patch features, the Q-Former's query outputs, and (generation models) their LLM-space projection."""
        prepared = self.prepare(image)
        if self.is_kit:
            features = self.model.extract_features(prepared, mode="image")
            return {"query_output": features.image_embeds, "query_output_proj": features.image_embeds_proj}
        model = self.model
        with model.maybe_autocast():
            patches = model.ln_vision(model.visual_encoder(prepared))
        mask = torch.ones(patches.shape[:-1], dtype=torch.long, device=patches.device)
        queries = model.query_tokens.expand(patches.shape[0], -1, -1)
        output = model.Qformer.bert(
            query_embeds=queries, encoder_hidden_states=patches, encoder_attention_mask=mask, return_dict=True
        ).last_hidden_state
        result = {"image_embeds": patches, "query_output": output}
        projection = _find(model, "language projection")
        if projection is not None:
            result["llm_inputs"] = projection(output)
        return result


def _lavis_eval_processor(model: torch.nn.Module) -> Any:
    """What `load_model_and_preprocess` returns as `vis_processors["eval"]` for a BLIP-2 model: LAVIS's
    `blip_image_eval` at the ViT's input size. The guide calls `analyze_model_performance(model, device)`
    without the processors, so they are rebuilt from the model."""
    encoder = getattr(model, "visual_encoder", None)
    if encoder is None:
        raise ValueError(
            f"{type(model).__name__} has no visual_encoder to size the image processor; pass vis_processors"
        )
    from lavis.processors import load_processor
    from omegaconf import OmegaConf

    size = encoder.patch_embed.img_size[0]
    return load_processor("blip_image_eval", OmegaConf.create({"image_size": size}))


def _find(module: torch.nn.Module, part: str) -> Any:
    for name in _COMPONENTS[part]:
        if hasattr(module, name):
            return getattr(module, name)
    return None


def components(module: torch.nn.Module) -> dict[str, torch.nn.Module | torch.nn.Parameter]:
    """The BLIP-2 parts present in `module`, under one naming (learned queries included)."""
    found: dict[str, Any] = {part: _find(module, part) for part in _COMPONENTS}
    found["learned queries"] = getattr(module, "query_tokens", None)
    missing = [part for part, value in found.items() if value is None and part != "language model"]
    if missing:
        raise TypeError(f"{type(module).__name__} has no {missing}: is it a BLIP-2 model?")
    return {part: value for part, value in found.items() if value is not None}

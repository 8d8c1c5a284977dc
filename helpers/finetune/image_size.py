"""Fine-tune at another image size, as the paper does (364 px for COCO captioning and retrieval).

LAVIS builds its ViT for 364 px and bicubically interpolates the pretrained 224-px position embeddings to
the larger grid before fine-tuning (`caption_coco_*` and `coco` retrieval configs: `image_size: 364`).
`set_image_size` does the same to a loaded Hugging Face BLIP-2, permanently: the position embeddings, the
vision config and the image processor all change, so `save_pretrained` writes a model that loads and
runs at the new size.
"""

from __future__ import annotations

import torch
from torch import nn

from helpers.backends.base import Blip2Backend


def set_image_size(model: Blip2Backend, task: str, image_size: int) -> None:
    """Resize the ViT input of the model `task` trains (the retrieval model for "retrieval") to `image_size`."""
    if model.backend_name != "hf":
        raise ValueError(
            f"image_size={image_size} needs the hf backend (the {model.backend_name} backend keeps its "
            "checkpoint's size); load the model with backend='hf'"
        )
    network, processor = (
        (model.retrieval, model.retrieval_processor)
        if task == "retrieval"
        else (model.model, model.processor)
    )
    embeddings = network.vision_model.embeddings
    patch = embeddings.patch_size
    if image_size < patch or image_size % patch:
        raise ValueError(
            f"image_size={image_size} must be a positive multiple of the ViT's {patch}-pixel patches"
        )
    grid = image_size // patch
    old = embeddings.position_embedding
    with torch.no_grad():
        probe = old.new_empty(1, grid * grid + 1, old.shape[-1])
        resized = embeddings.interpolate_pos_encoding(probe, image_size, image_size).clone()
    embeddings.position_embedding = nn.Parameter(resized, requires_grad=old.requires_grad)
    embeddings.image_size, embeddings.num_patches, embeddings.num_positions = (
        image_size,
        grid * grid,
        grid * grid + 1,
    )
    network.config.vision_config.image_size = image_size
    processor.image_processor.size = {"height": image_size, "width": image_size}

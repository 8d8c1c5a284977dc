"""The released BLIP-2 checkpoints under both backends' names: one table, used by loading and the README.

LAVIS names a checkpoint by model name and model type (`load_model_and_preprocess("blip2_opt",
"pretrain_opt2.7b")`); the Hugging Face hub by repository id. Each row is one set of weights: transformers'
conversion script made the hub repositories from these LAVIS checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

from helpers.prompts import COCO_CAPTION_PROMPT


@dataclass(frozen=True)
class Checkpoint:
    """One released BLIP-2 under its two names."""

    hf_id: str
    lavis_name: str
    lavis_model_type: str
    description: str
    caption_prompt: str = ""
    """The text the checkpoint was fine-tuned to continue with a caption ("a photo of" for the COCO captioners)."""


CHECKPOINTS: tuple[Checkpoint, ...] = (
    Checkpoint("Salesforce/blip2-opt-2.7b", "blip2_opt", "pretrain_opt2.7b", "ViT-g + OPT-2.7B, pretrained"),
    Checkpoint("Salesforce/blip2-opt-6.7b", "blip2_opt", "pretrain_opt6.7b", "ViT-g + OPT-6.7B, pretrained"),
    Checkpoint(
        "Salesforce/blip2-opt-2.7b-coco",
        "blip2_opt",
        "caption_coco_opt2.7b",
        "OPT-2.7B, COCO captioning",
        COCO_CAPTION_PROMPT,
    ),
    Checkpoint(
        "Salesforce/blip2-opt-6.7b-coco",
        "blip2_opt",
        "caption_coco_opt6.7b",
        "OPT-6.7B, COCO captioning",
        COCO_CAPTION_PROMPT,
    ),
    Checkpoint(
        "Salesforce/blip2-flan-t5-xl", "blip2_t5", "pretrain_flant5xl", "ViT-g + Flan-T5-XL, pretrained"
    ),
    Checkpoint(
        "Salesforce/blip2-flan-t5-xxl", "blip2_t5", "pretrain_flant5xxl", "ViT-g + Flan-T5-XXL, pretrained"
    ),
    Checkpoint(
        "Salesforce/blip2-flan-t5-xl-coco",
        "blip2_t5",
        "caption_coco_flant5xl",
        "Flan-T5-XL, COCO captioning",
        COCO_CAPTION_PROMPT,
    ),
    Checkpoint(
        "Salesforce/blip2-itm-vit-g",
        "blip2_image_text_matching",
        "pretrain",
        "stage-1 Q-Former with ITC/ITM heads (retrieval, features)",
    ),
    Checkpoint(
        "Salesforce/blip2-itm-vit-g-coco",
        "blip2_image_text_matching",
        "coco",
        "stage-1 Q-Former fine-tuned for COCO retrieval",
    ),
)


def by_hf_id(hf_id: str) -> Checkpoint:
    """The row for a hub id; an unknown id gets the list of known ones."""
    for checkpoint in CHECKPOINTS:
        if checkpoint.hf_id == hf_id:
            return checkpoint
    known = ", ".join(checkpoint.hf_id for checkpoint in CHECKPOINTS)
    raise ValueError(
        f"{hf_id!r} has no LAVIS counterpart; the LAVIS backend loads one of: {known}, or a local folder "
        "saved in the Hugging Face layout"
    )


def caption_prompt(model_id: str) -> str:
    """The caption prompt a checkpoint was trained with: "a photo of" for the `-coco` captioners, else empty.

    A local folder gets the empty prompt; pass the prompt you fine-tuned with to `caption(..., prompt=)`.
    """
    return next((c.caption_prompt for c in CHECKPOINTS if c.hf_id == model_id), "")


def markdown_table() -> str:
    """The table as markdown, as the README shows it."""
    rows = ["| Hugging Face id | LAVIS `name` | LAVIS `model_type` | What |", "|---|---|---|---|"]
    rows += [
        f"| `{c.hf_id}` | `{c.lavis_name}` | `{c.lavis_model_type}` | {c.description} |" for c in CHECKPOINTS
    ]
    return "\n".join(rows)

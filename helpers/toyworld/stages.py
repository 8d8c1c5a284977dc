"""BLIP-2's two pretraining stages on the toy world, with the kit's own losses (`helpers.pretraining`).

Stage 1 trains the Q-Former of a `Blip2ForImageTextRetrieval` against the frozen toy ViT (ITC, ITM with hard
negatives, ITG); stage 2 starts a `Blip2ForConditionalGeneration` from that Q-Former and trains it, its
queries and a new projection through the frozen toy OPT.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import torch
from torch import nn
from transformers import (
    Blip2ForConditionalGeneration,
    Blip2ForImageTextRetrieval,
    Blip2VisionModel,
    OPTForCausalLM,
)

from helpers.pretraining import STAGE1_OBJECTIVES, freeze_for_stage, make_itg_head, stage1_losses, stage2_loss
from helpers.toyworld.sequences import pad
from helpers.toyworld.unimodal import optimiser_step, warmup_cosine

Pixels = Callable[[torch.Tensor], torch.Tensor]
"""Normalised pixel values of the training images with the given indices."""


def _trainable(*modules: nn.Module) -> list[nn.Parameter]:
    """Parameters that require gradients, each once (the ITG decoder is tied to the word embeddings)."""
    unique = {id(p): p for module in modules for p in module.parameters() if p.requires_grad}
    return list(unique.values())


def distinct_batch(groups: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of `size` examples from pairwise different groups (captions), so no in-batch negative is a positive."""
    order = torch.randperm(len(groups), generator=generator)
    seen: set[int] = set()
    chosen = []
    for index in order.tolist():
        if int(groups[index]) not in seen:
            seen.add(int(groups[index]))
            chosen.append(index)
            if len(chosen) == size:
                break
    return torch.tensor(chosen)


def stage1(
    model: Blip2ForImageTextRetrieval,
    vision: Blip2VisionModel,
    pixels: Pixels,
    tokens: dict[str, torch.Tensor],
    groups: torch.Tensor,
    *,
    dec_token_id: int,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    objectives: Collection[str] = STAGE1_OBJECTIVES,
    learning_rate: float = 2e-3,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> Blip2ForImageTextRetrieval:
    """Train the Q-Former (queries from N(0, 0.02), as LAVIS) against the frozen `vision`; returns the model.

    `on_start` runs once the model is set up, before the first step (a film's frame 0); `on_step` after each.
    """
    model.vision_model.load_state_dict(vision.state_dict())
    with torch.no_grad():
        model.query_tokens.normal_(std=model.config.qformer_config.initializer_range)
    freeze_for_stage(model, 1)
    head = make_itg_head(model)
    parameters = _trainable(model, head)
    optimiser = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.05)
    schedule = warmup_cosine(optimiser, steps)
    model.train()
    if on_start:
        on_start()
    for step in range(steps):
        batch = distinct_batch(groups, batch_size, generator)
        losses = stage1_losses(
            model,
            head,
            pixels(batch),
            tokens["input_ids"][batch],
            tokens["attention_mask"][batch],
            dec_token_id=dec_token_id,
            objectives=objectives,
            generator=generator,
        )
        optimiser_step(optimiser, schedule, parameters, losses["total"])
        if on_step:
            on_step(step, {name: value.item() for name, value in losses.items()})
    return model.eval()


def stage2(
    model: Blip2ForConditionalGeneration,
    language_model: OPTForCausalLM,
    stage1_model: Blip2ForImageTextRetrieval | None,
    vision: Blip2VisionModel,
    pixels: Pixels,
    examples: Sequence[tuple[int, tuple[list[int], list[int]]]],
    *,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    learning_rate: float = 1e-3,
    on_step: Callable[[int, float], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> Blip2ForConditionalGeneration:
    """Train queries, Q-Former and projection through the frozen LM on (image index, (ids, labels)) examples.

    Starts from stage 1's ViT, queries and Q-Former when `stage1_model` is given; without it (the paper's
    "no representation learning" ablation) from the frozen `vision` and a fresh Q-Former. `on_start` and
    `on_step` as in `stage1`.
    """
    model.language_model.load_state_dict(language_model.state_dict())
    if stage1_model is None:
        model.vision_model.load_state_dict(vision.state_dict())
        with torch.no_grad():
            model.query_tokens.normal_(std=model.config.qformer_config.initializer_range)
    else:
        model.vision_model.load_state_dict(stage1_model.vision_model.state_dict())
        model.query_tokens.data.copy_(stage1_model.query_tokens.data)
        missing, unexpected = model.qformer.load_state_dict(stage1_model.qformer.state_dict(), strict=False)
        text_side = [name for name in unexpected if ".intermediate." not in name and ".output." not in name]
        if missing or text_side:
            raise RuntimeError(f"stage-1 Q-Former does not fit stage 2: missing {missing}, extra {text_side}")
    freeze_for_stage(model, 2)
    parameters = _trainable(model)
    optimiser = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.05)
    schedule = warmup_cosine(optimiser, steps)
    model.train()
    if on_start:
        on_start()
    for step in range(steps):
        rows = torch.randint(len(examples), (batch_size,), generator=generator).tolist()
        images = torch.tensor([examples[row][0] for row in rows])
        batch = pad([examples[row][1] for row in rows], model.config.text_config.pad_token_id)
        loss = stage2_loss(
            model, pixels(images), batch["input_ids"], batch["attention_mask"], batch["labels"]
        )
        optimiser_step(optimiser, schedule, parameters, loss)
        if on_step:
            on_step(step, loss.item())
    return model.eval()

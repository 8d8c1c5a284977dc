"""A few optimisation steps of each pretraining stage on a profile's checkpoints, to watch the losses move.

The losses (`helpers.pretraining`) are written on transformers' BLIP-2 classes, so this loads the profile's
checkpoints through them whatever backend a notebook uses: the LAVIS backend reads the same folders. Stage 1
loads the retrieval checkpoint (Q-Former with its text side), stage 2 the generation checkpoint; load one
stage at a time on a small GPU. Frozen parts keep the profile's dtype; trained parameters are kept in
float32 and the steps run under autocast, so half-precision profiles train too.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm
from transformers import Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval, Blip2Processor

from helpers import offline
from helpers.backends.hf import MAX_TEXT_TOKENS, pil_processor_kwargs
from helpers.backends.key_accounting import accounted_from_pretrained
from helpers.environment import live_progress
from helpers.loading import checkpoint_locations
from helpers.precision import Precision, choose_precision
from helpers.pretraining import (
    ItgHead,
    freeze_for_stage,
    itc_logits,
    make_itg_head,
    stage1_losses,
    stage2_loss,
)
from helpers.profiles import choose_profile


@dataclass
class StageSetup:
    """One stage's model, its processor, the ITG head (stage 1 only) and where it runs."""

    model: Blip2ForImageTextRetrieval | Blip2ForConditionalGeneration
    processor: Blip2Processor
    precision: Precision
    itg_head: ItgHead | None = None

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the stage trains, the ITG head included, each parameter once (the tied decoder is shared)."""
        extra = list(self.itg_head.parameters()) if self.itg_head is not None else []
        unique = {id(p): p for p in [*self.model.parameters(), *extra] if p.requires_grad}
        return list(unique.values())

    def autocast(self) -> AbstractContextManager:
        """Mixed precision for half-precision profiles; a no-op in float32."""
        half = self.precision.dtype != torch.float32
        return torch.autocast(self.precision.device.type, dtype=self.precision.dtype, enabled=half)


def load_stage(
    stage: int, profile: str = "auto", device: str | torch.device = "auto", dtype: str | torch.dtype = "auto"
) -> StageSetup:
    """Load the checkpoint stage 1 (retrieval) or stage 2 (generation) trains, frozen as BLIP-2 freezes it."""
    if stage not in (1, 2):
        raise ValueError(f"stage={stage}; BLIP-2 pretrains in stage 1 or 2")
    choice = choose_profile(profile)
    if choice.profile.load_in_8bit:
        raise ValueError(
            f"profile {choice.profile.name!r} loads the LLM in 8 bits, which this demo does not train through; "
            "use a profile without 8-bit (e.g. 't4' or 'offline')"
        )
    caption, retrieval = checkpoint_locations(choice)
    path = retrieval if stage == 1 else caption
    precision = choose_precision(device, dtype, encoder_decoder_lm="t5" in caption.lower())
    print(
        f"stage {stage} | {choice}\n        | {precision}\n        | checkpoint: {offline.shown_path(path)}"
    )
    model_class = Blip2ForImageTextRetrieval if stage == 1 else Blip2ForConditionalGeneration
    model = accounted_from_pretrained(
        model_class, path, dtype=precision.dtype, device_map={"": str(precision.device)}
    )
    freeze_for_stage(model, stage)
    setup = StageSetup(model, Blip2Processor.from_pretrained(path, **pil_processor_kwargs()), precision)
    if stage == 1:
        setup.itg_head = make_itg_head(model)
    for parameter in setup.trainable_parameters():
        parameter.data = parameter.data.float()
    return setup


def train_stage1(
    setup: StageSetup,
    images: Sequence[Image.Image],
    texts: Sequence[str],
    steps: int,
    lr: float,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Run `steps` AdamW steps of ITC + ITM + ITG on one batch; returns each loss at every step."""
    torch.manual_seed(seed)
    processor, device = setup.processor, setup.precision.device
    pixels = processor.image_processor(list(images), return_tensors="pt")["pixel_values"].to(
        device, setup.model.dtype
    )
    tokens = processor.tokenizer(
        list(texts), padding=True, truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt"
    )
    generator = torch.Generator().manual_seed(seed)
    dec = processor.tokenizer.bos_token_id

    def losses() -> dict[str, torch.Tensor]:
        return stage1_losses(
            setup.model,
            setup.itg_head,
            pixels,
            tokens["input_ids"].to(device),
            tokens["attention_mask"].to(device),
            dec_token_id=dec,
            generator=generator,
        )

    return _optimise(setup, losses, steps, lr, "stage 1")


def train_stage2(
    setup: StageSetup,
    images: Sequence[Image.Image],
    texts: Sequence[str],
    steps: int,
    lr: float,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Run `steps` AdamW steps of the LM loss on one batch of captions (no prompt): {"lm": losses}."""
    torch.manual_seed(seed)
    model, processor, device = setup.model, setup.processor, setup.precision.device
    if model.config.use_decoder_only_language_model:
        inputs = processor(images=list(images), text=list(texts), padding=True, return_tensors="pt")
        labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    else:
        inputs = processor(images=list(images), text=[""] * len(texts), padding=True, return_tensors="pt")
        targets = processor.tokenizer(list(texts), padding=True, return_tensors="pt")
        labels = targets["input_ids"].masked_fill(targets["attention_mask"] == 0, -100)
    batch = {
        "pixel_values": inputs["pixel_values"].to(device, model.dtype),
        "input_ids": inputs["input_ids"].to(device),
        "attention_mask": inputs["attention_mask"].to(device),
        "labels": labels.to(device),
    }
    return _optimise(setup, lambda: {"lm": stage2_loss(model, **batch)}, steps, lr, "stage 2")


def _optimise(setup: StageSetup, losses, steps: int, lr: float, label: str) -> dict[str, list[float]]:
    if steps < 1:
        raise ValueError(f"steps={steps}; run at least one step")
    optimizer = torch.optim.AdamW(setup.trainable_parameters(), lr=lr, weight_decay=0.05)
    setup.model.train()
    history: dict[str, list[float]] = {}
    try:
        for _ in tqdm(range(steps), desc=label, disable=not live_progress()):
            with setup.autocast():
                values = losses()
            optimizer.zero_grad(set_to_none=True)
            (values["total"] if "total" in values else values["lm"]).backward()
            optimizer.step()
            for name, value in values.items():
                history.setdefault(name, []).append(float(value.detach()))
    finally:
        setup.model.eval()
    return history


@torch.no_grad()
def itc_similarity(setup: StageSetup, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
    """The (B, B) ITC logits of a stage-1 model for (image i, text i) pairs: what hard negatives are drawn from."""
    processor, device = setup.processor, setup.precision.device
    pixels = processor.image_processor(list(images), return_tensors="pt")["pixel_values"].to(
        device, setup.model.dtype
    )
    tokens = processor.tokenizer(
        list(texts), padding=True, truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt"
    )
    with setup.autocast():
        logits = itc_logits(
            setup.model, pixels, tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        )
    return logits.float().cpu()

"""The "frozen" unimodal models BLIP-2 starts from, pretrained here on the toy world.

BLIP-2 takes an image encoder and a language model that were trained without each other (EVA-CLIP ViT-g,
OPT) and keeps both frozen. The toy world has none, so it makes them the same way: a ViT trained to classify
every attribute of an image (supervised pretraining, like an ImageNet ViT), and an OPT trained on the world's
sentences alone. Neither ever sees the other modality.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import Blip2VisionModel, GPT2Tokenizer, OPTForCausalLM

from helpers.toyworld import models
from helpers.toyworld.sequences import pad
from helpers.toyworld.world import ATTRIBUTES, CELL, GRID, IMAGE_SIZE, SIDES, Scene

POSITION_SCALE = 15.0
"""Scales the sine-cosine position codes to about the norm of a patch embedding of the white canvas."""

PATCH_ATTRIBUTES = ("shape", "colour", "size")
"""What each patch is taught to recognise in the object it holds (every object sits in one patch's cell)."""

ADDITIVE_WEIGHT = 20.0
"""Weight of the per-patch (object, side) regression against the classification losses.

An object's patch token replaces an empty token at the same position, so the position cancels in the mean over
patches: the mean says which side the objects are on only if every object token states its side exactly. At
weight 1 the regression stays too loose for that, and a linear probe reads the side from the mean 49% of
the time; at 20, 100%."""


def attribute_labels(scenes: Sequence[Scene]) -> torch.Tensor:
    """(N, attributes) class indices of every scene's attribute values, in ATTRIBUTES order."""
    return torch.tensor(
        [[values.index(getattr(scene, name)) for name, values in ATTRIBUTES.items()] for scene in scenes]
    )


def patch_labels(scenes: Sequence[Scene]) -> torch.Tensor:
    """(N, GRID*GRID, 1 + PATCH_ATTRIBUTES) per patch: empty (0) or an object on the left (1) or right (2),
    then the object's classes (-100 where empty)."""
    labels = torch.full((len(scenes), GRID * GRID, 1 + len(PATCH_ATTRIBUTES)), -100)
    labels[:, :, 0] = 0
    for row, scene in enumerate(scenes):
        classes = [ATTRIBUTES[name].index(getattr(scene, name)) for name in PATCH_ATTRIBUTES]
        where = 1 + SIDES.index(scene.side)
        for x, y in scene.centres:
            labels[row, (y // CELL) * GRID + x // CELL] = torch.tensor([where, *classes])
    return labels


class PretrainingHeads(nn.Module):
    """Linear classifiers used only to pretrain the ViT, then discarded.

    Image-level heads read the mean of the patch tokens (every attribute), which is what a Q-Former query
    sees before its attention sharpens; patch-level heads read each patch token (empty, or an object on
    the left or the right, and the object's shape, colour and size), and a linear read-out of every patch
    is fitted to (1 if it holds an object, +1/-1 if that object is on the left/right, 0 if empty), so that
    the mean over patches carries the count and the side linearly. Dense labels make a tiny ViT learn in a
    few hundred steps what image labels alone teach it in thousands.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.image = nn.ModuleList(nn.Linear(hidden, len(values)) for values in ATTRIBUTES.values())
        self.patch = nn.ModuleList(
            nn.Linear(hidden, len(ATTRIBUTES[name]) if name else 1 + len(SIDES))
            for name in ("", *PATCH_ATTRIBUTES)
        )
        self.additive = nn.Linear(hidden, 2)

    def loss(self, output: Any, labels: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        tokens = output.last_hidden_state[:, 1:]
        pooled = tokens.mean(dim=1)
        image = sum(F.cross_entropy(head(pooled), labels[:, i]) for i, head in enumerate(self.image))
        patch = sum(
            F.cross_entropy(head(tokens).flatten(0, 1), patches[..., i].flatten(), ignore_index=-100)
            for i, head in enumerate(self.patch)
        )
        where = patches[..., 0]
        additive = torch.stack([(where > 0).float(), (where == 1).float() - (where == 2).float()], dim=-1)
        return image + patch + ADDITIVE_WEIGHT * F.mse_loss(self.additive(tokens), additive)

    @torch.no_grad()
    def accuracy(self, pooled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-attribute accuracy of the image-level heads, in ATTRIBUTES order."""
        return torch.stack(
            [(head(pooled).argmax(-1) == labels[:, i]).float().mean() for i, head in enumerate(self.image)]
        )


def train_vision(
    sizes: models.Sizes,
    pixels: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    patches: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    learning_rate: float = 5e-3,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[Blip2VisionModel, PretrainingHeads]:
    """Train a Blip2VisionModel to classify each attribute; `pixels(indices)` returns normalised images.

    Returns the ViT and its pretraining heads (for probing only: BLIP-2 keeps just the ViT)."""
    vision = Blip2VisionModel(models.vision_config(sizes))
    with torch.no_grad():
        codes = sincos_2d(IMAGE_SIZE // sizes.patch_size, sizes.hidden)
        vision.embeddings.position_embedding[0, 1:] = POSITION_SCALE * codes
    heads = PretrainingHeads(sizes.hidden)
    parameters = [*vision.parameters(), *heads.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.01)
    schedule = warmup_cosine(optimiser, steps)
    vision.train()
    for step in range(steps):
        batch = torch.randint(len(labels), (batch_size,), generator=generator)
        loss = heads.loss(vision(pixel_values=pixels(batch)), labels[batch], patches[batch])
        optimiser_step(optimiser, schedule, parameters, loss)
        _zero_key_bias(vision)
        if on_step:
            on_step(step, loss.item())
    return vision.eval(), heads.eval()


@torch.no_grad()
def _zero_key_bias(vision: Blip2VisionModel) -> None:
    """EVA-ViT has query and value biases but no key bias: keep the key third of HF's qkv.bias at 0 so the
    LAVIS backend can load the ViT (a key bias only shifts every score of a query equally, so nothing is lost)."""
    for layer in vision.encoder.layers:
        width = layer.self_attn.qkv.bias.shape[0] // 3
        layer.self_attn.qkv.bias[width : 2 * width] = 0


def sincos_2d(grid: int, width: int) -> torch.Tensor:
    """(grid*grid, width) 2-D sine-cosine position codes (MAE's initialisation), row-major patches.

    The config's tiny random position embeddings leave a from-scratch ViT blind to where things are for
    thousands of steps; "on the left" must be learnable in hundreds. The caller scales them up to the
    patch embeddings' size, so position is not drowned by content.
    """
    quarter = width // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    rows, columns = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    codes = []
    for axis in (columns.flatten(), rows.flatten()):
        angles = axis[:, None].float() * frequencies[None, :]
        codes += [angles.sin(), angles.cos()]
    return torch.cat(codes, dim=1)


def warmup_cosine(
    optimiser: torch.optim.Optimizer, steps: int, warmup: float = 0.05
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to zero, the schedule BLIP-2 pretrains with."""
    warm = max(1, int(steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, steps - warm)
        return 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item())

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


def optimiser_step(
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    parameters: list[nn.Parameter],
    loss: torch.Tensor,
) -> None:
    """One update of every toy-world training loop: backward, clip the gradient norm to 1, step, schedule."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimiser.step()
    schedule.step()


def train_language_model(
    sizes: models.Sizes,
    tokenizer: GPT2Tokenizer,
    documents: Sequence[tuple[list[int], list[int]]],
    *,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    learning_rate: float = 2e-3,
    on_step: Callable[[int, float], None] | None = None,
) -> OPTForCausalLM:
    """Train an OPT on the world's text documents (input_ids, labels), causal LM loss on the labelled part."""
    model = models.language_model(sizes, tokenizer)
    parameters = list(model.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.01)
    schedule = warmup_cosine(optimiser, steps)
    model.train()
    for step in range(steps):
        rows = torch.randint(len(documents), (batch_size,), generator=generator).tolist()
        batch = pad([documents[row] for row in rows], tokenizer.pad_token_id)
        loss = model(**batch).loss
        optimiser_step(optimiser, schedule, parameters, loss)
        if on_step:
            on_step(step, loss.item())
    return model.eval()

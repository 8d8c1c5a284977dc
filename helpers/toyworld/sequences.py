"""Token sequences for the language model: text-only pretraining documents and stage-2 examples.

Stage 2 feeds OPT [soft visual prompt] </s> prompt -> target. The LM is pretrained on the same layout with
the caption's words where the visual prompt will go, one word per query, so it learns from text alone that
a description, then </s>, then "Question: ... Answer:" is answered from the description; stage 2 then only
has to make the queries say what the caption said. Targets end with a newline, the token Salesforce's OPT
checkpoints (and so both backends) stop generating at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import GPT2Tokenizer

from helpers.prompts import vqa_prompt
from helpers.toyworld.world import QA, Scene

IGNORE = -100


@dataclass(frozen=True)
class Example:
    """One prompt and its target: an empty prompt asks for a caption, as the kit's `caption` does."""

    prompt: str
    target: str


def examples(scene: Scene, qas: Sequence[QA]) -> list[Example]:
    """The caption and every question of a scene, questions in the kit's VQA prompt."""
    return [Example("", scene.caption()), *(Example(vqa_prompt(qa.question), qa.answer) for qa in qas)]


def encode(tokenizer: GPT2Tokenizer, prefix: list[int], example: Example) -> tuple[list[int], list[int]]:
    """input_ids and labels of prefix + </s> + prompt + target + newline; only the target is learned."""
    prompt = [tokenizer.bos_token_id, *tokenizer(example.prompt, add_special_tokens=False).input_ids]
    spaced = f" {example.target}" if example.prompt else example.target
    target = tokenizer(spaced + "\n", add_special_tokens=False).input_ids
    ids = prefix + prompt + target
    return ids, [IGNORE] * (len(prefix) + len(prompt)) + target


def text_documents(
    tokenizer: GPT2Tokenizer, scene: Scene, scene_examples: Sequence[Example], queries: int
) -> list[tuple[list[int], list[int]]]:
    """Pretraining documents for the LM alone: the caption's words stand where the visual prompt will go.

    " two small red circles on the left." is `queries` tokens long, so </s> and the question sit at the same
    positions as after the visual prompt, and each query has a word whose place it can take. The caption is
    tokenized once for all of the scene's examples.
    """
    prefix = tokenizer(f" {scene.caption()}.", add_special_tokens=False).input_ids
    if len(prefix) != queries:
        raise ValueError(
            f"the caption {scene.caption()!r} is {len(prefix)} tokens with its period, the visual prompt "
            f"is {queries}; build the models with Sizes(num_query_tokens={len(prefix)})"
        )
    return [encode(tokenizer, prefix, example) for example in scene_examples]


def visual_example(tokenizer: GPT2Tokenizer, image_token_id: int, queries: int, example: Example):
    """A stage-2 example: one <image> placeholder per query, as Blip2Processor writes them."""
    return encode(tokenizer, [image_token_id] * queries, example)


def pad(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids, attention_mask and labels (-100 on padding)."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), IGNORE)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (ids, targets) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor(targets)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}

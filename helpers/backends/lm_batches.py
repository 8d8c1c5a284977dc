"""Token batches for the language-model loss, built once for both backends.

Both backends put the visual prompt (the projected queries) in front of these tokens; the loss is the LM's
cross-entropy on the target tokens only. The target ends with the end-of-text token the model stops at in
generation, so fine-tuning teaches it where to stop.
"""

from __future__ import annotations

from typing import Any

import torch

IGNORE_INDEX = -100
"""Label value cross-entropy skips: prompt tokens and padding carry it."""


def target_ids(tokenizer: Any, prompt: str, target: str, room: int | None, end_id: int) -> list[int]:
    """Target tokens plus the end token; a space separates the target from a non-empty prompt."""
    text = f" {target}" if prompt and not prompt.endswith(" ") else target
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if room is not None:
        ids = ids[: max(room - 1, 0)]
    return [*ids, end_id]


def pad_right(sequences: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists padded on the right with `value`, and the matching attention mask."""
    width = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), width), value, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids, mask


def decoder_only_batch(
    tokenizer: Any, prompts: list[str], targets: list[str], max_length: int | None, end_id: int
) -> dict[str, torch.Tensor]:
    """OPT: [BOS prompt][target END][pad]; only the target and END carry labels.

    `max_length` caps prompt plus target tokens: targets are truncated, prompts never.
    """
    sequences, labels = [], []
    for prompt, target in zip(prompts, targets, strict=True):
        prompt_ids = tokenizer(prompt)["input_ids"]
        room = None if max_length is None else max_length - len(prompt_ids)
        answer = target_ids(tokenizer, prompt, target, room, end_id)
        sequences.append(prompt_ids + answer)
        labels.append([IGNORE_INDEX] * len(prompt_ids) + answer)
    input_ids, attention_mask = pad_right(sequences, tokenizer.pad_token_id)
    label_ids, _ = pad_right(labels, IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": label_ids}


def encoder_decoder_batch(
    tokenizer: Any, prompts: list[str], targets: list[str], max_length: int | None
) -> dict[str, torch.Tensor]:
    """Flan-T5: the encoder reads [prompt EOS], the decoder learns [target EOS]."""
    sources = [
        tokenizer(prompt, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for prompt in prompts
    ]
    answers = [target_ids(tokenizer, "", target, max_length, tokenizer.eos_token_id) for target in targets]
    input_ids, attention_mask = pad_right(sources, tokenizer.pad_token_id)
    labels, _ = pad_right(answers, IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def prepend_visual(
    batch: dict[str, torch.Tensor], num_queries: int, labelled: bool
) -> dict[str, torch.Tensor]:
    """Widen the mask (and labels, when they share the sequence) for the queries placed in front."""
    rows = batch["input_ids"].shape[0]
    widened = dict(batch)
    widened["attention_mask"] = torch.cat(
        [torch.ones(rows, num_queries, dtype=torch.long), batch["attention_mask"]], dim=1
    )
    if labelled:
        widened["labels"] = torch.cat(
            [torch.full((rows, num_queries), IGNORE_INDEX, dtype=torch.long), batch["labels"]], dim=1
        )
    return widened

"""`generate` for LAVIS's Blip2OPT and Blip2T5, rewritten for transformers 5.

LAVIS 1.0.2's OPT generation passes `query_embeds` into its private copy of transformers 4.26's generation
loop; that loop no longer exists. These versions keep LAVIS's signature and results but hand transformers'
`generate` the visual prompt as `inputs_embeds` (queries projected into the LM, then the text prompt).
They also take one prompt per image (1.0.2's OPT repeats a single prompt for the whole batch), pad
prompts on the left, which a decoder-only LM needs to continue every prompt from its last token, and count
`min_length` in new tokens (see `GENERATE_DEFAULTS`).
"""

from __future__ import annotations

from typing import Any

import torch

GENERATE_DEFAULTS: dict[str, Any] = {
    "use_nucleus_sampling": False,
    "num_beams": 5,
    "max_length": 30,
    "min_length": 1,
    "top_p": 0.9,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "num_captions": 1,
    "temperature": 1.0,
}
"""LAVIS's BLIP-2 defaults. Here both `max_length` and `min_length` count generated tokens only.

LAVIS 1.0.2 does so for `max_length` (its `max_new_tokens`) but hands `min_length` to transformers as
`min_length`, which also counts what is already in the sequence: OPT's prompt with its BOS token, Flan-T5's
decoder start token. So LAVIS's caption `min_len=8` means 7 new tokens with no prompt and 4 after
"a photo of"; `helpers.evaluation.protocols.lavis_min_new_tokens` converts a LAVIS value for these versions.
"""


def _prompts(samples: dict[str, Any], default: str, batch: int) -> list[str]:
    prompt = samples.get("prompt", default)
    prompts = [prompt] * batch if isinstance(prompt, str) else list(prompt)
    if len(prompts) != batch:
        raise ValueError(f"{len(prompts)} prompts for {batch} images; give one per image or a single string")
    return prompts


def visual_prompt(model: Any, image: torch.Tensor, projection: torch.nn.Module) -> torch.Tensor:
    """The 32 query outputs for each image, projected to the LM's width, as LAVIS's `generate` computes them."""
    with model.maybe_autocast():
        image_embeds = model.ln_vision(model.visual_encoder(image))
    image_embeds = image_embeds.float()
    image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image.device)
    query_tokens = model.query_tokens.expand(image_embeds.shape[0], -1, -1)
    query_output = model.Qformer.bert(
        query_embeds=query_tokens,
        encoder_hidden_states=image_embeds,
        encoder_attention_mask=image_atts,
        return_dict=True,
    )
    with model.maybe_autocast():
        return projection(query_output.last_hidden_state)


def _after_visual_prompt(
    visual: torch.Tensor, embeddings: torch.Tensor, attention_mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """`inputs_embeds` and `attention_mask` of the visual prompt followed by the text prompt's tokens."""
    visual_mask = torch.ones(visual.shape[:-1], dtype=attention_mask.dtype, device=attention_mask.device)
    return {
        "inputs_embeds": torch.cat([visual.to(embeddings.dtype), embeddings], dim=1),
        "attention_mask": torch.cat([visual_mask, attention_mask], dim=1),
    }


def _hf_generate_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    settings = {**GENERATE_DEFAULTS, **options}
    sampling = settings["use_nucleus_sampling"]
    kwargs = {
        "do_sample": sampling,
        "num_beams": 1 if sampling else settings["num_beams"],
        "max_new_tokens": settings["max_length"],
        "min_new_tokens": settings["min_length"],
        "repetition_penalty": settings["repetition_penalty"],
        "length_penalty": settings["length_penalty"],
        "num_return_sequences": settings["num_captions"],
    }
    if sampling:
        kwargs.update(top_p=settings["top_p"], temperature=settings["temperature"])
    return kwargs


@torch.no_grad()
def opt_generate(self: Any, samples: dict[str, Any], **options: Any) -> list[str]:
    """Blip2OPT.generate: captions, or answers to `samples["prompt"]` (a string or one per image)."""
    image = samples["image"]
    visual = visual_prompt(self, image, self.opt_proj)
    self.opt_tokenizer.padding_side = "left"
    tokens = self.opt_tokenizer(
        _prompts(samples, self.prompt, image.shape[0]), return_tensors="pt", padding="longest"
    ).to(image.device)
    embeddings = self.opt_model.get_input_embeddings()(tokens.input_ids)
    # Token ids beside the embeddings (pad ids where the queries sit), as transformers' Blip2 passes them, so
    # that the repetition penalty sees the prompt as in LAVIS 1.0.2; generate then returns them first.
    placeholders = torch.full(visual.shape[:-1], self.opt_tokenizer.pad_token_id, device=image.device)
    input_ids = torch.cat([placeholders.to(tokens.input_ids.dtype), tokens.input_ids], dim=1)
    with self.maybe_autocast():
        output_ids = self.opt_model.generate(
            input_ids=input_ids,
            **_after_visual_prompt(visual, embeddings, tokens.attention_mask),
            eos_token_id=self.eos_token_id,  # LAVIS stops OPT at a newline
            pad_token_id=self.opt_tokenizer.pad_token_id,
            **_hf_generate_kwargs(options),
        )
    new_ids = output_ids[:, input_ids.shape[1] :]
    return [text.strip() for text in self.opt_tokenizer.batch_decode(new_ids, skip_special_tokens=True)]


@torch.no_grad()
def t5_generate(self: Any, samples: dict[str, Any], **options: Any) -> list[str]:
    """Blip2T5.generate, computed in the dtype the T5 weights are in (LAVIS forces bf16, which a T4 lacks)."""
    image = samples["image"]
    visual = visual_prompt(self, image, self.t5_proj)
    tokens = self.t5_tokenizer(
        _prompts(samples, self.prompt, image.shape[0]), padding="longest", return_tensors="pt"
    ).to(image.device)
    embeddings = self.t5_model.encoder.embed_tokens(tokens.input_ids)
    with self.maybe_autocast(dtype=torch.bfloat16):
        output_ids = self.t5_model.generate(
            **_after_visual_prompt(visual, embeddings, tokens.attention_mask),
            **_hf_generate_kwargs(options),
        )
    return [text.strip() for text in self.t5_tokenizer.batch_decode(output_ids, skip_special_tokens=True)]


def install() -> None:
    """Replace the two generate methods on LAVIS's classes."""
    from lavis.models.blip2_models.blip2_opt import Blip2OPT
    from lavis.models.blip2_models.blip2_t5 import Blip2T5

    Blip2OPT.generate = opt_generate
    Blip2T5.generate = t5_generate

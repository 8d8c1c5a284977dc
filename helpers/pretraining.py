"""BLIP-2's two pretraining stages, as losses computed on transformers' own BLIP-2 models.

Stage 1 (`stage1_losses`) trains the Q-Former of a `Blip2ForImageTextRetrieval` against a frozen image
encoder with ITC, ITM and ITG; the released retrieval checkpoints have no ITG head, so `make_itg_head`
builds BERT's language-model head on the Q-Former's text side, tied to its word embeddings. Stage 2
(`stage2_loss`) trains the Q-Former and the projection of a `Blip2ForConditionalGeneration` through its
frozen language model. The loss formulas themselves are in `helpers.objectives`; the masks in
`helpers.anatomy`.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn
from torch.nn import functional as F
from transformers import Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval
from transformers.activations import ACT2FN

from helpers.anatomy import extended_attention_mask, qformer_attention_mask
from helpers.objectives import (
    ITC_LABEL_SMOOTHING,
    ITC_TEMPERATURE,
    itc_loss,
    itm_loss,
    lm_loss,
    sample_hard_negatives,
)

STAGE1_OBJECTIVES = ("itc", "itm", "itg")
TRAINED_VISION_NORM = "vision_model.post_layernorm."
"""The ViT's output LayerNorm, which BLIP-2 trains although the ViT is frozen."""


class ItgHead(nn.Module):
    """BERT's masked-LM head (dense, activation, LayerNorm, decoder) used as the Q-Former's ITG head."""

    def __init__(self, word_embeddings: nn.Embedding, hidden_act: str, layer_norm_eps: float) -> None:
        super().__init__()
        vocab_size, hidden_size = word_embeddings.weight.shape
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = ACT2FN[hidden_act]
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.decoder = nn.Linear(hidden_size, vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied: predicting a token scores its input embedding
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits for each text position."""
        return self.decoder(self.layer_norm(self.activation(self.dense(hidden_states)))) + self.bias


def make_itg_head(model: Blip2ForImageTextRetrieval) -> ItgHead:
    """A fresh ITG head for a retrieval model, on its device, initialised as BERT initialises its layers."""
    config = model.config.qformer_config
    embeddings = model.embeddings.word_embeddings
    head = ItgHead(embeddings, config.hidden_act, config.layer_norm_eps)
    nn.init.normal_(head.dense.weight, std=config.initializer_range)
    nn.init.zeros_(head.dense.bias)
    return head.to(device=embeddings.weight.device, dtype=embeddings.weight.dtype)


def stage1_losses(
    model: Blip2ForImageTextRetrieval,
    itg_head: nn.Module,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    dec_token_id: int,
    objectives: Collection[str] = STAGE1_OBJECTIVES,
    generator: torch.Generator | None = None,
    temperature: torch.Tensor | float = ITC_TEMPERATURE,
    ids: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The stage-1 losses of one batch of B (image i, text i) pairs: a dict with each objective and "total".

    input_ids/attention_mask (B, T) are the Q-Former tokenizer's output, [CLS] first and right-padded.
    ITC contrasts the queries' projections with the [CLS] projections; ITM classifies the B true pairs and
    2B hard negatives sampled from the ITC similarities (`generator` makes the draw reproducible, `ids`
    marks pairs that share an image); ITG replaces [CLS] by `dec_token_id` ([DEC]) and predicts each token
    from the queries and the tokens before it. Three Q-Former passes: queries (with the [DEC] text when ITG
    is asked for), text alone, and the 3B ITM pairs. Gradients flow wherever parameters require them:
    freeze the image encoder with `freeze_for_stage(model, 1)`.
    """
    wanted = _check_objectives(objectives)
    _check_text(input_ids, attention_mask, pixel_values.shape[0])
    image_embeds = model.vision_model(pixel_values=pixel_values).last_hidden_state
    batch = image_embeds.shape[0]
    queries = model.query_tokens.expand(batch, -1, -1)
    num_queries = queries.shape[1]
    mask_dtype = model.qformer.layernorm.weight.dtype
    losses: dict[str, torch.Tensor] = {}

    if "itg" in wanted:
        dec_ids = input_ids.clone()
        dec_ids[:, 0] = dec_token_id
        mask = qformer_attention_mask("itg", num_queries, attention_mask)
        hidden = model.qformer(
            query_embeds=model.embeddings(input_ids=dec_ids, query_embeds=queries),
            query_length=num_queries,
            attention_mask=extended_attention_mask(mask, mask_dtype),
            encoder_hidden_states=image_embeds,
        ).last_hidden_state
        query_output = hidden[:, :num_queries]
        labels = dec_ids.masked_fill(attention_mask == 0, -100)
        logits = itg_head(hidden[:, num_queries:])
        losses["itg"] = lm_loss(logits, labels, label_smoothing=ITC_LABEL_SMOOTHING)
    else:
        query_output = model.qformer(
            query_embeds=queries, query_length=num_queries, encoder_hidden_states=image_embeds
        ).last_hidden_state

    if "itc" in wanted or "itm" in wanted:
        image_proj = F.normalize(
            model.vision_projection(query_output.to(model.vision_projection.weight.dtype)), dim=-1
        )
        loss, similarity = itc_loss(image_proj, _text_proj(model, input_ids, attention_mask), temperature)
        if "itc" in wanted:
            losses["itc"] = loss
        if "itm" in wanted:
            losses["itm"] = _itm(model, image_embeds, input_ids, attention_mask, similarity, generator, ids)

    losses["total"] = torch.stack([losses[name] for name in STAGE1_OBJECTIVES if name in losses]).sum()
    return losses


def itc_logits(
    model: Blip2ForImageTextRetrieval,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: torch.Tensor | float = ITC_TEMPERATURE,
) -> torch.Tensor:
    """The (B, B) image->text ITC logits stage 1 trains and draws hard negatives from (cosine / temperature)."""
    _check_text(input_ids, attention_mask, pixel_values.shape[0])
    image_embeds = model.vision_model(pixel_values=pixel_values).last_hidden_state
    queries = model.query_tokens.expand(image_embeds.shape[0], -1, -1)
    query_output = model.qformer(
        query_embeds=queries, query_length=queries.shape[1], encoder_hidden_states=image_embeds
    ).last_hidden_state
    image_proj = F.normalize(
        model.vision_projection(query_output.to(model.vision_projection.weight.dtype)), dim=-1
    )
    return itc_loss(image_proj, _text_proj(model, input_ids, attention_mask), temperature)[1]


def _text_proj(
    model: Blip2ForImageTextRetrieval, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The normalised [CLS] projections of the text alone (the ITC mask's text block)."""
    mask = qformer_attention_mask("itc", 0, attention_mask)
    text_output = model.qformer(
        query_embeds=model.embeddings(input_ids=input_ids),
        query_length=0,
        attention_mask=extended_attention_mask(mask, model.qformer.layernorm.weight.dtype),
    ).last_hidden_state
    return F.normalize(
        model.text_projection(text_output[:, 0].to(model.text_projection.weight.dtype)), dim=-1
    )


def _itm(
    model: Blip2ForImageTextRetrieval,
    image_embeds: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    similarity: torch.Tensor,
    generator: torch.Generator | None,
    ids: torch.Tensor | None,
) -> torch.Tensor:
    """ITM on B positives, B (hard negative image, text) and B (image, hard negative text) pairs."""
    batch = image_embeds.shape[0]
    negative_text, negative_image = sample_hard_negatives(similarity.detach(), generator, ids=ids)
    images = torch.cat([image_embeds, image_embeds[negative_image], image_embeds])
    texts = torch.cat([input_ids, input_ids, input_ids[negative_text]])
    masks = torch.cat([attention_mask, attention_mask, attention_mask[negative_text]])
    queries = model.query_tokens.expand(3 * batch, -1, -1)
    num_queries = queries.shape[1]
    mask = qformer_attention_mask("itm", num_queries, masks)
    hidden = model.qformer(
        query_embeds=model.embeddings(input_ids=texts, query_embeds=queries),
        query_length=num_queries,
        attention_mask=extended_attention_mask(mask, model.qformer.layernorm.weight.dtype),
        encoder_hidden_states=images,
    ).last_hidden_state
    logits = model.itm_head(hidden[:, :num_queries].to(model.itm_head.weight.dtype)).mean(dim=1)
    labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(logits.device)
    return itm_loss(logits, labels)


def stage2_loss(
    model: Blip2ForConditionalGeneration,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """The stage-2 language-model loss: the LLM predicts the text from the projected queries (soft prompt).

    Decoder-only LLM (OPT): input_ids come from the Blip2Processor, which puts one image placeholder per
    query before the text; labels has input_ids' shape, -100 where there is nothing to predict (prompt,
    padding; the placeholders are masked here). Encoder-decoder LLM (Flan-T5): input_ids are the encoder's
    prompt (placeholders included), labels the decoder's target tokens.
    """
    image_token = model.config.image_token_id
    placeholders = (input_ids == image_token).sum(dim=1)
    if not bool((placeholders == model.config.num_query_tokens).all()):
        raise ValueError(
            f"input_ids hold {placeholders.tolist()} image placeholder tokens per row, the model needs "
            f"{model.config.num_query_tokens}: tokenize with the checkpoint's Blip2Processor, which inserts them"
        )
    if model.config.use_decoder_only_language_model:
        if labels.shape != input_ids.shape:
            raise ValueError(
                f"labels {tuple(labels.shape)} must have input_ids' shape {tuple(input_ids.shape)}"
            )
        logits = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask).logits
        return lm_loss(logits, labels.masked_fill(input_ids == image_token, -100))
    logits = model(
        pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, labels=labels
    ).logits
    return lm_loss(logits, labels, shift=False)


def freeze_for_stage(model: Blip2ForImageTextRetrieval | Blip2ForConditionalGeneration, stage: int) -> None:
    """Freeze what BLIP-2 keeps frozen: the image encoder in stage 1, the image encoder and LLM in stage 2.

    As in LAVIS, the ViT's last LayerNorm (`ln_vision` there, `vision_model.post_layernorm` here) is not
    part of the frozen encoder: it is trained with the Q-Former.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage={stage}; BLIP-2 pretrains in stage 1 or 2")
    frozen = ["vision_model"] if stage == 1 else ["vision_model", "language_model"]
    missing = [name for name in frozen if not hasattr(model, name)]
    if missing:
        raise ValueError(
            f"stage {stage} freezes {missing}, which {type(model).__name__} lacks: stage 1 trains a "
            "Blip2ForImageTextRetrieval, stage 2 a Blip2ForConditionalGeneration"
        )
    for name, parameter in model.named_parameters():
        trained_norm = name.startswith(TRAINED_VISION_NORM)
        parameter.requires_grad_(trained_norm or name.split(".")[0] not in frozen)


def _check_objectives(objectives: Collection[str]) -> set[str]:
    wanted = set(objectives)
    unknown = wanted - set(STAGE1_OBJECTIVES)
    if unknown or not wanted:
        raise ValueError(f"objectives={sorted(objectives)}; choose one or more of {STAGE1_OBJECTIVES}")
    return wanted


def _check_text(input_ids: torch.Tensor, attention_mask: torch.Tensor, batch: int) -> None:
    if input_ids.shape != attention_mask.shape or input_ids.ndim != 2 or input_ids.shape[0] != batch:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} must both be "
            f"(batch, tokens) with one text per image ({batch} images)"
        )

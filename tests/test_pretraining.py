"""The kit's Q-Former masks and pretraining losses, checked against what transformers' BLIP-2 really computes.

Mask equality is proven on the real modules: forward hooks record the attention probabilities of every
self-attention layer (eager attention returns them), and the pattern of non-zero probabilities is the mask
that forward applied.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2ForImageTextRetrieval,
    Blip2Processor,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    T5Config,
)

from helpers import offline
from helpers.anatomy import extended_attention_mask, qformer_attention_mask
from helpers.pretraining import freeze_for_stage, itc_logits, make_itg_head, stage1_losses, stage2_loss
from helpers.pretraining_run import load_stage, train_stage1, train_stage2

TEXTS = ["a photo of a cat on a couch", "a rocket", "a cup of coffee on a table", "two dogs"]


@pytest.fixture(scope="module")
def retrieval() -> tuple[Blip2ForImageTextRetrieval, Blip2Processor]:
    path = offline.checkpoint_path(offline.RETRIEVAL)
    model = Blip2ForImageTextRetrieval.from_pretrained(path, attn_implementation="eager").eval()
    return model, Blip2Processor.from_pretrained(path)


@pytest.fixture(scope="module")
def batch(retrieval, samples) -> dict[str, torch.Tensor]:
    _, processor = retrieval
    images = [*samples, samples[0]]
    tokens = processor.tokenizer(TEXTS, padding=True, return_tensors="pt")
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    assert (tokens["attention_mask"] == 0).any(), "the batch must contain padding for the mask tests to bite"
    return {
        "pixel_values": pixels,
        "input_ids": tokens["input_ids"],
        "attention_mask": tokens["attention_mask"],
    }


@contextmanager
def recorded_attention(model: Blip2ForImageTextRetrieval) -> Iterator[list[torch.Tensor]]:
    """Attention probabilities (B, heads, L, L) of every Q-Former self-attention call, in call order."""
    records: list[torch.Tensor] = []
    handles = [
        layer.attention.attention.register_forward_hook(
            lambda _m, _i, output: records.append(output[1].detach())
        )
        for layer in model.qformer.encoder.layer
    ]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def _applied(records: list[torch.Tensor]) -> torch.Tensor:
    """Where any head of any layer attended: the mask the forward applied, as 0/1 (B, L, L)."""
    return torch.stack(records).gt(0).any(dim=0).any(dim=1).long()


# ---- the mask builder on its own ------------------------------------------------------------------------
def test_masks_on_a_small_example() -> None:
    text_mask = torch.tensor([[1, 1, 0]])  # two queries, three tokens, the last one padding
    expected = {
        "itc": [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0]],
        "itm": [[1, 1, 1, 1, 0]] * 5,
        "itg": [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]],
    }
    for kind, rows in expected.items():
        assert qformer_attention_mask(kind, 2, text_mask).tolist() == [rows], kind


def test_mask_errors_name_the_input() -> None:
    with pytest.raises(ValueError, match="kind="):
        qformer_attention_mask("mlm", 2, torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"text_mask\[:, 0\]"):
        qformer_attention_mask("itc", 2, torch.tensor([[0, 1, 1]]))  # left padding
    with pytest.raises(ValueError, match="batch, tokens"):
        qformer_attention_mask("itc", 2, torch.ones(3, dtype=torch.long))


def test_extended_mask_is_additive() -> None:
    extended = extended_attention_mask(
        qformer_attention_mask("itg", 1, torch.tensor([[1, 1]])), torch.float32
    )
    assert extended.shape == (1, 1, 3, 3)
    assert extended[0, 0, 0, 0] == 0 and extended[0, 0, 0, 1] == torch.finfo(torch.float32).min


# ---- the masks transformers' own forwards apply --------------------------------------------------------
def test_itm_mask_equals_hf_image_text_matching_forward(retrieval, batch) -> None:
    model, _ = retrieval
    with torch.no_grad(), recorded_attention(model) as records:
        model(**batch, use_image_text_matching_head=True)
    expected = qformer_attention_mask("itm", model.config.num_query_tokens, batch["attention_mask"])
    assert torch.equal(_applied(records), expected)


def test_itc_mask_equals_hf_contrastive_forward(retrieval, batch) -> None:
    model, _ = retrieval
    queries = model.config.num_query_tokens
    with torch.no_grad(), recorded_attention(model) as records:
        model(**batch, use_image_text_matching_head=False)
    layers = len(model.qformer.encoder.layer)
    assert len(records) == 2 * layers  # one pass for the queries, one for the text: nothing crosses
    query_block, text_block = _applied(records[:layers]), _applied(records[layers:])
    applied = torch.zeros_like(qformer_attention_mask("itc", queries, batch["attention_mask"]))
    applied[:, :queries, :queries] = query_block
    applied[:, queries:, queries:] = text_block
    assert torch.equal(applied, qformer_attention_mask("itc", queries, batch["attention_mask"]))


def test_itc_mask_reproduces_hf_separate_passes_in_one(retrieval, batch) -> None:
    """Run queries and text together under the ITC mask: each side's output equals HF's own separate pass."""
    model, _ = retrieval
    image = model.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state
    queries = model.query_tokens.expand(image.shape[0], -1, -1)
    count = queries.shape[1]
    with torch.no_grad():
        mask = qformer_attention_mask("itc", count, batch["attention_mask"])
        together = model.qformer(
            query_embeds=model.embeddings(input_ids=batch["input_ids"], query_embeds=queries),
            query_length=count,
            attention_mask=extended_attention_mask(mask, torch.float32),
            encoder_hidden_states=image,
        ).last_hidden_state
        alone_queries = model.qformer(query_embeds=queries, encoder_hidden_states=image).last_hidden_state
        alone_text = model.qformer(
            query_embeds=model.embeddings(input_ids=batch["input_ids"]),
            query_length=0,
            attention_mask=batch["attention_mask"],
        ).last_hidden_state
    real = batch["attention_mask"].bool()
    assert torch.allclose(together[:, :count], alone_queries, atol=1e-5)
    assert torch.allclose(together[:, count:][real], alone_text[real], atol=1e-5)


def test_itg_mask_reaches_the_qformer_unchanged(retrieval, batch) -> None:
    """transformers has no ITG forward: check that the 4-D mask stage1_losses passes is applied as built."""
    model, processor = retrieval
    head = make_itg_head(model)
    with torch.no_grad(), recorded_attention(model) as records:
        stage1_losses(model, head, **batch, dec_token_id=processor.tokenizer.bos_token_id, objectives=["itg"])
    expected = qformer_attention_mask("itg", model.config.num_query_tokens, batch["attention_mask"])
    assert torch.equal(_applied(records), expected)


def test_itg_text_cannot_see_the_future(retrieval, batch) -> None:
    """Changing the last token leaves the loss on earlier tokens alone: the logits before it do not move."""
    model, processor = retrieval
    head = make_itg_head(model)
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _m, _i, output: captured.append(output.detach()))
    changed = batch["input_ids"].clone()
    changed[1, 2] = processor.tokenizer.convert_tokens_to_ids("cat")  # row 1 is "[CLS] a rocket [SEP] ..."
    try:
        with torch.no_grad():
            for input_ids in (batch["input_ids"], changed):
                stage1_losses(
                    model,
                    head,
                    batch["pixel_values"],
                    input_ids,
                    batch["attention_mask"],
                    dec_token_id=processor.tokenizer.bos_token_id,
                    objectives=["itg"],
                )
    finally:
        handle.remove()
    before, after = captured
    assert torch.allclose(before[1, :2], after[1, :2], atol=1e-6)
    assert not torch.allclose(before[1, 2:], after[1, 2:])


# ---- the losses ----------------------------------------------------------------------------------------
def test_itg_head_is_tied_to_the_word_embeddings(retrieval) -> None:
    model, _ = retrieval
    head = make_itg_head(model)
    assert head.decoder.weight is model.embeddings.word_embeddings.weight
    assert head.bias.shape == (model.config.qformer_config.vocab_size,)


def test_stage1_losses_decrease_with_a_frozen_image_encoder(batch) -> None:
    path = offline.checkpoint_path(offline.RETRIEVAL)
    model = Blip2ForImageTextRetrieval.from_pretrained(path)
    dec = Blip2Processor.from_pretrained(path).tokenizer.bos_token_id
    torch.manual_seed(0)
    head = make_itg_head(model)
    freeze_for_stage(model, 1)
    model.train()
    trainable = [
        p for p in [*model.parameters(), head.dense.weight, head.dense.bias, head.bias] if p.requires_grad
    ]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    history = []
    for _ in range(6):
        losses = stage1_losses(model, head, **batch, dec_token_id=dec, generator=generator)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        history.append({name: value.item() for name, value in losses.items()})
    assert set(history[0]) == {"itc", "itm", "itg", "total"}
    assert history[0]["total"] == pytest.approx(history[0]["itc"] + history[0]["itm"] + history[0]["itg"])
    assert history[-1]["total"] < history[0]["total"]
    assert history[-1]["itg"] < history[0]["itg"]
    assert all(p.grad is None for p in model.vision_model.encoder.parameters())
    assert model.vision_model.post_layernorm.weight.grad is not None  # LAVIS's ln_vision is trained
    assert model.query_tokens.grad is not None and model.itm_head.weight.grad is not None


def test_stage1_objective_subsets_and_reproducible_negatives(retrieval, batch) -> None:
    model, processor = retrieval
    head = make_itg_head(model)
    dec = processor.tokenizer.bos_token_id
    with torch.no_grad():
        only_itm = [
            stage1_losses(
                model,
                head,
                **batch,
                dec_token_id=dec,
                objectives={"itm"},
                generator=torch.Generator().manual_seed(5),
            )
            for _ in range(2)
        ]
    assert set(only_itm[0]) == {"itm", "total"}
    assert only_itm[0]["itm"].item() == only_itm[1]["itm"].item()
    assert only_itm[0]["total"].item() == only_itm[0]["itm"].item()


def test_stage1_rejects_bad_inputs(retrieval, batch) -> None:
    model, _ = retrieval
    head = make_itg_head(model)
    with pytest.raises(ValueError, match="objectives"):
        stage1_losses(model, head, **batch, dec_token_id=0, objectives=["mlm"])
    with pytest.raises(ValueError, match="one text per image"):
        stage1_losses(
            model,
            head,
            batch["pixel_values"][:2],
            batch["input_ids"],
            batch["attention_mask"],
            dec_token_id=0,
        )
    with pytest.raises(ValueError, match="Blip2ForConditionalGeneration"):
        freeze_for_stage(model, 2)


def test_stage2_loss_matches_transformers_on_opt(samples) -> None:
    path = offline.checkpoint_path(offline.CAPTION)
    model = Blip2ForConditionalGeneration.from_pretrained(path).eval()
    processor = Blip2Processor.from_pretrained(path)
    inputs = processor(
        images=samples[:2],
        text=["a photo of a cat", "a rocket on a launch pad"],
        padding=True,
        return_tensors="pt",
    )
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    with torch.no_grad():
        ours = stage2_loss(
            model, inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"], labels
        )
        theirs = model(
            **inputs, labels=labels.masked_fill(inputs["input_ids"] == model.config.image_token_id, -100)
        ).loss
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    text_only = processor.tokenizer(["a photo of a cat"], return_tensors="pt")
    with pytest.raises(ValueError, match="image placeholder"):
        stage2_loss(
            model,
            inputs["pixel_values"][:1],
            text_only["input_ids"],
            text_only["attention_mask"],
            text_only["input_ids"],
        )


def test_stage2_loss_matches_transformers_on_t5_and_freezes_llm() -> None:
    torch.manual_seed(0)
    width = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}
    config = Blip2Config(
        vision_config=Blip2VisionConfig(**width, num_hidden_layers=1, image_size=32, patch_size=16),
        qformer_config=Blip2QFormerConfig(
            **width, num_hidden_layers=2, vocab_size=50, encoder_hidden_size=32
        ),
        text_config=T5Config(
            vocab_size=60, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2, decoder_start_token_id=0
        ),
        num_query_tokens=4,
        image_token_index=59,
    )
    model = Blip2ForConditionalGeneration(config).eval()
    input_ids = torch.tensor([[59] * 4 + [5, 6, 1], [59] * 4 + [7, 1, 0]])
    attention_mask = (input_ids != 0).long()
    labels = torch.tensor([[8, 9, 1], [10, 1, -100]])
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = stage2_loss(model, pixels, input_ids, attention_mask, labels)
        theirs = model(
            pixel_values=pixels, input_ids=input_ids, attention_mask=attention_mask, labels=labels
        ).loss
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    freeze_for_stage(model, 2)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert {name.split(".")[0] for name in trainable} == {
        "vision_model",
        "query_tokens",
        "qformer",
        "language_projection",
    }
    assert {name for name in trainable if name.startswith("vision_model")} == {
        "vision_model.post_layernorm.weight",
        "vision_model.post_layernorm.bias",
    }


def test_itc_logits_equal_hf_contrastive_scores_over_temperature(retrieval, batch) -> None:
    model, _ = retrieval
    with torch.no_grad():
        ours = itc_logits(model, **batch, temperature=0.07)
        theirs = model(**batch, use_image_text_matching_head=False).logits_per_image
    assert torch.allclose(ours * 0.07, theirs, atol=1e-5)


def test_a_short_run_of_both_stages_records_every_loss(samples) -> None:
    stage1 = load_stage(1, "offline")
    assert all(p.dtype == torch.float32 for p in stage1.trainable_parameters())
    assert not any(p.requires_grad for p in stage1.model.vision_model.encoder.parameters())
    history = train_stage1(stage1, [*samples, samples[0]], TEXTS, steps=2, lr=1e-3)
    assert set(history) == {"itc", "itm", "itg", "total"} and all(len(v) == 2 for v in history.values())
    stage2 = load_stage(2, "offline")
    assert train_stage2(stage2, samples[:2], TEXTS[:2], steps=2, lr=1e-3).keys() == {"lm"}
    with pytest.raises(ValueError, match="8 bits"):
        load_stage(2, "t4-flan-t5")


def test_half_precision_stages_train_float32_parameters_under_autocast(samples) -> None:
    """What a GPU profile does: frozen parts in half precision, trained parameters in float32."""
    stage2 = load_stage(2, "offline", device="cpu", dtype="bfloat16")
    assert stage2.model.language_model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert {p.dtype for p in stage2.trainable_parameters()} == {torch.float32}
    history = train_stage2(stage2, samples[:2], TEXTS[:2], steps=2, lr=1e-3)
    assert all(math.isfinite(value) for value in history["lm"])

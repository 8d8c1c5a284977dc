"""The fine-tuning memory plan: exact parameter split, the activation formula, and what fits a T4."""

from __future__ import annotations

from helpers.finetune.memory_plan import T4_BYTES, _layer_activations, largest_batch, plan_memory
from helpers.variants import count_variant


def test_trainable_and_frozen_bytes_follow_the_stage_2_split() -> None:
    plan = dict(plan_memory("blip2-opt-2.7b", batch_size=4).rows)
    counted = count_variant("blip2-opt-2.7b")  # helpers.pretraining's stage-2 freezing, computed separately
    trainable = plan["Q-Former side, trainable, fp32 weights"] // 4
    assert trainable == counted.trainable
    frozen = (plan["ViT, frozen, fp16 weights"] + plan["LLM, frozen, fp16 weights"]) // 2
    assert frozen == counted.frozen
    assert plan["AdamW moments (2 per trainable weight), fp32"] == 8 * trainable


def test_activation_formula_and_checkpointing() -> None:
    assert _layer_activations(2, 1, 4, 1, checkpointing=False) == 2 * 4 * (34 + 5 * 2 / 4)
    assert _layer_activations(2, 1, 4, 1, checkpointing=True) == 2 * 2 * 4
    plain = plan_memory(batch_size=16)
    saved = plan_memory(batch_size=16, gradient_checkpointing=True)
    assert plain.sequence == 32 + 32 + 1 and saved.total < plain.total
    assert "fits:" in str(plain) and "LLM activations" in str(plain)


def test_largest_batch_is_the_edge_of_what_fits() -> None:
    for checkpointing in (False, True):
        batch = largest_batch(gradient_checkpointing=checkpointing)
        assert plan_memory(batch_size=batch, gradient_checkpointing=checkpointing).fits(T4_BYTES)
        assert not plan_memory(batch_size=batch + 1, gradient_checkpointing=checkpointing).fits(T4_BYTES)
    assert largest_batch(gradient_checkpointing=True) > largest_batch(gradient_checkpointing=False) >= 8


def test_the_papers_setting_trains_the_vit_at_364_px_and_does_not_fit_a_t4() -> None:
    counted = count_variant("blip2-opt-2.7b")
    paper = dict(
        plan_memory(batch_size=1, train_vision=True, image_size=364, gradient_checkpointing=True).rows
    )
    trainable = paper["Q-Former side and ViT, trainable, fp32 weights"] // 4
    assert trainable == counted.trainable + counted["image encoder (ViT-g)"]
    assert "ViT, frozen, fp16 weights" not in paper
    at_224 = dict(plan_memory(batch_size=1, train_vision=True, gradient_checkpointing=True).rows)
    assert (
        paper["ViT activations kept for backward (364 px)"]
        > at_224["ViT activations kept for backward (224 px)"]
    )
    assert not plan_memory(
        batch_size=1, train_vision=True, image_size=364, gradient_checkpointing=True
    ).fits()

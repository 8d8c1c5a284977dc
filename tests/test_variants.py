"""Parameter accounting of the released variants: counts from the real architectures, checked against known totals."""

from __future__ import annotations

import pytest

from helpers.variants import (
    GENERATION_VARIANTS,
    STAGE1_VARIANT,
    accounting_notes,
    count_variant,
    meta_model,
    paper_row,
    parameter_table,
    variant_config,
    variant_names,
    vit_l_trainable,
)


@pytest.fixture(scope="module")
def counts():
    return {name: count_variant(name) for name in variant_names()}


def test_blip2_opt_2_7b_total_matches_transformers_report(counts) -> None:
    # transformers reports 3,744,761,856 parameters for Salesforce/blip2-opt-2.7b.
    assert counts["blip2-opt-2.7b"].total == 3_744_761_856


def test_shared_parts_are_identical_across_generation_variants(counts) -> None:
    generation = [counts[name] for name in GENERATION_VARIANTS]
    for part in ("image encoder (ViT-g)", "Q-Former layers", "learned queries", "ViT output LayerNorm"):
        assert len({count[part] for count in generation}) == 1, part
    assert generation[0]["learned queries"] == 32 * 768


def test_projection_is_queries_width_to_llm_width(counts) -> None:
    for name in GENERATION_VARIANTS:
        text = variant_config(name).text_config
        width = getattr(text, "d_model", None) or text.hidden_size
        assert counts[name]["projection to the LLM"] == 768 * width + width, name


def test_trainable_counts_round_to_the_paper(counts) -> None:
    for name in GENERATION_VARIANTS:
        paper_trainable = int(paper_row(name).trainable_params.rstrip("M"))
        assert round(counts[name].trainable / 1e6) == paper_trainable, name
        assert counts[name].trainable + counts[name].frozen == counts[name].total


def test_totals_are_within_the_gaps_the_notes_explain(counts) -> None:
    notes = dict((what.split(" (")[0], size) for what, size in accounting_notes())
    for name in GENERATION_VARIANTS:
        paper_total = float(paper_row(name).total_params.rstrip("B")) * 1e9
        assert abs(counts[name].total - paper_total) < 0.25e9, name
    assert notes["stage-1 Q-Former parts the generation checkpoints drop"] > 80e6


def test_stage1_qformer_is_close_to_the_papers_188m(counts) -> None:
    stage1 = counts[STAGE1_VARIANT]
    assert 185e6 < stage1.trainable < 190e6
    assert stage1["Q-Former text embeddings"] == 30523 * 768 + 512 * 768
    assert not dict((c.name, c.trainable) for c in stage1.components)["image encoder (ViT-g)"]


def test_vit_l_variants_train_what_the_paper_reports() -> None:
    assert round(vit_l_trainable("blip2-opt-2.7b") / 1e6) == 104
    assert round(vit_l_trainable("blip2-flan-t5-xl") / 1e6) == 103


def test_meta_models_have_no_storage_and_the_table_lists_every_variant(counts) -> None:
    model = meta_model("blip2-flan-t5-xxl")
    assert all(p.is_meta for p in model.parameters())
    table = parameter_table([counts[name] for name in GENERATION_VARIANTS])
    assert all(name in table for name in GENERATION_VARIANTS)
    assert "3.74B" in table and "12.1B" in table


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match=r"blip2-opt-2\.7b"):
        variant_config("blip2-vicuna-7b")

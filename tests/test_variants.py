"""Parameter accounting of the released variants: counts from the real architectures, checked against known totals."""

from __future__ import annotations

import pytest

from helpers.variants import (
    GENERATION_VARIANTS,
    STAGE1_VARIANT,
    VIT_L_VARIANTS,
    accounting_notes,
    count_variant,
    meta_model,
    nominal_breakdown,
    paper_row,
    parameter_table,
    table2_counts,
    totals_table,
    variant_config,
    variant_names,
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
    for count in table2_counts():
        paper_trainable = int(paper_row(count).trainable_params.rstrip("M"))
        assert round(count.trainable / 1e6) == paper_trainable, (count.name, count.vision)
        assert count.trainable + count.frozen == count.total


def test_flan_t5_output_layers_are_counted_untied(counts) -> None:
    # transformers 5 ties T5's head at construction; the released checkpoints have their own.
    assert counts["blip2-flan-t5-xl"]["LLM"] == 2_849_757_184
    assert counts["blip2-flan-t5-xxl"]["LLM"] == 11_135_332_352
    model = meta_model("blip2-flan-t5-xl").language_model
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    opt = meta_model("blip2-opt-2.7b").language_model  # OPT ties its head in the released checkpoints too
    assert opt.get_output_embeddings().weight is opt.get_input_embeddings().weight


def test_vit_l_twins_use_clip_vit_l_minus_its_last_layer() -> None:
    for name in VIT_L_VARIANTS:
        count = count_variant(name, vision="ViT-L")
        # 23 CLIP layers of 12,596,224 + patch, class and position embeddings + pre-LayerNorm.
        assert count.encoder == 23 * 12_596_224 + 3 * 1024 * 14 * 14 + 1024 + 257 * 1024 + 2 * 1024
        assert count["ViT output LayerNorm"] == 2 * 1024
    with pytest.raises(ValueError, match="ViT-L only"):
        count_variant("blip2-opt-6.7b", vision="ViT-L")


def test_every_table2_total_is_the_sum_of_nominal_sizes() -> None:
    for count in table2_counts():
        parts = nominal_breakdown(count)
        paper_total = float(paper_row(count).total_params.rstrip("B")) * 1e9
        assert sum(nominal for _, _, nominal in parts) == pytest.approx(paper_total), count.name
        assert sum(exact for _, exact, _ in parts) == count.total
        for part, exact, nominal in parts:  # each exact part is within 0.15B of its nominal size
            assert abs(exact - nominal) < 0.151e9, (count.name, count.vision, part)
    notes = dict((what.split(" (")[0], size) for what, size in accounting_notes())
    assert notes["Flan-T5-XL output layer, not tied to its input embeddings"] == 32128 * 2048


def test_stage1_qformer_is_close_to_the_papers_188m(counts) -> None:
    stage1 = counts[STAGE1_VARIANT]
    assert 185e6 < stage1.trainable < 190e6
    assert stage1["Q-Former text embeddings"] == 30523 * 768 + 512 * 768
    assert not dict((c.name, c.trainable) for c in stage1.components)["image encoder (ViT-g)"]


def test_meta_models_have_no_storage_and_the_table_lists_every_variant(counts) -> None:
    model = meta_model("blip2-flan-t5-xxl")
    assert all(p.is_meta for p in model.parameters())
    table = parameter_table(table2_counts())
    assert all(name in table for name in GENERATION_VARIANTS)
    assert "3.74B" in table and "12.23B" in table and "ViT-L" in table
    assert max(len(line) for line in (table + "\n" + totals_table(table2_counts())).splitlines()) <= 110


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match=r"blip2-opt-2\.7b"):
        variant_config("blip2-vicuna-7b")

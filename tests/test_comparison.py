"""The paper-protocol pipelines, bootstrap intervals and the comparison table."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers.backends.base import Features
from helpers.evaluation.comparison import compare_with_paper, format_table, load_comparison, save_comparison
from helpers.evaluation.datasets import CaptionExample, RetrievalSet, VQAExample
from helpers.evaluation.paper_results import OVERVIEW, PAPER_NUMBERS, TABLES, WITHOUT_ITG, paper_number
from helpers.evaluation.protocols import (
    CAPTION_MIN_LENGTH,
    VQA_SETTINGS,
    Result,
    bootstrap_ci,
    caption_settings,
    evaluate_captions,
    evaluate_retrieval,
    evaluate_vqa,
    lavis_min_new_tokens,
)
from helpers.images import sample_names, sample_path


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.random(20), rng.random(2000)
    low, high = bootstrap_ci(len(small), lambda idx: float(small[idx].mean()))
    assert low < small.mean() < high
    wide = high - low
    low, high = bootstrap_ci(len(large), lambda idx: float(large[idx].mean()))
    assert high - low < wide / 3
    assert bootstrap_ci(20, lambda idx: float(small[idx].mean()), seed=3) == bootstrap_ci(
        20, lambda idx: float(small[idx].mean()), seed=3
    )


def test_vqa_pipeline_uses_the_paper_prompt_and_decoding(offline_model, monkeypatch):
    seen = []

    def fake_generate(images, prompts, settings):
        seen.append((prompts, settings))
        return ["Two" if "how many" in p else "blue" for p in prompts]

    monkeypatch.setattr(offline_model, "generate", fake_generate)
    image = sample_path(sample_names()[0])
    examples = [
        VQAExample(1, image, "how many cats?", ("2",) * 10),
        VQAExample(2, image, "what colour?", ("red",) * 7 + ("blue",) * 3),
        VQAExample(3, image, "what colour is it?", ("red",) * 10),
    ]
    result, predictions = evaluate_vqa(offline_model, examples, "toy VQA", batch_size=2, resamples=50)
    assert predictions == ["Two", "blue", "blue"]
    assert result.value == pytest.approx(100 * (1 + 0.9 + 0) / 3)  # 3 of 10 blue: 7 subsets of 1, 3 of 2/3
    assert seen[0][0] == ["Question: how many cats? Answer:", "Question: what colour? Answer:"]
    assert seen[0][1] == VQA_SETTINGS and VQA_SETTINGS.length_penalty == -1 and VQA_SETTINGS.num_beams == 5
    assert result.ci_low <= result.value <= result.ci_high and result.n == 3


def test_caption_pipeline_scores_the_generated_captions(offline_model, monkeypatch):
    monkeypatch.setattr(
        offline_model, "generate", lambda images, prompts, settings: ["a cat on a couch"] * len(images)
    )
    image = sample_path(sample_names()[0])
    examples = [
        CaptionExample(1, image, ("a cat on a couch", "a cat sitting on a sofa")),
        CaptionExample(2, image, ("a rocket on the launch pad", "a rocket")),
    ]
    results, captions = evaluate_captions(offline_model, examples, "toy captions", resamples=20)
    by_metric = {r.metric: r for r in results}
    assert captions == ["a cat on a couch"] * 2
    assert by_metric["CIDEr"].value > 0 and by_metric["BLEU-4"].n == 2
    assert all(r.ci_low <= r.value + 1e-9 and r.value <= r.ci_high + 1e-9 for r in results)


def test_caption_decoding_counts_min_length_as_lavis_does(offline_model, monkeypatch):
    # OPT: transformers' min_length counts the prompt with its BOS token ("" is 1 token, "a photo of" 4).
    assert lavis_min_new_tokens(offline_model, "", CAPTION_MIN_LENGTH) == 7
    assert caption_settings(offline_model).min_new_tokens == 7
    t5 = SimpleNamespace(_prompt_positions=lambda prompts: ([], 0, None), caption_prompt="")
    assert lavis_min_new_tokens(t5, "", CAPTION_MIN_LENGTH) == 7  # Flan-T5: the decoder's start token
    seen = []
    monkeypatch.setattr(
        offline_model, "generate", lambda images, prompts, settings: seen.append((prompts, settings)) or [""]
    )
    monkeypatch.setattr(offline_model, "caption_model", "Salesforce/blip2-opt-2.7b-coco")
    image = sample_path(sample_names()[0])
    offline_model.caption(image, caption_settings(offline_model))
    prompts, settings = seen[-1]
    assert prompts == ["a photo of"]  # the COCO-fine-tuned captioners were trained to continue it
    prompt_tokens = len(offline_model.processor.tokenizer("a photo of")["input_ids"])
    assert settings.min_new_tokens == max(CAPTION_MIN_LENGTH - prompt_tokens, 0) < 7


def test_offline_captions_come_out_whole_under_lavis_minimum(offline_model):
    from helpers.toyworld.samples import toy_samples

    scenes = toy_samples(3)
    captions = offline_model.caption([s.image for s in scenes], caption_settings(offline_model))
    assert captions == [s.caption for s in scenes]


class _ScriptedRetrieval:
    """Backend stand-in whose ITC prefers the wrong text and whose ITM knows the right one."""

    backend_name, caption_model, retrieval_model = "fake", "offline", "offline"

    def __init__(self, images):
        self.row = {id(image): index for index, image in enumerate(images)}

    def image_features(self, images):
        index = torch.tensor([self.row[id(image)] for image in images])
        # ITC: image i is most similar to text (i + 1) % n, its true text i comes second.
        embeds = torch.nn.functional.one_hot((index + 1) % 3, 3).float() + 0.5 * torch.nn.functional.one_hot(
            index, 3
        )
        return Features(image_embeds_proj=embeds[:, None, :])

    def text_features(self, texts):
        return Features(text_embeds_proj=torch.eye(3)[[int(t[-1]) for t in texts]][:, None, :])

    def itm_probabilities(self, images, texts):
        return torch.tensor(
            [float(self.row[id(i)] == int(t[-1])) for i, t in zip(images, texts, strict=True)]
        )


def test_retrieval_reranks_the_itc_top_k_with_itm(monkeypatch):
    paths = tuple(sample_path(name) for name in sample_names()[:3])
    data = RetrievalSet(paths, ("text 0", "text 1", "text 2"), (0, 1, 2))
    loaded = {}

    def load(sources):
        return [loaded.setdefault(str(s), object()) for s in sources]

    monkeypatch.setattr("helpers.evaluation.protocols.load_images", load)
    model = _ScriptedRetrieval(load(paths))
    reranked = {r.metric: r.value for r in evaluate_retrieval(model, data, "toy", top_k=2, resamples=10)}
    itc_only = {r.metric: r.value for r in evaluate_retrieval(model, data, "toy", top_k=0, resamples=10)}
    assert reranked["TR@1"] == 100.0 and reranked["IR@1"] == 100.0
    assert itc_only["TR@1"] == 0.0 and itc_only["TR@5"] == 100.0


def test_comparison_table_pairs_runs_with_the_paper_and_round_trips(tmp_path):
    model = SimpleNamespace(
        backend_name="hf", caption_model="Salesforce/blip2-opt-2.7b", retrieval_model="/tmp/toy"
    )
    results = [
        Result("generation", "VQAv2 val subset", "accuracy", 50.0, 45.0, 55.0, 100),
        Result("retrieval", "Flickr30K 1K test", "TR@1", 90.0, 85.0, 95.0, 100),
        Result("generation", "toy captions", "CIDEr", 10.0, 5.0, 15.0, 10),
    ]
    rows = compare_with_paper(results, model, {"VQAv2 val subset": "VQAv2 val"})
    assert (rows[0].paper, rows[0].difference, rows[0].same_model) == (53.5, -3.5, True)
    assert (rows[1].paper_model, rows[1].same_model, rows[1].paper) == ("BLIP-2 ViT-g", False, 97.6)
    assert rows[2].paper is None and rows[2].difference is None
    text = format_table(rows)
    assert "53.5" in text and "-3.5" in text and "stand-in" in text
    path = save_comparison(rows, tmp_path / "out" / "comparison.json", profile="t4")
    assert load_comparison(path) == rows


def test_paper_numbers_are_unique_and_include_the_headline_results():
    keys = [(n.model, n.dataset, n.metric, n.table) for n in PAPER_NUMBERS]
    assert len(keys) == len(set(keys))
    assert paper_number("BLIP-2 ViT-g FlanT5XXL", "VQAv2 test-dev", "accuracy").value == 65.0
    assert paper_number("BLIP-2 ViT-g FlanT5XL", "NoCaps val", "CIDEr").value == 121.6
    assert paper_number("BLIP-2 ViT-g FlanT5XL", "NoCaps val out-domain", "SPICE").value == 15.1
    assert paper_number("BLIP-2 ViT-g OPT6.7B", "VQAv2 test-std", "accuracy").value == 82.30  # Table 4
    assert paper_number(WITHOUT_ITG, "COCO 5K test", "IR@1").value == 67.2  # Table 6
    assert {n.table for n in PAPER_NUMBERS} == set(TABLES)
    blip = next(row for row in OVERVIEW if row[0] == "BLIP")
    assert blip[4] == "96.7 / 86.7"  # Table 1's Flickr30K zero-shot TR@1 / IR@1 for BLIP


@pytest.mark.parametrize(
    ("checkpoint", "kind", "dataset", "metric", "table", "value", "same"),
    [
        ("Salesforce/blip2-opt-2.7b", "generation", "VQAv2 test-dev", "accuracy", "Table 2", 52.3, True),
        ("Salesforce/blip2-opt-2.7b", "generation", "COCO Karpathy test", "CIDEr", "Table 3", 145.8, False),
        (
            "Salesforce/blip2-opt-2.7b-coco",
            "generation",
            "COCO Karpathy test",
            "CIDEr",
            "Table 3",
            145.8,
            True,
        ),
        ("Salesforce/blip2-opt-2.7b-coco", "generation", "NoCaps val", "CIDEr", "Table 3", 119.7, True),
        ("Salesforce/blip2-opt-2.7b-coco", "generation", "VQAv2 val", "accuracy", "Table 2", 53.5, False),
        ("Salesforce/blip2-flan-t5-xl-coco", "generation", "NoCaps val", "SPICE", "Table 3", 15.8, True),
        ("Salesforce/blip2-itm-vit-g", "retrieval", "COCO 5K test", "TR@1", "Table 5", 85.4, False),
        ("Salesforce/blip2-itm-vit-g-coco", "retrieval", "COCO 5K test", "TR@1", "Table 5", 85.4, True),
        ("Salesforce/blip2-itm-vit-g-coco", "retrieval", "Flickr30K 1K test", "IR@1", "Table 5", 89.7, True),
        ("/tmp/toy", "retrieval", "Flickr30K 1K test", "TR@1", "Table 5", 97.6, False),
    ],
)
def test_same_model_flag_is_decided_per_checkpoint_and_table(
    checkpoint, kind, dataset, metric, table, value, same
):
    model = SimpleNamespace(backend_name="hf", caption_model=checkpoint, retrieval_model=checkpoint)
    (row,) = compare_with_paper([Result(kind, dataset, metric, 50.0, 45.0, 55.0, 10)], model, {})
    assert (row.table, row.paper, row.same_model) == (table, value, same)


def test_comparison_table_fits_110_columns_and_names_every_paper_model():
    model = SimpleNamespace(
        backend_name="hf",
        caption_model="Salesforce/blip2-opt-2.7b",
        retrieval_model="Salesforce/blip2-itm-vit-g",
    )
    results = [
        Result("generation", "COCO Karpathy test retrieval subset", "accuracy (lenient)", 5.0, 4.0, 6.0, 9),
        Result("generation", "COCO Karpathy test", "CIDEr", 100.0, 90.0, 110.0, 300),
        Result("retrieval", "COCO 5K test", "TR@1", 80.0, 75.0, 85.0, 100),
    ]
    text = format_table(compare_with_paper(results, model, {}))
    assert max(len(line) for line in text.splitlines()) <= 110
    assert "Table 3: BLIP-2 ViT-g OPT2.7B, * a stand-in" in text
    assert "Table 5: BLIP-2 ViT-g, * a stand-in" in text


def test_caption_fine_tuning_can_train_after_the_papers_prompt(tmp_path):
    from helpers.finetune import TrainingConfig
    from helpers.finetune.data import TaskDataset
    from helpers.finetune.manifests import read_manifest
    from helpers.prompts import COCO_CAPTION_PROMPT

    image = sample_path(sample_names()[0])
    manifest = tmp_path / "train.tsv"
    manifest.write_text(f"{image}\tA Cat, on the couch.\n{image}\tWhat is it?\n")
    captions = read_manifest(manifest, "caption")
    sample = TaskDataset(captions, "Question: {} Answer:", COCO_CAPTION_PROMPT)[0]
    assert (sample["prompt"], sample["target"]) == (
        "a photo of",
        "a cat, on the couch",
    )  # blip_caption's cleaning
    assert TaskDataset(captions, "Question: {} Answer:")[0]["prompt"] == ""
    assert TrainingConfig(task="caption", train_manifest="t", output_dir="o").caption_prompt == ""
    vqa = tmp_path / "vqa.tsv"
    vqa.write_text(f"{image}\tWhat IS it?\tcat\n")
    asked = TaskDataset(read_manifest(vqa, "vqa"), "Question: {} Answer:")[0]
    assert asked["prompt"] == "Question: what is it? Answer:"  # blip_question's cleaning, as `ask` does


def test_fine_tuning_at_the_papers_image_size_saves_a_model_that_runs_at_it(tmp_path):
    from helpers import GREEDY, load_blip2
    from helpers.finetune import TrainingConfig, train
    from helpers.finetune.image_size import set_image_size

    image = sample_path(sample_names()[0])
    manifest = tmp_path / "train.tsv"
    manifest.write_text(f"{image}\tone small red circle on the left\n" * 2)
    settings = {
        "task": "caption",
        "train_manifest": manifest,
        "epochs": 1,
        "batch_size": 2,
        "warmup_steps": 0,
    }
    model = load_blip2("offline", backend="hf", verbose=False)
    patch = model.model.config.vision_config.patch_size
    size = 6 * patch  # larger than the checkpoint's grid, as 364 px is for the real ViT's 14-px patches
    config = TrainingConfig(
        **settings, output_dir=tmp_path / "run", train_vision=True, image_size=size, checkpoint_every=None
    )
    train(model, config)
    assert model.model.vision_model.embeddings.position_embedding.shape[1] == 6 * 6 + 1
    reloaded = load_blip2("offline", backend="hf", model_id=str(tmp_path / "run"), verbose=False)
    assert reloaded.model.config.vision_config.image_size == size
    assert reloaded.processor.image_processor.size == {"height": size, "width": size}
    assert reloaded.caption(image, GREEDY) == model.caption(image, GREEDY)
    lavis = SimpleNamespace(backend_name="lavis")
    with pytest.raises(ValueError, match="needs the hf backend"):
        set_image_size(lavis, "caption", size)
    with pytest.raises(ValueError, match="multiple of"):
        set_image_size(model, "caption", size + 1)

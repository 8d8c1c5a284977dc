"""The paper-protocol pipelines, bootstrap intervals and the comparison table."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers.backends.base import Features
from helpers.comparison import (
    VQA_SETTINGS,
    Result,
    bootstrap_ci,
    compare_with_paper,
    evaluate_captions,
    evaluate_retrieval,
    evaluate_vqa,
    format_table,
    load_comparison,
    save_comparison,
)
from helpers.datasets import CaptionExample, RetrievalSet, VQAExample
from helpers.images import sample_names, sample_path
from helpers.paper import PAPER_NUMBERS, paper_number


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

    monkeypatch.setattr("helpers.comparison.load_images", load)
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
    keys = [(n.model, n.dataset, n.metric) for n in PAPER_NUMBERS]
    assert len(keys) == len(set(keys))
    assert paper_number("BLIP-2 ViT-g FlanT5XXL", "VQAv2 test-dev", "accuracy").value == 65.0
    assert paper_number("BLIP-2 ViT-g FlanT5XL", "NoCaps val", "CIDEr").value == 121.6

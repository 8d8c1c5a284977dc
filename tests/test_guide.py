"""The Colab guide's functions, called as the guide calls them, on the kit's model and on a LAVIS-style model."""

from __future__ import annotations

import torch

from helpers.images import sample_image, sample_names


def test_guide_star_imports_provide_the_named_functions():
    namespace: dict = {}
    exec("from blip2_advanced_examples import *\nfrom blip2_test_cases import *", namespace)
    for name in (
        "explain_two_stage_pretraining",
        "demonstrate_blip2_tasks",
        "analyze_qformer_architecture",
        "compare_with_other_methods",
        "extract_visual_features",
        "run_comprehensive_test",
        "compare_with_paper_results",
        "analyze_model_performance",
    ):
        assert callable(namespace[name]), name


def test_advanced_examples_on_the_kit_model(offline_model, capsys):
    from blip2_advanced_examples import (
        analyze_qformer_architecture,
        demonstrate_blip2_tasks,
        explain_two_stage_pretraining,
        extract_visual_features,
    )

    image = sample_image(sample_names()[0])
    assert "ITC" in " ".join(next(iter(explain_two_stage_pretraining().values())))
    results = demonstrate_blip2_tasks(offline_model, image)
    assert isinstance(results["caption"], str) and len(results["vqa"]) == 2
    report = analyze_qformer_architecture(offline_model)
    config = offline_model.model.config
    assert report["num_queries"] == config.num_query_tokens
    frequency = config.qformer_config.cross_attention_frequency
    assert report["cross_attention_layers"] == list(
        range(0, config.qformer_config.num_hidden_layers, frequency)
    )
    trainable = report["trainable (Q-Former + queries + projection)"]
    assert 0 < trainable < report["total"]
    features = extract_visual_features(offline_model, image)
    assert features["query_output"].shape[:2] == (1, offline_model.retrieval.config.num_query_tokens)
    assert "learned queries" in capsys.readouterr().out


def test_compare_with_other_methods_states_the_papers_margin(capsys):
    from blip2_advanced_examples import compare_with_other_methods

    rows = compare_with_other_methods()
    assert any(row["name"] == "Flamingo80B" for row in rows)
    assert "by 8.7 points (65.0 vs 56.3) with 54x fewer trainable parameters" in capsys.readouterr().out


def test_test_cases_on_the_kit_model(offline_model, tmp_path, capsys):
    from blip2_test_cases import analyze_model_performance, compare_with_paper_results, run_comprehensive_test

    results = run_comprehensive_test(offline_model, None, "cpu", names=sample_names()[:2])
    assert set(results["images"]) == set(sample_names()[:2])
    performance = analyze_model_performance(offline_model, "cpu", batch_size=2, repeats=1)
    assert performance["latency_s"] > 0 and performance["throughput_images_per_s"] > 0
    shown = compare_with_paper_results(tmp_path / "none.json")
    assert "No saved run" in capsys.readouterr().out and shown


class _LavisLike(torch.nn.Module):
    """LAVIS's calling convention: generate({"image": tensor, "prompt": str}) -> list[str]."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[dict] = []

    def generate(self, samples):
        self.calls.append(samples)
        return [f"out {samples.get('prompt', 'caption')}"] * samples["image"].shape[0]


def test_guide_functions_accept_a_lavis_model_and_its_processors():
    from blip2_advanced_examples import demonstrate_blip2_tasks
    from blip2_test_cases import run_comprehensive_test

    model = _LavisLike()
    processors = {"eval": lambda image: torch.zeros(3, 8, 8)}
    image = processors["eval"](sample_image(sample_names()[0])).unsqueeze(
        0
    )  # the guide's preprocessed tensor
    results = demonstrate_blip2_tasks(model, image)
    assert results["caption"] == "out caption"
    assert model.calls[1]["prompt"] == "Question: What is shown in the photo? Answer:"
    run_comprehensive_test(model, processors, "cpu")
    assert all(call["image"].shape == (1, 3, 8, 8) for call in model.calls)

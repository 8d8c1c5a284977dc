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
    printed = capsys.readouterr().out
    assert "by 8.7 points (65.0 vs 56.3)\nwith 54x fewer trainable parameters" in printed


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


def test_the_guides_own_lavis_call_loads_the_miniature_offline(offline_model):
    """`load_model_and_preprocess("blip2_opt", "pretrain_opt2.7b")` exactly as the guide writes it, answered
    from the offline folder: LAVIS's Blip2OPT at the miniature's size, agreeing with the kit's model."""
    from helpers.guide.lavis_route import guide_checkpoints
    from helpers.toyworld.samples import toy_samples

    with guide_checkpoints("offline") as choice:
        from lavis.models import load_model_and_preprocess

        model, vis_processors, _ = load_model_and_preprocess(
            name="blip2_opt", model_type="pretrain_opt2.7b", is_eval=True, device=torch.device("cpu")
        )
    assert choice.profile.is_offline
    assert type(model).__name__ == "Blip2OPT" and model.query_tokens.shape[1] == 8
    toy = toy_samples(1)[0]
    image = vis_processors["eval"](toy.image).unsqueeze(0)
    assert image.shape == (1, 3, 224, 224)
    caption = model.generate({"image": image})[0]
    assert caption == toy.caption == offline_model.caption(toy.image)[0]
    qa = toy.questions[0]
    assert model.generate({"image": image, "prompt": f"Question: {qa.question} Answer:"}) == [qa.answer]


def test_the_guide_route_leaves_lavis_as_it_found_it():
    from helpers.guide.lavis_route import guide_checkpoints

    with guide_checkpoints("offline"):
        from lavis.models.base_model import BaseModel
        from lavis.models.blip2_models.blip2_opt import Blip2OPT

        inside = Blip2OPT.default_config_path("pretrain_opt2.7b")
    assert "blip2-guide-" in inside
    assert BaseModel.default_config_path.__func__ is BaseModel.__dict__["default_config_path"].__func__
    assert Blip2OPT.default_config_path("pretrain_opt2.7b").endswith(
        "configs/models/blip2/blip2_pretrain_opt2.7b.yaml"
    )


def test_guide_demo_image_is_a_known_toy_scene_offline():
    from helpers.guide.demo import GUIDE_DEMO_URL, guide_demo_image
    from helpers.profiles import choose_profile

    demo = guide_demo_image(choose_profile("offline"))
    assert demo.truth is not None and demo.truth.caption in demo.source
    assert demo.image.size == demo.truth.image.size
    assert GUIDE_DEMO_URL.endswith("/BLIP/demo.jpg")


def test_guide_claims_are_recomputed_from_the_tables_and_the_counts():
    from helpers.guide.claims import claims_table, guide_claims

    claims = {claim.guide: claim for claim in guide_claims()}
    margin = claims["outperforms Flamingo80B by 8.7% in zero-shot VQAv2"]
    assert "65.0 vs 56.3" in margin.paper and margin.verdict.startswith("8.7 accuracy points, not percent")
    ratio = claims["with 54x fewer trainable parameters"]
    assert "= 54.3x" in ratio.paper and "= 54.6x" in ratio.kit
    assert "186,705,469" in claims["188M trainable parameters in the Q-Former"].kit
    table = claims_table(list(claims.values()))
    assert table.count("\n") == len(claims) + 1


def test_performance_analysis_of_a_lavis_model_needs_no_processors():
    """The guide calls `analyze_model_performance(model, device)` on its LAVIS model, without processors."""
    from blip2_test_cases import analyze_model_performance
    from helpers.backends.lavis_sources import load_from_folder
    from helpers.offline import CAPTION, RETRIEVAL, checkpoint_path

    model, _, _ = load_from_folder(
        "blip2_opt",
        "pretrain_opt2.7b",
        checkpoint_path(CAPTION),
        torch.device("cpu"),
        bert_tokenizer_folder=checkpoint_path(RETRIEVAL),
    )
    report = analyze_model_performance(model.eval(), "cpu", batch_size=2, repeats=1)
    assert report["latency_s"] > 0 and report["parameters_gb"] > 0

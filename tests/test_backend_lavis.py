"""The LAVIS backend: LAVIS 1.0.2 runs on today's stack and gives the HF backend's answers on the same weights.

Everything is fp32 on CPU with the offline checkpoints, which both backends load from the same folders.
"""

from __future__ import annotations

import sys

import pytest
import torch
import transformers
from transformers import Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval, Blip2Processor

from helpers import GREEDY, load_blip2
from helpers.backends import convert, lavis_compat
from helpers.backends.hf import pil_processor_kwargs
from helpers.backends.lavis_sources import load_from_folder
from helpers.checkpoints import CHECKPOINTS, by_hf_id, markdown_table
from helpers.offline import CAPTION, RETRIEVAL, checkpoint_path

TOLERANCE = 1e-4
TEXTS = ["a photo of a cat on a couch", "a rocket on a launch pad", "two dogs playing in the grass"]


def test_compat_is_idempotent_and_leaves_transformers_alone():
    generate_before = transformers.OPTForCausalLM.generate
    lavis_compat.apply()
    lavis_compat.apply()
    from lavis.models.blip2_models import Qformer
    from lavis.models.blip2_models.blip2_opt import Blip2OPT

    assert transformers.OPTForCausalLM.generate is generate_before
    # The restored `invert_attention_mask` is LAVIS's Q-Former's alone; transformers' classes keep their own
    # (PreTrainedModel still has one up to 5.15, none from 5.16 on).
    shim = lavis_compat._invert_attention_mask
    assert Qformer.BertPreTrainedModel.invert_attention_mask is shim
    transformers_classes = [
        value for value in vars(transformers.modeling_utils).values() if isinstance(value, type)
    ] + [transformers.OPTForCausalLM, transformers.T5ForConditionalGeneration, transformers.BertModel]
    assert not [cls for cls in transformers_classes if getattr(cls, "invert_attention_mask", None) is shim]
    assert Blip2OPT.generate.__module__ == "helpers.backends.lavis_generate"


def test_absent_optional_package_fails_only_when_used():
    stand_in = lavis_compat._AbsentModule("decord", "video decoding")
    stand_in.bridge.set_bridge("torch")  # what `import lavis` does: must not fail
    with pytest.raises(ImportError, match="'decord' package"):
        stand_in.VideoReader("video.mp4")


@pytest.mark.parametrize(
    ("name", "model_type", "kind"),
    [
        ("blip2_opt", "pretrain_opt2.7b", CAPTION),
        ("blip2_image_text_matching", "pretrain", RETRIEVAL),
        ("blip2_feature_extractor", "pretrain", RETRIEVAL),
        ("blip2", "pretrain", RETRIEVAL),
    ],
)
def test_load_model_and_preprocess_builds_from_a_folder(name, model_type, kind):
    folder = checkpoint_path(kind)
    model, vis_processors, txt_processors = load_from_folder(
        name, model_type, folder, torch.device("cpu"), bert_tokenizer_folder=checkpoint_path(RETRIEVAL)
    )
    hf_class = Blip2ForConditionalGeneration if kind == CAPTION else Blip2ForImageTextRetrieval
    expected = hf_class.from_pretrained(folder).state_dict()
    converted = convert.lavis_to_hf(model.state_dict())
    assert set(converted) == set(expected)
    assert all(torch.equal(converted[key], expected[key]) for key in expected)
    assert {"eval", "train"} <= set(vis_processors) and "eval" in txt_processors


def test_converter_round_trips_and_merges_vit_biases():
    hf_weights = convert.read_hf_weights(checkpoint_path(RETRIEVAL))
    lavis_weights = convert.hf_to_lavis(hf_weights)
    assert "visual_encoder.blocks.0.attn.q_bias" in lavis_weights
    assert "vision_model.encoder.layers.0.self_attn.qkv.bias" in hf_weights
    back = convert.lavis_to_hf(lavis_weights)
    assert set(back) == set(hf_weights) and all(torch.equal(back[k], hf_weights[k]) for k in hf_weights)


def test_converter_refuses_a_key_bias_lavis_cannot_hold():
    weights = convert.read_hf_weights(checkpoint_path(RETRIEVAL))
    key = "vision_model.encoder.layers.0.self_attn.qkv.bias"
    width = weights[key].shape[0] // 3
    weights[key] = weights[key].clone()
    weights[key][width] = 1.0
    with pytest.raises(ValueError, match="no key bias"):
        convert.hf_to_lavis(weights)


def test_preprocessing_is_bit_identical_with_the_pil_path(lavis_model, samples):
    pil = Blip2Processor.from_pretrained(checkpoint_path(CAPTION), **pil_processor_kwargs()).image_processor
    expected = pil(samples, return_tensors="pt")["pixel_values"]
    assert torch.equal(lavis_model._pixels(samples), expected)


def _torchvision_processor_kwargs() -> dict:
    """The torchvision image path, asked for as `pil_processor_kwargs` asks for PIL's, whatever the class name."""
    import importlib.util

    if importlib.util.find_spec("transformers.image_processing_backends") is not None:
        return {"backend": "torchvision"}
    return {"use_fast": True}


def test_default_torchvision_path_differs_by_grey_levels_only(lavis_model, samples):
    pytest.importorskip("torchvision")
    fast = Blip2Processor.from_pretrained(
        checkpoint_path(CAPTION), **_torchvision_processor_kwargs()
    ).image_processor
    difference = (fast(samples, return_tensors="pt")["pixel_values"] - lavis_model._pixels(samples)).abs()
    one_grey_level = 1 / 255 / min(fast.image_std)
    assert 0 < difference.max() <= 3 * one_grey_level


def test_qformer_features_match(offline_model, lavis_model, samples):
    hf_image, lavis_image = offline_model.image_features(samples), lavis_model.image_features(samples)
    assert torch.allclose(hf_image.image_embeds, lavis_image.image_embeds, atol=TOLERANCE)
    assert torch.allclose(hf_image.image_embeds_proj, lavis_image.image_embeds_proj, atol=TOLERANCE)
    hf_text, lavis_text = offline_model.text_features(TEXTS), lavis_model.text_features(TEXTS)
    assert torch.allclose(hf_text.text_embeds, lavis_text.text_embeds, atol=TOLERANCE)
    hf_fused = offline_model.multimodal_features(samples, TEXTS)
    lavis_fused = lavis_model.multimodal_features(samples, TEXTS)
    assert torch.allclose(hf_fused.multimodal_embeds, lavis_fused.multimodal_embeds, atol=TOLERANCE)


def test_backend_features_are_what_lavis_itself_computes(lavis_model, samples):
    pixels = lavis_model._pixels(samples)
    queries, _ = lavis_model.retrieval.forward_image(pixels)  # LAVIS's retrieval-evaluation path
    assert torch.allclose(lavis_model.image_features(samples).image_embeds, queries)
    text = lavis_model.retrieval.extract_features({"text_input": TEXTS}, mode="text")
    assert torch.allclose(lavis_model.text_features(TEXTS).text_embeds_proj, text.text_embeds_proj, atol=1e-6)
    itm_logits = lavis_model.retrieval({"image": pixels[:1], "text_input": TEXTS[:1]}, match_head="itm")
    probability = lavis_model.itm_probabilities(samples[:1], TEXTS[:1])
    assert torch.allclose(probability, itm_logits.softmax(dim=-1)[:, 1], atol=1e-6)


def test_language_model_logits_match(offline_model, lavis_model, samples):
    from helpers.backends.lavis_generate import visual_prompt

    prompt = "Question: what is shown in the photo? Answer:"
    inputs = offline_model.processor(images=samples[:1], text=[prompt], return_tensors="pt")
    hf_logits = offline_model.model(**inputs).logits
    model = lavis_model.model
    visual = visual_prompt(model, lavis_model._pixels(samples[:1]), model.opt_proj)
    tokens = model.opt_tokenizer([prompt], return_tensors="pt")
    embeddings = model.opt_model.get_input_embeddings()(tokens.input_ids)
    mask = torch.cat([torch.ones(1, visual.shape[1], dtype=torch.long), tokens.attention_mask], dim=1)
    with torch.no_grad():
        lavis_logits = model.opt_model(
            inputs_embeds=torch.cat([visual, embeddings], 1), attention_mask=mask
        ).logits
    assert hf_logits.shape == lavis_logits.shape
    assert torch.allclose(hf_logits, lavis_logits, atol=TOLERANCE)


def test_greedy_captions_and_answers_are_identical(offline_model, lavis_model, samples):
    assert offline_model.caption(samples, GREEDY) == lavis_model.caption(samples, GREEDY)
    questions = ["what is shown in the photo?", "how many people are visible in the image?", "red?"]
    assert offline_model.ask(samples, questions, settings=GREEDY) == lavis_model.ask(
        samples, questions, settings=GREEDY
    )


def test_itc_and_itm_scores_match(offline_model, lavis_model, samples):
    hf_scores, lavis_scores = offline_model.match(samples, TEXTS), lavis_model.match(samples, TEXTS)
    assert torch.allclose(hf_scores.itc, lavis_scores.itc, atol=TOLERANCE)
    assert torch.allclose(hf_scores.itm, lavis_scores.itm, atol=TOLERANCE)


def test_training_losses_match(offline_model, lavis_model, samples):
    prompts = ["", "Question: what is shown? Answer:", "Question: how many? Answer:"]
    targets = ["a cat on a couch", "a rocket", "two"]
    hf_loss = offline_model.lm_loss(samples, prompts, targets)
    lavis_loss = lavis_model.lm_loss(samples, prompts, targets)
    assert lavis_loss.requires_grad
    assert torch.allclose(hf_loss, lavis_loss, atol=TOLERANCE)
    hf_losses = offline_model.retrieval_loss(samples, TEXTS, torch.Generator().manual_seed(0))
    lavis_losses = lavis_model.retrieval_loss(samples, TEXTS, torch.Generator().manual_seed(0))
    for name in ("itc", "itm", "total"):
        assert torch.allclose(hf_losses[name], lavis_losses[name], atol=TOLERANCE), name


def test_lavis_saves_what_hf_loads(lavis_model, samples, tmp_path):
    folder = lavis_model.save_pretrained("caption", tmp_path / "caption")
    reloaded = load_blip2("offline", backend="hf", model_id=str(folder), verbose=False)
    assert reloaded.caption(samples, GREEDY) == lavis_model.caption(samples, GREEDY)


def test_eight_bit_is_refused_with_a_way_out():
    from helpers.backends.lavis import LavisBackend
    from helpers.precision import choose_precision

    with pytest.raises(ValueError, match="backend='hf'"):
        LavisBackend("unused", "unused", choose_precision("cpu"), load_in_8bit=True)


def test_checkpoint_table_names_both_sides():
    assert by_hf_id("Salesforce/blip2-opt-2.7b").lavis_model_type == "pretrain_opt2.7b"
    assert len({c.hf_id for c in CHECKPOINTS}) == len(CHECKPOINTS)
    with pytest.raises(ValueError, match="no LAVIS counterpart"):
        by_hf_id("Salesforce/blip2-opt-13b")
    assert markdown_table().count("\n") == len(CHECKPOINTS) + 1
    lavis_compat.apply()
    from lavis.common.registry import registry

    for checkpoint in CHECKPOINTS:  # every row names a model type LAVIS 1.0.2 really has
        model_class = registry.get_model_class(checkpoint.lavis_name)
        assert checkpoint.lavis_model_type in model_class.PRETRAINED_MODEL_CONFIG_DICT


def test_optional_imports_are_stood_in_only_when_missing():
    for package in lavis_compat.OPTIONAL_IMPORTS:
        module = sys.modules.get(package)
        if module is not None and not isinstance(module, lavis_compat._AbsentModule):
            assert module.__spec__ is not None  # a real installed package was left alone


def test_cross_attention_maps_match(offline_model, lavis_model, samples):
    hf_maps, lavis_maps = offline_model.cross_attentions(samples), lavis_model.cross_attentions(samples)
    assert hf_maps.shape == lavis_maps.shape
    assert torch.allclose(hf_maps, lavis_maps, atol=TOLERANCE)


# Flan-T5 under both backends: tests/test_released_formats.py, on the released layout with an untied head.


def test_readme_shows_the_checkpoint_table_and_profiles_use_it():
    from pathlib import Path

    from helpers.profiles import PROFILES, Profile

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert markdown_table() in readme
    assert PROFILES["t4"].lavis_models == "blip2_opt/pretrain_opt2.7b, blip2_image_text_matching/pretrain"
    with pytest.raises(ValueError, match="no LAVIS counterpart"):
        Profile("custom", "someone/blip2-variant", "Salesforce/blip2-itm-vit-g", "not in the table")


def test_importing_lavis_leaves_truncated_images_refused():
    from PIL import ImageFile

    lavis_compat.apply()
    import lavis.datasets.datasets.coco_caption_datasets  # noqa: F401  (the module that flips the setting)

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False

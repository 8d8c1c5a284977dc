"""The HF backend on the offline checkpoint: the behaviour users rely on, independent of weight quality."""

from __future__ import annotations

import pytest
import torch

from helpers import GREEDY, GenerationSettings, RankedText

FOUR = GREEDY.replace(max_new_tokens=4)


def test_caption_returns_one_string_per_image(offline_model, samples):
    captions = offline_model.caption(samples, FOUR)
    assert len(captions) == len(samples)
    # Random weights may emit only special tokens (an empty caption); tests/test_toyworld_quality.py checks
    # what a trained miniature says.
    assert all(isinstance(caption, str) for caption in captions)
    alone = [offline_model.caption(image, FOUR)[0] for image in samples]
    assert captions == alone  # batching changes nothing: each caption belongs to its own image


def test_several_captions_are_grouped_by_image(offline_model, samples):
    settings = GenerationSettings(num_beams=3, num_captions=3, max_new_tokens=4)
    captions = offline_model.caption(samples[:2], settings)
    assert len(captions) == 6
    assert captions[:3] == offline_model.caption(samples[0], settings)


def test_batch_with_different_prompts_matches_one_at_a_time(offline_model, samples):
    # Left padding: a short and a long prompt in one batch must decode exactly as they do alone.
    questions = ["what?", "what is shown in the photo of a cat on a couch with two dogs?", "how many?"]
    batched = offline_model.ask(samples, questions, settings=FOUR)
    alone = [
        offline_model.ask(image, q, settings=FOUR)[0] for image, q in zip(samples, questions, strict=True)
    ]
    assert batched == alone


def test_prompt_is_stripped_from_answers(offline_model, samples):
    prompt = "Question: what is shown in the photo? Answer:"
    answer = offline_model.instruct(samples[0], prompt, FOUR)[0]
    processor, model = offline_model.processor, offline_model.model
    inputs = processor(images=samples[0], text=prompt, return_tensors="pt")
    full = processor.batch_decode(model.generate(**inputs, **FOUR.to_hf_kwargs()), skip_special_tokens=True)[
        0
    ]
    assert full.strip().startswith("Question: what is shown in the photo? Answer:")
    assert not answer.startswith("Question:")
    assert full.strip().endswith(answer)


def test_ask_uses_the_context_prompt(offline_model, samples, monkeypatch):
    seen = []
    monkeypatch.setattr(
        offline_model, "generate", lambda images, prompts, settings: seen.extend(prompts) or prompts
    )
    offline_model.ask(
        samples[0], "where is the name merlion coming from?", context=[("which city is this?", "singapore")]
    )
    assert seen == [
        "Question: which city is this? Answer: singapore. Question: where is the name merlion coming from? Answer:"
    ]


def test_one_question_per_image_is_enforced(offline_model, samples):
    with pytest.raises(ValueError, match="questions has 2 entries for 3 images"):
        offline_model.ask(samples, ["a?", "b?"])


def test_itc_and_itm_equal_the_retrieval_models_own_forward(offline_model, samples):
    texts = ["a cat on a couch", "a rocket", "a cup of coffee"]
    scores = offline_model.match(samples[:1], texts)
    retrieval, processor = offline_model.retrieval, offline_model.retrieval_processor
    pixels = processor.image_processor(samples[:1], return_tensors="pt")["pixel_values"]
    tokens = processor.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        itc = retrieval(pixel_values=pixels, input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
        itm_logits = [
            retrieval(
                pixel_values=pixels,
                input_ids=tokens.input_ids[i : i + 1],
                attention_mask=tokens.attention_mask[i : i + 1],
                use_image_text_matching_head=True,
            ).logits_per_image
            for i in range(len(texts))
        ]
    itm = torch.cat(itm_logits).softmax(dim=-1)[:, 1]
    torch.testing.assert_close(scores.itc, itc.logits_per_image.reshape(1, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(scores.itm[0], itm, atol=1e-5, rtol=0)


def test_match_scores_every_image_against_every_text(offline_model, samples):
    scores = offline_model.match(samples, ["a cat", "a rocket"])
    assert scores.itc.shape == scores.itm.shape == (3, 2)
    assert bool(((scores.itm >= 0) & (scores.itm <= 1)).all())
    assert bool((scores.itc.abs() <= 1 + 1e-5).all())


def test_rank_texts_reranks_the_itc_top_k_with_itm(offline_model, samples):
    texts = ["a cat", "a dog", "a rocket", "coffee", "a woman"]
    ranked = offline_model.rank_texts(samples[0], texts, top_k=3)
    assert all(isinstance(item, RankedText) for item in ranked)
    assert sorted(item.index for item in ranked) == list(range(5))
    head, tail = ranked[:3], ranked[3:]
    assert all(item.itm is not None for item in head) and all(item.itm is None for item in tail)
    assert [item.itm for item in head] == sorted((item.itm for item in head), reverse=True)
    assert min(item.itc for item in head) >= max(item.itc for item in tail)


def test_feature_shapes_follow_the_config(offline_model, samples):
    config = offline_model.retrieval.config
    queries, hidden = config.num_query_tokens, config.qformer_config.hidden_size
    image = offline_model.extract_features(samples[:2], mode="image")
    assert image.image_embeds.shape == (2, queries, hidden)
    assert image.image_embeds_proj.shape == (2, queries, config.image_text_hidden_size)
    torch.testing.assert_close(image.image_embeds_proj.norm(dim=-1), torch.ones(2, queries))
    text = offline_model.extract_features(texts=["a cat", "a cup of coffee on a table"], mode="text")
    assert text.text_embeds.shape[0] == 2 and text.text_embeds.shape[2] == hidden
    assert text.text_embeds_proj.shape[2] == config.image_text_hidden_size
    fused = offline_model.extract_features(samples[:2], texts=["a cat", "a rocket"], mode="multimodal")
    assert fused.multimodal_embeds.shape == (2, queries, hidden)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "audio"}, "mode='audio'"),
        ({"mode": "text"}, "needs texts="),
        ({"mode": "multimodal", "texts": ["a"]}, "needs images="),
    ],
)
def test_feature_modes_are_checked(offline_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        offline_model.extract_features(**kwargs)


def test_empty_texts_are_refused(offline_model, samples):
    with pytest.raises(ValueError, match="non-empty"):
        offline_model.rank_texts(samples[0], ["a cat", "  "])


def test_load_reports_its_choices_and_accepts_a_folder(offline_model, capsys):
    from helpers import load_blip2

    model = load_blip2("offline", device="cpu", model_id=offline_model.caption_model)
    printed = capsys.readouterr().out
    assert "profile 'offline'" in printed and "cpu / float32" in printed
    assert model.caption_model == offline_model.caption_model


def test_unknown_backend_is_refused():
    from helpers import load_blip2

    with pytest.raises(ValueError, match="backend='onnx' is not available"):
        load_blip2("offline", backend="onnx")


def test_images_are_preprocessed_with_the_pil_backend(offline_model):
    # The torchvision backend differs from LAVIS's preprocessing by 1-2 grey levels; PIL's is the faithful one.
    for processor in (offline_model.processor, offline_model.retrieval_processor):
        bases = [base.__name__ for base in type(processor.image_processor).__mro__]
        assert not any(name == "TorchvisionBackend" or name.endswith("Fast") for name in bases), bases


def test_itm_runs_the_vit_once_per_distinct_image(offline_model, samples):
    batches = []
    hook = offline_model.retrieval.vision_model.register_forward_hook(
        lambda module, args, kwargs_or_output: batches.append(kwargs_or_output.last_hidden_state.shape[0])
    )
    try:
        offline_model.match(samples, ["a cat", "a rocket", "coffee"])
    finally:
        hook.remove()
    assert batches == [3, 3]  # ITC image features, then the 9 ITM pairs over the same 3 images

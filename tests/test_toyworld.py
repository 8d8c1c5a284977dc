"""The toy world: deterministic scenes whose captions and answers are true, tokenizers with the real models'
conventions, training examples laid out as the processor lays them out, and a pipeline that saves loadable
HF-layout checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Blip2Processor

from helpers.backends.hf import pil_processor_kwargs
from helpers.prompts import vqa_prompt
from helpers.toyworld import data, models, sequences, tokenizers, world
from helpers.toyworld.metrics import caption_attribute_f1, mentioned_attributes
from helpers.toyworld.pipeline import Recipe, save, scene_examples, train


def test_scenes_are_a_pure_function_of_seed_split_and_index() -> None:
    assert world.make_scene(3, "train", 7) == world.make_scene(3, "train", 7)
    assert world.make_scene(3, "train", 7) != world.make_scene(3, "test", 7)
    first, again = world.render(world.make_scene(0, "val", 1)), world.render(world.make_scene(0, "val", 1))
    assert first.size == (world.IMAGE_SIZE, world.IMAGE_SIZE)
    assert np.array_equal(np.asarray(first), np.asarray(again))


@pytest.mark.parametrize("index", range(30))
def test_images_show_what_the_caption_says(index: int) -> None:
    scene = world.make_scene(0, "test", index)
    pixels = np.asarray(world.render(scene)).astype(int)
    painted = np.abs(pixels - 255).sum(axis=2) > 60
    columns = np.nonzero(painted.any(axis=0))[0]
    middle = world.IMAGE_SIZE // 2
    assert (columns.max() < middle) if scene.side == "left" else (columns.min() > middle)
    assert len(scene.centres) == world.COUNTS.index(scene.count) + 1
    colour = pixels[painted].mean(axis=0)
    assert max(world.COLOURS, key=lambda name: -np.abs(colour - world._RGB[name]).sum()) == scene.colour


def test_captions_name_every_attribute_once() -> None:
    scene = world.make_scene(0, "train", 0)
    assert mentioned_attributes(scene.caption()) == set(scene.attributes.items())
    assert caption_attribute_f1([scene.caption()], [scene]) == 1.0


def test_caption_f1_counts_wrong_and_missing_attributes() -> None:
    scene = world.Scene("circle", "red", "two", "small", "left", ((16, 16), (16, 48)), 7, (220, 40, 40))
    assert caption_attribute_f1(["two small red circles on the right"], [scene]) == pytest.approx(0.8)
    assert caption_attribute_f1(["red circles"], [scene]) == pytest.approx(2 * 1 * 0.4 / 1.4)
    assert caption_attribute_f1(["a photo of a cat"], [scene]) == 0.0
    with pytest.raises(ValueError, match="one caption per scene"):
        caption_attribute_f1(["x", "y"], [scene])


def test_answers_are_true_and_yes_no_is_balanced() -> None:
    test = world.scenes(0, "test", 200)
    pairs = world.split_questions(0, "test", test)
    for position, qa in pairs:
        if qa.kind in world.ATTRIBUTES:
            assert qa.answer == getattr(test[position], qa.kind)
        assert qa.answers == (qa.answer,) * world.VQA_ANNOTATORS
    yes = [qa.answer for _, qa in pairs if qa.kind == "yes/no"]
    assert 0.4 < yes.count("yes") / len(yes) < 0.6


def test_retrieval_sets_have_one_right_caption_per_image() -> None:
    chosen = world.retrieval_set(0, "test", 100)
    assert len({scene.caption() for scene in chosen}) == 100
    with pytest.raises(ValueError, match="distinct captions"):
        world.retrieval_set(0, "test", 1000)


@pytest.fixture(scope="module")
def lm_tokenizer():
    return tokenizers.opt_tokenizer(world.world_text(0, 200))


def test_tokenizers_keep_the_real_models_conventions(lm_tokenizer) -> None:
    assert lm_tokenizer.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>"]) == [0, 1, 2, 3]
    ids = lm_tokenizer("two small red circles").input_ids
    assert ids[0] == lm_tokenizer.bos_token_id == 2 and len(ids) == 5  # one token per world word
    assert lm_tokenizer.decode(lm_tokenizer("a photo of a cat!").input_ids[1:]) == "a photo of a cat!"
    bert = tokenizers.bert_tokenizer(world.world_text(0, 200))
    assert bert.convert_ids_to_tokens(bert("Two small red circles").input_ids) == [
        "[CLS]", "two", "small", "red", "circles", "[SEP]",
    ]  # fmt: skip
    assert bert.bos_token == tokenizers.DEC_TOKEN
    assert tokenizers.bert_tokenizer(world.world_text(0, 200)).get_vocab() == bert.get_vocab()


def test_stage2_examples_are_laid_out_as_the_processor_lays_out_prompts(lm_tokenizer, tmp_path) -> None:
    sizes = models.Sizes()
    models.caption_processor(lm_tokenizer, sizes).save_pretrained(tmp_path)
    processor = Blip2Processor.from_pretrained(tmp_path, **pil_processor_kwargs())
    image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token.content)
    prompt = vqa_prompt("what color is the square?")
    example = sequences.Example(prompt, "red")
    ids, labels = sequences.visual_example(processor.tokenizer, image_token, sizes.num_query_tokens, example)
    image = world.render(world.make_scene(0, "test", 0))
    expected = processor(images=image, text=prompt, return_tensors="pt")["input_ids"][0].tolist()
    assert ids[: len(expected)] == expected
    answer = [label for label in labels if label != sequences.IGNORE]
    assert processor.tokenizer.decode(answer) == " red\n"
    assert answer[-1] == models.newline_id(processor.tokenizer)


def test_text_documents_put_the_question_where_stage_2_puts_it(lm_tokenizer) -> None:
    # The LM learns from text what stage 2 asks through the visual prompt: same positions, same targets.
    scene, queries = world.make_scene(0, "train", 3), models.Sizes().num_query_tokens
    example = sequences.Example(vqa_prompt("what shape is shown?"), scene.shape)
    ((text_ids, text_labels),) = sequences.text_documents(lm_tokenizer, scene, [example], queries)
    visual_ids, visual_labels = sequences.visual_example(lm_tokenizer, 999, queries, example)
    assert text_labels == visual_labels and text_ids[queries:] == visual_ids[queries:]
    assert lm_tokenizer.decode(text_ids[:queries]) == f" {scene.caption()}."
    with pytest.raises(ValueError, match="num_query_tokens=8"):
        sequences.text_documents(lm_tokenizer, scene, [example], queries=32)


def test_yes_no_probes_use_the_captions_number() -> None:
    # "are there blue circles?" about "two small red circles": yes/no compares words, not plural with singular.
    rng = np.random.default_rng(0)
    for index in range(60):
        scene = world.make_scene(0, "val", index)
        question = world.yes_no(scene, rng).question.rstrip("?").split()
        nouns = [word for word in question if word.rstrip("s") in world.SHAPES]
        count = next((word for word in question if word in world.COUNTS), scene.count)
        assert nouns and all(noun.endswith("s") == (count != "one") for noun in nouns), question


def test_every_scene_teaches_its_caption_each_question_kind_and_more_yes_no_probes() -> None:
    recipe = Recipe(train_scenes=10, text_scenes=30, extra_yes_no=2)
    taught = scene_examples(recipe, recipe.text_scenes)
    assert [scene for scene, _ in taught] == world.scenes(0, "train", 30)
    for scene, examples in taught:
        assert examples[0] == sequences.Example("", scene.caption())
        assert len(examples) == 1 + 6 + 2
        assert sum(example.target in ("yes", "no") for example in examples) == 3
    assert scene_examples(recipe, recipe.train_scenes) == taught[:10]  # stage 2 asks what the LM read
    with pytest.raises(ValueError, match="raise text_scenes"):
        Recipe(train_scenes=10, text_scenes=5)


def test_pixel_normaliser_equals_the_image_processor(lm_tokenizer, tmp_path) -> None:
    models.caption_processor(lm_tokenizer, models.Sizes()).save_pretrained(tmp_path)
    image_processor = Blip2Processor.from_pretrained(tmp_path, **pil_processor_kwargs()).image_processor
    scenes = world.scenes(0, "val", 3)
    expected = image_processor([world.render(s) for s in scenes], return_tensors="pt")["pixel_values"]
    ours = data.PixelNormaliser(image_processor)(data.render_uint8(scenes))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_a_tiny_run_saves_checkpoints_both_stages_load(tmp_path) -> None:
    recipe = Recipe(
        train_scenes=24,
        text_scenes=24,
        vision_steps=2,
        vision_batch=4,
        lm_steps=2,
        lm_batch=4,
        stage1_steps=2,
        stage1_batch=4,
        stage2_steps=2,
        stage2_batch=4,
    )
    trained = train(recipe)
    assert set(trained.losses) == {"vision", "language model", "stage 1", "stage 2"}
    assert set(trained.losses["stage 1"][0]) == {"itc", "itm", "itg", "total"}
    folder = save(trained, tmp_path / "run")
    from helpers.toyworld.evaluate import load_run

    model = load_run(folder)
    image = world.render(world.make_scene(0, "test", 0))
    assert isinstance(model.caption(image)[0], str)
    assert len(model.rank_texts(image, ["one red circle on the left", "two blue squares"], top_k=2)) == 2
    assert not list(tmp_path.glob(".run-*")), "the staging folder was left behind"

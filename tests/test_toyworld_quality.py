"""The shipped toy-world weights (data/toyworld/) learned what they were taught.

The issue's held-out targets (caption attribute F1 >= 0.9, VQA >= 0.85, R@1 >= 0.9) are measured by
`make bench` (build/bench/toyworld.json); the shipped weights do not reach them yet. These tests hold what
the weights do learn, far above chance: colour and size answers on held-out scenes.
"""

from __future__ import annotations

import pytest

from helpers import GREEDY
from helpers.toyworld import world
from helpers.toyworld.evaluate import load_run


@pytest.fixture(scope="module")
def shipped():
    return load_run()


@pytest.mark.parametrize("kind", ["colour", "size"])
def test_colour_and_size_answers_on_held_out_scenes_are_right(shipped, kind) -> None:
    scenes = world.scenes(0, "test", 24)
    images = [world.render(scene) for scene in scenes]
    pairs = [(i, qa) for i, qa in world.split_questions(0, "test", scenes) if qa.kind == kind]
    answers = shipped.ask([images[i] for i, _ in pairs], [qa.question for _, qa in pairs], settings=GREEDY)
    truth = [qa.answer for _, qa in pairs]
    right = sum(answer == expected for answer, expected in zip(answers, truth, strict=True))
    assert right / len(pairs) >= 0.8, list(zip(answers, truth, strict=True))  # chance: 0.25 and 0.5


def test_captions_name_the_colour_and_both_backends_say_the_same(shipped) -> None:
    scenes = world.scenes(0, "test", 12)
    images = [world.render(scene) for scene in scenes]
    captions = shipped.caption(images, GREEDY)
    named = sum(scene.colour in caption.split() for scene, caption in zip(scenes, captions, strict=True))
    assert named / len(scenes) >= 0.8, list(zip(captions, [s.caption() for s in scenes], strict=True))
    lavis = load_run(backend="lavis")
    assert lavis.caption(images, GREEDY) == captions
    question = "what color is the shape?"
    assert lavis.ask(images[:4], question, settings=GREEDY) == shipped.ask(
        images[:4], question, settings=GREEDY
    )

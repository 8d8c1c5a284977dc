"""Held-out toy-world scenes for the notebooks: images the offline model has never seen, with the truth.

The offline profile loads the toy-world miniature, which knows coloured shapes only; these samples let
notebooks 01-03 show it captioning, answering and retrieving correctly, and check every output against
what is really in the picture.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from helpers.toyworld.world import QA, Scene, render, retrieval_set, split_questions


@dataclass(frozen=True)
class ToySample:
    """A rendered test scene, its true caption and one question of every kind about it."""

    scene: Scene
    image: Image.Image
    questions: tuple[QA, ...]

    @property
    def caption(self) -> str:
        return self.scene.caption()


def toy_samples(count: int = 6, seed: int = 0) -> list[ToySample]:
    """`count` test-split scenes with pairwise different captions (so retrieval has one right answer each)."""
    if count < 1:
        raise ValueError(f"count={count}: ask for at least one toy sample")
    scenes = retrieval_set(seed, "test", count)
    by_scene: dict[int, list[QA]] = {}
    for position, qa in split_questions(seed, "test", scenes):
        by_scene.setdefault(position, []).append(qa)
    return [ToySample(scene, render(scene), tuple(by_scene[i])) for i, scene in enumerate(scenes)]

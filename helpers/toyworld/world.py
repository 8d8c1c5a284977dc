"""The toy world: scenes of a few coloured shapes, rendered at 224 px, with captions, questions and answers.

A scene is one group of identical shapes (same shape, colour and size) on one side of a white canvas, each in
its own cell of a 4x4 grid that matches the miniature ViT's 56-pixel patches, so every fact about it is one word: "two small red circles on the left". Everything is a pure function of
(seed, split, index), so any scene can be regenerated on its own and the splits never share a scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 224
"""The ViT-g input size, so the real BLIP image processor applies unchanged."""
GRID = 4
CELL = IMAGE_SIZE // GRID
"""Shapes sit in the cells of a 4x4 grid, one per 56-pixel ViT patch, so a tiny ViT learns them in minutes."""

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
COUNTS = ("one", "two", "three")
SIZES = ("small", "large")
SIDES = ("left", "right")
ATTRIBUTES = {"shape": SHAPES, "colour": COLOURS, "count": COUNTS, "size": SIZES, "side": SIDES}
"""Every attribute and its values; each value is one word, which is what caption attribute F1 matches."""

SPLITS = ("train", "val", "test")
VQA_ANNOTATORS = 10
"""VQA v2 gives each question ten human answers and scores min(matches / 3, 1); every toy annotator agrees."""

_RGB = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 200, 30)}
_RADIUS = {"small": (9, 10), "large": (18, 20)}
_JITTER = 2
_BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class Scene:
    """One image's content: the attributes, and where each shape's centre is (pixels)."""

    shape: str
    colour: str
    count: str
    size: str
    side: str
    centres: tuple[tuple[int, int], ...]
    radius: int
    tint: tuple[int, int, int]

    @property
    def attributes(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in ATTRIBUTES}

    @property
    def noun(self) -> str:
        """The shape's noun, plural when there is more than one."""
        return self.shape if self.count == "one" else f"{self.shape}s"

    def caption(self) -> str:
        return f"{self.count} {self.size} {self.colour} {self.noun} on the {self.side}"


@dataclass(frozen=True)
class QA:
    """A question about a scene, its kind (colour, count, shape, size, side, yes/no) and its answer."""

    question: str
    answer: str
    kind: str

    @property
    def answers(self) -> tuple[str, ...]:
        """The answer as the VQA evaluation expects it: one per annotator."""
        return (self.answer,) * VQA_ANNOTATORS


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one scene; distinct for every (seed, split, index)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; use one of {SPLITS}")
    if index < 0:
        raise ValueError(f"index={index} must be non-negative")
    return np.random.default_rng([seed, SPLITS.index(split), index])


def make_scene(seed: int, split: str, index: int) -> Scene:
    """Draw a scene's attributes uniformly, then place its shapes without overlap on its side."""
    rng = scene_rng(seed, split, index)
    values = {name: options[rng.integers(len(options))] for name, options in ATTRIBUTES.items()}
    radius = int(rng.integers(_RADIUS[values["size"]][0], _RADIUS[values["size"]][1] + 1))
    count = COUNTS.index(values["count"]) + 1
    centres = _place(rng, count, values["side"])
    jitter = rng.integers(-15, 16, size=3)
    tint = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(_RGB[values["colour"]], jitter, strict=True))
    return Scene(**values, centres=centres, radius=radius, tint=tint)


def _place(rng: np.random.Generator, count: int, side: str) -> tuple[tuple[int, int], ...]:
    """Distinct cells of the side's grid columns (never a middle one), each centre jittered a little."""
    columns = range(0, GRID // 2) if side == "left" else range((GRID + 1) // 2, GRID)
    cells = [(column, row) for column in columns for row in range(GRID)]
    chosen = rng.choice(len(cells), size=count, replace=False)
    centres = []
    for index in sorted(chosen.tolist()):
        column, row = cells[index]
        dx, dy = rng.integers(-_JITTER, _JITTER + 1, size=2)
        centres.append((column * CELL + CELL // 2 + int(dx), row * CELL + CELL // 2 + int(dy)))
    return tuple(centres)


def render(scene: Scene) -> Image.Image:
    """The scene as a 224x224 RGB image."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    r = scene.radius
    for x, y in scene.centres:
        if scene.shape == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=scene.tint)
        elif scene.shape == "square":
            half = round(r * 0.85)  # same area impression as the circle
            draw.rectangle((x - half, y - half, x + half, y + half), fill=scene.tint)
        else:
            draw.polygon(
                [(x, y - r), (x - r, y + round(0.8 * r)), (x + r, y + round(0.8 * r))], fill=scene.tint
            )
    return image


def questions(scene: Scene, rng: np.random.Generator) -> list[QA]:
    """One question of every kind about `scene`; `rng` picks the phrasings and the yes/no probes."""
    noun, plural = scene.noun, scene.count != "one"
    be = "are" if plural else "is"
    colour_word = ("color", "colour")[rng.integers(2)]
    qas = [
        QA(f"what {colour_word} {be} the {noun}?", scene.colour, "colour"),
        QA(f"how many {scene.shape}s are there?", scene.count, "count"),
        QA(("what shape is shown?", "what shape are the objects?")[rng.integers(2)], scene.shape, "shape"),
        QA(f"what size {be} the {noun}?", scene.size, "size"),
        QA(f"where {be} the {noun}?", scene.side, "side"),
    ]
    qas.append(yes_no(scene, rng))
    return qas


def yes_no(scene: Scene, rng: np.random.Generator) -> QA:
    """A yes/no probe about one attribute, true half of the time, worded like the caption.

    The probe says "circles" where the caption does ("are there blue circles?" about "two small red circles
    on the left"), so telling yes from no is comparing a word with the caption's, not also plural with singular.
    """
    truthful = bool(rng.integers(2))
    kind = ("colour", "shape", "side", "count")[rng.integers(4)]
    value = getattr(scene, kind)
    if not truthful:
        others = [option for option in ATTRIBUTES[kind] if option != value]
        value = others[rng.integers(len(others))]
    answer = "yes" if truthful else "no"
    plural = scene.count != "one"
    there = "are there" if plural else "is there a"
    if kind == "colour":
        return QA(f"{there} {value} {scene.noun}?", answer, "yes/no")
    if kind == "shape":
        return QA(f"{there} {value}{'s' if plural else ''}?", answer, "yes/no")
    if kind == "side":
        return QA(f"{'are' if plural else 'is'} the {scene.noun} on the {value}?", answer, "yes/no")
    noun = scene.shape if value == "one" else f"{scene.shape}s"
    return QA(f"{'is' if value == 'one' else 'are'} there {value} {noun}?", answer, "yes/no")


def scenes(seed: int, split: str, count: int, start: int = 0) -> list[Scene]:
    """Scenes `start` .. `start + count - 1` of a split."""
    return [make_scene(seed, split, index) for index in range(start, start + count)]


def split_questions(seed: int, split: str, split_scenes: list[Scene]) -> list[tuple[int, QA]]:
    """Every question of every scene of a split, as (scene position, QA); deterministic by seed."""
    rng = np.random.default_rng([seed, SPLITS.index(split), 1_000_003])
    return [(position, qa) for position, scene in enumerate(split_scenes) for qa in questions(scene, rng)]


def retrieval_set(seed: int, split: str, size: int = 100) -> list[Scene]:
    """`size` scenes of a split with pairwise distinct captions: each image has exactly one right text."""
    combinations = math.prod(len(values) for values in ATTRIBUTES.values())
    if not 1 <= size <= combinations:
        raise ValueError(f"size={size}: a retrieval set holds 1 to {combinations} distinct captions")
    chosen: dict[str, Scene] = {}
    index = 0
    while len(chosen) < size:
        scene = make_scene(seed, split, index)
        chosen.setdefault(scene.caption(), scene)
        index += 1
    return list(chosen.values())


def world_text(seed: int, count: int = 2000) -> list[str]:
    """The world's sentences (captions, questions in the VQA prompt, answers) that tokenizers learn from."""
    train = scenes(seed, "train", count)
    lines = [scene.caption() for scene in train]
    for _, qa in split_questions(seed, "train", train):
        lines.append(f"Question: {qa.question} Answer: {qa.answer}")
        lines.append(f"Question: {qa.question.capitalize()} Answer: {qa.answer}")
    return lines

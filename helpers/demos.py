"""The inputs of the demos in notebooks 01-03, chosen once from the profile.

A demo teaches only on inputs its model knows. The real BLIP-2 knows photos, so real profiles use the bundled
photos and the Colab guide's questions. The offline miniature knows only its toy world, so the offline profile
uses toy scenes, near-miss toy captions and questions of its world; on photos every decoding setting would
print the same nonsense and the lessons would not show. Each notebook still runs one labelled cell on the
other kind of picture (`DemoInputs.other`): photos offline, toy scenes on a real profile.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, replace

from PIL import Image

from helpers.images import sample_image, sample_names
from helpers.profiles import choose_profile
from helpers.toyworld import world
from helpers.toyworld.samples import ToySample, toy_samples

PHOTO_TEXTS = {
    "astronaut": "an astronaut in an orange suit holding a helmet",
    "camera": "a black and white photo of a man filming with a camera on a tripod",
    "cat": "a close-up of a tabby cat",
    "coffee": "a cup of coffee on a saucer",
    "hubble_deep_field": "thousands of galaxies in deep space",
    "rocket": "a rocket on its launch pad at dusk",
}
"""One description of each bundled photo: the right text of its row in notebook 03's matrices."""
PHOTO_NEAR_MISSES = {
    "astronaut": [
        "an astronaut in a white suit holding a helmet",
        "an astronaut floating in space",
        "a pilot in a cockpit",
    ],
    "camera": [
        "a colour photo of a man filming",
        "a man taking a selfie with a phone",
        "a camera on a tripod",
    ],
    "cat": ["a close-up of a black cat", "a tabby cat asleep on a sofa", "a dog looking at the camera"],
    "coffee": ["a cup of tea on a saucer", "an empty cup on a table", "a glass of orange juice"],
    "hubble_deep_field": ["a few stars in the night sky", "the surface of the moon", "a city at night"],
    "rocket": [
        "a rocket lifting off in daylight",
        "an aeroplane on a runway at dusk",
        "a lighthouse at dusk",
    ],
}
"""Captions close to each photo's own, differing in one detail: where ITM's joint reading should pay off."""
PHOTO_QUESTIONS = {
    "astronaut": "What is this person wearing?",
    "camera": "What is the man holding?",
    "cat": "What animal is this?",
    "coffee": "What is in the cup?",
    "hubble_deep_field": "What does this picture show?",
    "rocket": "What time of day is it?",
}
GUIDE_QUESTIONS = (
    "What is shown in the photo?",
    "What color is the bus?",
    "How many people are visible in the image?",
    "What is the weather like in the image?",
)
"""The Colab guide's four questions; none of the photos shows a bus, so a colour is a hallucination."""
GUIDE_INSTRUCTIONS = (
    "Describe in detail what is happening in the image.",
    "Write a short story based on this image.",
    "List all the objects you can see in the image.",
    "Explain what emotions this image evokes and why.",
)
TOY_IMAGE = 0
"""The toy scene of the single-image demos: 'one small red triangle on the left' (one shape, so "it" fits)."""
_QUESTION_KINDS = ("colour", "count", "side", "yes/no")


@dataclass(frozen=True)
class DemoImage:
    """A picture of a demo, its label, and a text that describes it (the true caption of a toy scene)."""

    label: str
    image: Image.Image
    text: str
    true_caption: bool
    """Whether `text` is the exact caption a correct model writes (toy scenes), or just a description."""


@dataclass(frozen=True)
class DemoInputs:
    """Everything notebooks 01-03 show their model; one field per kind of demo."""

    world: str
    """"toy world" (offline profile) or "photos" (real profiles)."""
    image: DemoImage
    """The single picture of the decoding, question, ranking and conversation demos."""
    images: tuple[DemoImage, ...]
    """A batch of pictures (`count` of them), each with its right text, so matrices have the match on the diagonal."""
    prompt: str
    """One caption prompt for the whole batch."""
    prompts: tuple[str, str]
    """Two prompts of different lengths for the first two pictures (left padding)."""
    questions: tuple[str, ...]
    """Four questions about `image`."""
    batch_questions: tuple[str, ...]
    """One question per picture of `images`."""
    instructions: tuple[str, ...]
    """Free-form inputs for `model.instruct` about `image`."""
    story: str
    """The instruction sampled twice with nucleus sampling."""
    conversation: tuple[str, str]
    """A first question and a follow-up that needs it as context."""
    candidates: tuple[str, ...]
    """`image`'s own text first, then near misses that differ from it in one detail."""
    other: tuple[DemoImage, ...]
    """The other kind of picture, for one labelled cell: photos offline, toy scenes on a real profile."""

    def __str__(self) -> str:
        if self.world == "toy world":
            return (
                "Demo inputs: toy-world scenes, the only pictures the offline miniature knows "
                "(photos: one labelled cell)."
            )
        return (
            "Demo inputs: the bundled photos and the Colab guide's questions (toy scenes: one labelled cell)."
        )


def demo_inputs(profile: str = "auto", image: str = "cat", count: int = 3) -> DemoInputs:
    """The demo inputs for `profile` (resolved as `load_blip2` resolves it).

    `image` names the photo of the single-image demos and `count` the pictures in a batch (at most the six
    bundled photos); the offline profile uses toy scenes instead and ignores `image`.
    """
    names = sample_names()
    if image not in names:
        raise ValueError(f"image={image!r} is not a bundled photo; use one of {names}")
    if not 2 <= count <= len(names):
        raise ValueError(f"count={count}: a demo batch holds 2 to {len(names)} pictures")
    if choose_profile(profile).profile.is_offline:
        return _toy_inputs(count)
    return _photo_inputs(image, count)


def _photo(name: str) -> DemoImage:
    return DemoImage(name, sample_image(name), PHOTO_TEXTS[name], true_caption=False)


def _toy(sample: ToySample, index: int) -> DemoImage:
    return DemoImage(f"toy scene {index + 1}", sample.image, sample.caption, true_caption=True)


def _photo_inputs(image: str, count: int) -> DemoInputs:
    names = sample_names()[:count]
    toys = toy_samples(count)
    return DemoInputs(
        world="photos",
        image=_photo(image),
        images=tuple(_photo(name) for name in names),
        prompt="a photo of",
        prompts=("a photo of", "a close-up picture taken outdoors of"),
        questions=GUIDE_QUESTIONS,
        batch_questions=tuple(PHOTO_QUESTIONS[name] for name in names),
        instructions=GUIDE_INSTRUCTIONS,
        story="Write a short story based on this image.",
        conversation=("What is shown in the photo?", "What color is it?"),
        candidates=(PHOTO_TEXTS[image], *PHOTO_NEAR_MISSES[image]),
        other=tuple(_toy(sample, index) for index, sample in enumerate(toys)),
    )


def _toy_inputs(count: int) -> DemoInputs:
    toys = toy_samples(max(count, TOY_IMAGE + 1))
    shown = toys[TOY_IMAGE]
    by_kind = {qa.kind: qa.question for qa in shown.questions}
    first_words = [sample.caption.split() for sample in toys[:2]]
    return DemoInputs(
        world="toy world",
        image=_toy(shown, TOY_IMAGE),
        images=tuple(_toy(sample, index) for index, sample in enumerate(toys[:count])),
        prompt="two",  # a count the picture may contradict: does the prompt or the picture win?
        prompts=(" ".join(first_words[0][:1]), " ".join(first_words[1][:3])),
        questions=(*(by_kind[kind] for kind in _QUESTION_KINDS[:3]), _false_probe(shown.scene)),
        batch_questions=tuple(
            _question_of_kind(sample, _QUESTION_KINDS[index % 3]) for index, sample in enumerate(toys[:count])
        ),
        instructions=tuple(by_kind[kind] for kind in _QUESTION_KINDS[:3]),
        story=shown.caption.split()[0],  # no instructions known: it samples a caption's ending
        conversation=("what shape is shown?", "what color is it?"),
        candidates=(shown.caption, *near_misses(shown.scene)),
        other=tuple(_photo(name) for name in sample_names()[:count]),
    )


def _false_probe(scene: world.Scene) -> str:
    """A yes/no question in the world's wording whose answer is "no": the toy world's hallucination test."""
    colour = next(value for value in world.COLOURS if value != scene.colour)
    there = "is there a" if scene.count == "one" else "are there"
    return f"{there} {colour} {scene.noun}?"


def caption_report(pictures: tuple[DemoImage, ...], outputs: list[str]) -> str:
    """One line per picture: its output, checked against the truth where the truth is a caption."""
    lines = []
    for picture, output in zip(pictures, outputs, strict=True):
        if picture.true_caption:
            verdict = "right  " if output == picture.text else "differs"
            lines.append(f"{verdict} {output!r:<40} true: {picture.text!r}")
        else:
            lines.append(f"{picture.label:>17}: {output}")
    return "\n".join(lines)


def table_row(label: str, text: str, label_width: int = 26, width: int = 110) -> str:
    """`label | text`, the text wrapped under itself so that no line of a printed table passes `width`."""
    lines = textwrap.wrap(text, width - label_width - 3) or [""]
    indent = " " * label_width + " | "
    return f"{label:<{label_width}} | " + ("\n" + indent).join(lines)


def _question_of_kind(sample: ToySample, kind: str) -> str:
    return next(qa.question for qa in sample.questions if qa.kind == kind)


def near_misses(scene: world.Scene) -> list[str]:
    """Captions that differ from `scene`'s in exactly one word: count, size, colour, shape, then side."""
    changed = []
    for attribute in ("count", "size", "colour", "shape", "side"):
        values = world.ATTRIBUTES[attribute]
        other = values[(values.index(getattr(scene, attribute)) + 1) % len(values)]
        changed.append(replace(scene, **{attribute: other}).caption())
    return changed

"""Caption attribute F1: how many of a scene's five facts a caption states, and how many it gets wrong.

BLEU and CIDEr reward n-gram overlap, so "two small red circles on the right" for a left-hand scene scores
high; the toy world knows the truth, so it can check every attribute a caption names instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from helpers.toyworld.world import ATTRIBUTES, Scene


def mentioned_attributes(text: str) -> set[tuple[str, str]]:
    """Every (attribute, value) a text names; plural nouns name their shape ("circles" -> circle)."""
    found: set[tuple[str, str]] = set()
    for word in text.lower().replace(".", " ").replace(",", " ").replace("?", " ").split():
        for name, values in ATTRIBUTES.items():
            if word in values:
                found.add((name, word))
            elif name == "shape" and word.endswith("s") and word[:-1] in values:
                found.add((name, word[:-1]))
    return found


def caption_attribute_f1(predictions: Sequence[str], scenes: Sequence[Scene]) -> float:
    """Micro-averaged F1 of the attribute values the captions name against the scenes' true values."""
    if len(predictions) != len(scenes):
        raise ValueError(
            f"{len(predictions)} predictions for {len(scenes)} scenes; give one caption per scene"
        )
    if not scenes:
        raise ValueError("no scenes given; caption attribute F1 needs at least one caption")
    true_positives = predicted = actual = 0
    for text, scene in zip(predictions, scenes, strict=True):
        named = mentioned_attributes(text)
        truth = set(scene.attributes.items())
        true_positives += len(named & truth)
        predicted += len(named)
        actual += len(truth)
    if true_positives == 0:
        return 0.0
    precision, recall = true_positives / predicted, true_positives / actual
    return 2 * precision * recall / (precision + recall)

"""Each task's validation metric, computed through the public model API as a user would call it.

Caption: CIDEr and BLEU-4 (pycocoevalcap) against every reference caption of an image. VQA: the standard
VQA accuracy against every answer given for an (image, question) when every question has at least three
(VQAv2 has ten); a manifest with fewer answers per question gets answer accuracy instead (the normalised
prediction equals one of the answers), since the official formula leaves each annotator out in turn and
scores 0 when nobody else is left to agree. Retrieval: R@1/5/10 in both directions, ranked by ITC; lines
that share an image (or a text) are all positives for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from helpers.backends.base import Blip2Backend
from helpers.evaluation.metrics import caption_scores, recall_at_k
from helpers.evaluation.vqa_scoring import normalize_answer, vqa_accuracy
from helpers.finetune.manifests import Manifest
from helpers.generation import GenerationSettings
from helpers.images import load_image

MIN_VQA_ANNOTATORS = 3
"""VQA accuracy counts a prediction fully right when 3 other annotators gave it; below that it cannot be 1."""


def validate(
    backend: Blip2Backend, manifest: Manifest, settings: GenerationSettings, batch_size: int
) -> dict[str, float]:
    """The task's metrics on a validation manifest."""
    if manifest.task == "caption":
        return _caption(backend, manifest, settings, batch_size)
    if manifest.task == "vqa":
        return _vqa(backend, manifest, settings, batch_size)
    return _retrieval(backend, manifest, batch_size)


def _grouped(keys: Sequence[object], values: Sequence[str]) -> dict[object, list[str]]:
    groups: dict[object, list[str]] = {}
    for key, value in zip(keys, values, strict=True):
        groups.setdefault(key, []).append(value)
    return groups


def _batches(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _caption(
    backend: Blip2Backend, manifest: Manifest, settings: GenerationSettings, batch_size: int
) -> dict[str, float]:
    references = _grouped([e.image for e in manifest.examples], [e.text for e in manifest.examples])
    images = list(references)
    predictions = [
        caption
        for chunk in _batches(images, batch_size)
        for caption in backend.caption([load_image(path) for path in chunk], settings)
    ]
    return caption_scores(predictions, [references[path] for path in images], spice=False).metrics


def _vqa(
    backend: Blip2Backend, manifest: Manifest, settings: GenerationSettings, batch_size: int
) -> dict[str, float]:
    examples = manifest.examples
    answers = _grouped([(e.image, e.text) for e in examples], [e.answer or "" for e in examples])
    questions: list[tuple[Path, str]] = list(answers)
    predictions = [
        answer
        for chunk in _batches(questions, batch_size)
        for answer in backend.ask(
            [load_image(path) for path, _ in chunk], [question for _, question in chunk], settings=settings
        )
    ]
    references = [answers[key] for key in questions]
    if min(map(len, references)) >= MIN_VQA_ANNOTATORS:
        return {"VQA accuracy": vqa_accuracy(predictions, references)}
    right = [
        normalize_answer(prediction) in {normalize_answer(answer) for answer in humans}
        for prediction, humans in zip(predictions, references, strict=True)
    ]
    return {"answer accuracy": 100 * sum(right) / len(right)}


def _retrieval(backend: Blip2Backend, manifest: Manifest, batch_size: int) -> dict[str, float]:
    images = list(dict.fromkeys(e.image for e in manifest.examples))
    texts = list(dict.fromkeys(e.text for e in manifest.examples))
    image_row = {path: row for row, path in enumerate(images)}
    text_column = {text: column for column, text in enumerate(texts)}
    image_positives: list[set[int]] = [set() for _ in images]
    text_positives: list[set[int]] = [set() for _ in texts]
    for example in manifest.examples:
        image_positives[image_row[example.image]].add(text_column[example.text])
        text_positives[text_column[example.text]].add(image_row[example.image])
    similarity = torch.cat(
        [
            backend.itc_scores([load_image(path) for path in chunk], texts)
            for chunk in _batches(images, batch_size)
        ]
    )
    image_to_text = recall_at_k(similarity, image_positives)
    text_to_image = recall_at_k(similarity.t(), text_positives)
    return {f"image->text {k}": v for k, v in image_to_text.items()} | {
        f"text->image {k}": v for k, v in text_to_image.items()
    }

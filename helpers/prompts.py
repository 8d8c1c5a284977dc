"""The prompt formats and text clean-up BLIP-2 was evaluated with, in one place.

Zero-shot VQA quality depends on the exact prompt: the paper uses "Question: {} Answer:" for OPT, and the
LAVIS multi-turn example chains earlier turns as "Question: {q} Answer: {a}." before the new question.

LAVIS cleans every question and retrieval text before the model sees it (its `blip_question` and
`blip_caption` text processors, named in every BLIP-2 eval config); `lavis_question` and `lavis_caption`
do the same here, so both backends score what LAVIS scored. The COCO-fine-tuned captioners were trained
and evaluated with the prompt "a photo of" before the caption.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from helpers.user_input import check_context, check_text

VQA_TEMPLATE = "Question: {} Answer:"
"""The paper's zero-shot VQA prompt for OPT models."""

T5_VQA_TEMPLATE = "Question: {} Short answer:"
"""The paper's zero-shot VQA prompt for Flan-T5 models."""

COCO_CAPTION_PROMPT = "a photo of"
"""The prompt of the paper's COCO caption fine-tuning (Sec. 4.2), and of LAVIS's `caption_coco_*` models."""

LAVIS_MAX_WORDS = 50
"""LAVIS's default `max_words` for both text processors; no BLIP-2 config changes it."""

_LAVIS_MARKS = '.!"()*#:;~'
"""The characters LAVIS's text processors remove; note that "?", "," and "'" stay."""
_DELETE_MARKS = str.maketrans("", "", _LAVIS_MARKS)
_SPACE_MARKS = str.maketrans(dict.fromkeys(_LAVIS_MARKS, " "))
_WHITESPACE_RUN = re.compile(r"\s\s+")


def _first_words(text: str, max_words: int) -> str:
    """At most `max_words` words, counting as LAVIS does: pieces between single spaces."""
    pieces = text.split(" ")
    return " ".join(pieces[:max_words]) if len(pieces) > max_words else text


def lavis_question(question: str, max_words: int = LAVIS_MAX_WORDS) -> str:
    """A question as LAVIS's `blip_question` hands it to the model: lower case, marks deleted, words capped."""
    cleaned = question.lower().translate(_DELETE_MARKS).rstrip(" ")
    return _first_words(cleaned, max_words)


def lavis_caption(caption: str, max_words: int = LAVIS_MAX_WORDS) -> str:
    """A caption or retrieval text as LAVIS's `blip_caption` cleans it: lower case, marks to spaces,
    runs of whitespace to one space, ends trimmed, words capped."""
    spaced = _WHITESPACE_RUN.sub(" ", caption.lower().translate(_SPACE_MARKS))
    return _first_words(spaced.rstrip("\n").strip(" "), max_words)


_CONTEXT_TURN = "Question: {} Answer: {}."

Turn = tuple[str, str]


def vqa_prompt(question: str, context: Sequence[Turn] = (), template: str = VQA_TEMPLATE) -> str:
    """Build the prompt for `question`, after earlier (question, answer) turns as LAVIS's merlion example does."""
    check_text(question, "question")
    history = " ".join(_CONTEXT_TURN.format(q, a) for q, a in check_context(context))
    current = template.format(question.strip())
    return f"{history} {current}" if history else current

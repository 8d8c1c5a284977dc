"""VQA answer scoring: VQA accuracy (VQAv2, OK-VQA) and GQA exact match, in percent (the paper's scale).

`scoring="official"` (the default) is the VQA team's scorer (GT-Vision-Lab/VQA `vqaEval.py`) as LAVIS
ships it (`lavis/common/vqa_tools/vqa_eval.py`), which produced BLIP-2's numbers, quirks included:
- the prediction is normalised fully: whitespace, punctuation, lower case, number words to digits,
  articles dropped, contractions restored;
- the human answers only lose punctuation, and only when the annotators disagree; case, number words
  and articles stay. The released VQAv2 annotations are already normalised, so this matters only for
  home-made annotations: humans who all typed "Two" never match any prediction;
- at most 32 full stops are removed from one answer (the scorer passes `re.UNICODE` as `re.sub`'s count).

`scoring="lenient"` is the kit's friendlier option for home-made annotations: every human answer gets the
same full normalisation as the prediction. It is not the paper's metric; say so wherever it is reported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from helpers.evaluation.metrics import check_lengths

# ---- VQA answer normalisation (the official rules) ------------------------------------------------

_PUNCTUATION = tuple(';/[]"{}()=+\\_-><@`,?!')
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# The contracted forms of the official table; annotators typed them without (some) apostrophes.
# fmt: off
_CONTRACTED = (
    "ain't", "aren't", "can't", "could've", "couldn't", "couldn't've", "didn't", "doesn't", "don't",
    "hadn't", "hadn't've", "hasn't", "haven't", "he'd", "he'd've", "he's", "how'd", "how'll", "how's",
    "I'd've", "I'm", "I've", "isn't", "it'd", "it'd've", "it'll", "ma'am", "mightn't", "mightn't've",
    "might've", "mustn't", "must've", "needn't", "not've", "o'clock", "oughtn't", "'ow's'at", "shan't",
    "she'd've", "should've", "shouldn't", "shouldn't've", "somebody'd've", "somebody'll", "somebody's",
    "someone'd", "someone'd've", "someone'll", "someone's", "something'd", "something'd've", "something'll",
    "that's", "there'd", "there'd've", "there're", "there's", "they'd", "they'd've", "they'll", "they're",
    "they've", "'twas", "wasn't", "we'd've", "we've", "weren't", "what'll", "what're", "what's", "what've",
    "when's", "where'd", "where's", "where've", "who'd", "who'd've", "who'll", "who's", "who've", "why'll",
    "why're", "why's", "won't", "would've", "wouldn't", "wouldn't've", "y'all", "y'all'll", "y'all'd've",
    "you'd", "you'd've", "you'll", "you're", "you've"
)
# fmt: on


def _spellings_without_apostrophes(word: str) -> list[str]:
    """How annotators typed `word`: no apostrophe if it has one, else all but one of its apostrophes."""
    positions = [i for i, char in enumerate(word) if char == "'"]
    if len(positions) == 1:
        return [word.replace("'", "")]
    return [word[:i] + word[i + 1 :] for i in positions]


_CONTRACTIONS = {
    spelling: word for word in _CONTRACTED for spelling in _spellings_without_apostrophes(word)
} | {"somebody'd": "somebodyd"}  # the official table maps this one backwards; kept for identical scores
_PERIOD = re.compile(r"\.(?!\d)")  # a full stop, unless it is a decimal point
_PERIODS_REMOVED = 32  # the official scorer passes re.UNICODE (= 32) where re.sub expects its count
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")


def strip_punctuation(text: str) -> str:
    """The official punctuation rule: delete marks next to a space (or any, if the text has `1,000`), else space them."""
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        beside_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if beside_space or delete_all else " ")
    return _PERIOD.sub("", out, count=_PERIODS_REMOVED)


def _digits_articles_contractions(text: str) -> str:
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def _normalize(answer: str) -> str:
    """Punctuation, then lower case, digits, articles and contractions: the scorer's rules without trimming."""
    return _digits_articles_contractions(strip_punctuation(answer))


def normalize_answer(answer: str) -> str:
    """The official normalisation of a predicted answer: whitespace, punctuation, digits, articles, contractions."""
    return _normalize(answer.replace("\n", " ").replace("\t", " ").strip())


VQAScoring = Literal["official", "lenient"]
SCORINGS: tuple[VQAScoring, ...] = ("official", "lenient")


def _check_scoring(scoring: str) -> None:
    if scoring not in SCORINGS:
        raise ValueError(
            f"scoring={scoring!r}; use 'official' (the VQA team's scorer, the paper's numbers) or 'lenient' "
            "(human answers normalised like the prediction, for home-made annotations)"
        )


def _human_answers(humans: Sequence[str], scoring: VQAScoring) -> list[str]:
    """The human answers as the scorer compares them: see the module docstring for the two rules."""
    if scoring == "lenient":
        return [normalize_answer(human) for human in humans]
    if len(set(humans)) > 1:
        return [strip_punctuation(human) for human in humans]
    return list(humans)


def vqa_scores(
    predictions: Sequence[str], answers: Sequence[Sequence[str]], scoring: VQAScoring = "official"
) -> list[float]:
    """Per-question VQA accuracy in [0, 1]: min(#other humans agreeing / 3, 1), averaged over leaving each out.

    Each entry of `answers` lists one answer per annotator (ten in VQAv2), as the official files do.
    """
    _check_scoring(scoring)
    check_lengths(predictions, answers, "answer lists")
    empty = [i for i, humans in enumerate(answers) if isinstance(humans, str) or not humans]
    if empty:
        raise ValueError(f"answers{empty[:10]} must be non-empty lists of human answers (strings)")
    scores = []
    for prediction, humans in zip(predictions, answers, strict=True):
        predicted = normalize_answer(prediction)
        compared = _human_answers(humans, scoring)
        matches = sum(human == predicted for human in compared)
        # Leaving out annotator j leaves matches - [j matched] agreeing humans among the others.
        subsets = [min(1.0, (matches - (human == predicted)) / 3) for human in compared]
        scores.append(sum(subsets) / len(subsets))
    return scores


def vqa_accuracy(
    predictions: Sequence[str], answers: Sequence[Sequence[str]], scoring: VQAScoring = "official"
) -> float:
    """The standard VQA accuracy in percent (VQAv2, OK-VQA); `scoring` as in `vqa_scores`."""
    scores = vqa_scores(predictions, answers, scoring)
    return 100 * sum(scores) / len(scores)


def exact_match_scores(
    predictions: Sequence[str], answers: Sequence[str], scoring: VQAScoring = "official"
) -> list[float]:
    """GQA's metric per question: 1 if the normalised prediction equals the reference answer.

    Officially (LAVIS's GQA task) only the prediction is normalised, untrimmed; "lenient" normalises both.
    """
    _check_scoring(scoring)
    check_lengths(predictions, answers, "answers")
    if scoring == "lenient":
        return [
            float(normalize_answer(p) == normalize_answer(a))
            for p, a in zip(predictions, answers, strict=True)
        ]
    return [float(_normalize(p) == a) for p, a in zip(predictions, answers, strict=True)]


def exact_match_accuracy(
    predictions: Sequence[str], answers: Sequence[str], scoring: VQAScoring = "official"
) -> float:
    """GQA accuracy in percent, as LAVIS's GQA task scores generated answers."""
    scores = exact_match_scores(predictions, answers, scoring)
    return 100 * sum(scores) / len(scores)

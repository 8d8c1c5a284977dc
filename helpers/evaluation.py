"""The paper's metrics, written once: VQA accuracy, GQA exact match, caption metrics and recall@K.

Every metric is on the paper's scale (percent; CIDEr and SPICE times 100), so a number here sits next to
a number from the paper's tables without conversion.

VQA accuracy follows the official VQA scorer as LAVIS ships it (`lavis/common/vqa_tools/vqa_eval.py`),
which produced BLIP-2's validation numbers. One deliberate difference: the human answers get the same
normalisation as the prediction. The official annotation files are already normalised, so their scores
are identical (tested against LAVIS's scorer); home-made annotations such as "two" are not marked wrong.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

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
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")


def strip_punctuation(text: str) -> str:
    """The official punctuation rule: delete marks next to a space (or any, if the text has `1,000`), else space them."""
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        beside_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if beside_space or delete_all else " ")
    return _PERIOD.sub("", out)


def _digits_articles_contractions(text: str) -> str:
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def normalize_answer(answer: str) -> str:
    """The official VQA answer normalisation: punctuation, number words to digits, articles, contractions."""
    cleaned = answer.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles_contractions(strip_punctuation(cleaned))


def _check_lengths(predictions: Sequence[object], references: Sequence[object], what: str) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions for {len(references)} {what}; give exactly one prediction per item"
        )
    if not predictions:
        raise ValueError(f"no predictions and no {what}: there is nothing to score")


def vqa_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> list[float]:
    """Per-question VQA accuracy in [0, 1]: min(#humans agreeing / 3, 1), averaged over leave-one-out subsets."""
    _check_lengths(predictions, answers, "answer lists")
    empty = [i for i, humans in enumerate(answers) if isinstance(humans, str) or not humans]
    if empty:
        raise ValueError(f"answers{empty[:10]} must be non-empty lists of human answers (strings)")
    scores = []
    for prediction, humans in zip(predictions, answers, strict=True):
        predicted = normalize_answer(prediction)
        humans = [normalize_answer(human) for human in humans]
        matches = sum(human == predicted for human in humans)
        # Leaving out annotator j leaves matches - [j matched] agreeing humans among the others.
        subsets = [min(1.0, (matches - (human == predicted)) / 3) for human in humans]
        scores.append(sum(subsets) / len(subsets))
    return scores


def vqa_accuracy(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
    """The standard VQA accuracy in percent (VQAv2, OK-VQA), as the official scorer computes it."""
    scores = vqa_scores(predictions, answers)
    return 100 * sum(scores) / len(scores)


def exact_match_scores(predictions: Sequence[str], answers: Sequence[str]) -> list[float]:
    """GQA's metric per question: 1 if the prediction equals the single reference answer, both normalised."""
    _check_lengths(predictions, answers, "answers")
    pairs = zip(predictions, answers, strict=True)
    return [float(normalize_answer(p) == normalize_answer(a)) for p, a in pairs]


def exact_match_accuracy(predictions: Sequence[str], answers: Sequence[str]) -> float:
    """GQA accuracy in percent, as LAVIS's GQA task scores generated answers."""
    scores = exact_match_scores(predictions, answers)
    return 100 * sum(scores) / len(scores)


# ---- caption metrics (pycocoevalcap) ---------------------------------------------------------------

SPICE_MISSING = (
    "SPICE not computed: it needs the Stanford CoreNLP 3.6.0 jars, which pycocoevalcap downloads on first "
    "use (about 1 GB). On Colab run helpers.evaluation.download_spice_models() once; offline, SPICE is skipped."
)


def _pycocoevalcap_dir() -> Path:
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "pycocoevalcap is not installed; `pip install pycocoevalcap` (the kit depends on it)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def spice_available() -> bool:
    """Whether SPICE can run here: java plus the CoreNLP jars pycocoevalcap's SPICE expects in spice/lib."""
    lib = _pycocoevalcap_dir() / "spice" / "lib"
    return shutil.which("java") is not None and (lib / "stanford-corenlp-3.6.0-models.jar").exists()


def download_spice_models() -> None:
    """Fetch the CoreNLP jars SPICE needs (network; meant for Colab, never called by tests)."""
    from pycocoevalcap.spice.get_stanford_models import get_stanford_models

    get_stanford_models()


@dataclass
class CaptionScores:
    """Corpus metrics (paper scale) and per-image scores, which the bootstrap resamples.

    `per_image` holds CIDEr (and SPICE) per image, whose mean is the corpus score; BLEU-4 is a corpus
    statistic, so `tokenized` keeps what is needed to recompute it on a resample.
    """

    metrics: dict[str, float]
    per_image: dict[str, list[float]]
    tokenized_predictions: dict[int, list[str]] = field(repr=False)
    tokenized_references: dict[int, list[str]] = field(repr=False)
    notes: list[str] = field(default_factory=list)


def _ptb_tokenize(predictions: Sequence[str], references: Sequence[Sequence[str]]):
    """PTB-tokenise (lower-case, punctuation dropped) with the COCO toolkit, in one java call."""
    if shutil.which("java") is None:
        raise RuntimeError(
            "caption metrics need java for the PTB tokenizer: `apt-get install default-jre` (on Colab it is present)"
        )
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # References go last: the tokenizer drops trailing blank lines, and only predictions may be empty.
    keyed = {("p", i): [{"caption": text or " "}] for i, text in enumerate(predictions)}
    keyed |= {("r", i): [{"caption": ref} for ref in refs] for i, refs in enumerate(references)}
    tokens = PTBTokenizer().tokenize(keyed)
    predicted = {i: tokens.get(("p", i), [""]) for i in range(len(predictions))}
    referenced = {i: tokens[("r", i)] for i in range(len(references))}
    return predicted, referenced


def bleu4(tokenized_predictions: dict[int, list[str]], tokenized_references: dict[int, list[str]]) -> float:
    """Corpus BLEU-4 (times 100) with the COCO toolkit's 'closest' reference length."""
    from pycocoevalcap.bleu.bleu import Bleu

    score, _ = Bleu(4).compute_score(tokenized_references, tokenized_predictions, verbose=0)
    return 100 * score[3]


def caption_scores(
    predictions: Sequence[str], references: Sequence[Sequence[str]], spice: bool | None = None
) -> CaptionScores:
    """BLEU-4, CIDEr and SPICE through pycocoevalcap; spice=None computes SPICE only where it is available."""
    _check_lengths(predictions, references, "reference lists")
    bad = [
        i for i, refs in enumerate(references) if isinstance(refs, str) or not [r for r in refs if r.strip()]
    ]
    if bad:
        raise ValueError(f"references{bad[:10]} must be non-empty lists of reference captions")
    if spice and not spice_available():
        raise RuntimeError(SPICE_MISSING)
    predicted, referenced = _ptb_tokenize(predictions, references)
    from pycocoevalcap.cider.cider import Cider

    cider, cider_each = Cider().compute_score(referenced, predicted)
    result = CaptionScores(
        metrics={"BLEU-4": bleu4(predicted, referenced), "CIDEr": 100 * float(cider)},
        per_image={"CIDEr": [100 * float(s) for s in cider_each]},
        tokenized_predictions=predicted,
        tokenized_references=referenced,
    )
    run_spice = spice_available() if spice is None else spice
    if run_spice:
        from pycocoevalcap.spice.spice import Spice

        _, spice_each = Spice().compute_score(referenced, predicted)
        each = [100 * float(item["All"]["f"]) for item in spice_each]
        result.metrics["SPICE"] = sum(each) / len(each)
        result.per_image["SPICE"] = each
    else:
        result.notes.append(SPICE_MISSING)
    return result


def caption_metrics(
    predictions: Sequence[str], references: Sequence[Sequence[str]], spice: bool | None = None
) -> dict[str, float]:
    """BLEU-4, CIDEr (and SPICE where available) on the paper's scale; a skipped SPICE is printed, not hidden."""
    scores = caption_scores(predictions, references, spice)
    for note in scores.notes:
        print(note)
    return scores.metrics


# ---- retrieval -------------------------------------------------------------------------------------


def retrieval_ranks(similarity: torch.Tensor, positives: Sequence[Collection[int]]) -> torch.Tensor:
    """0-based rank of each query's best-ranked positive candidate (ties keep the lower candidate index)."""
    if similarity.ndim != 2:
        raise ValueError(
            f"similarity has shape {tuple(similarity.shape)}; expected (num_queries, num_candidates)"
        )
    if len(positives) != similarity.shape[0]:
        raise ValueError(
            f"{len(positives)} positive sets for {similarity.shape[0]} queries; give one per query"
        )
    candidates = similarity.shape[1]
    bad = [i for i, pos in enumerate(positives) if not pos or any(not 0 <= p < candidates for p in pos)]
    if bad:
        raise ValueError(
            f"positives{bad[:10]} are empty or outside 0..{candidates - 1}; each query needs a true candidate"
        )
    order = torch.sort(similarity.float(), dim=1, descending=True, stable=True).indices
    is_positive = torch.zeros_like(order, dtype=torch.bool)
    for row, pos in enumerate(positives):
        is_positive[row] = torch.isin(order[row], torch.tensor(sorted(pos), device=order.device))
    return is_positive.int().argmax(dim=1).cpu()


def recall_at_k(
    similarity: torch.Tensor, positives: Sequence[Collection[int]], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """R@K in percent: how often a true candidate is among a query's top K (keys 'R@1', 'R@5', ...)."""
    ranks = retrieval_ranks(similarity, positives)
    return {f"R@{k}": 100 * (ranks < k).float().mean().item() for k in ks}

"""Caption metrics (pycocoevalcap BLEU-4, CIDEr, SPICE) and retrieval recall@K, on the paper's scale.

Every metric is on the paper's scale (percent; CIDEr and SPICE times 100), so a number here sits next to
a number from the paper's tables without conversion.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch


def check_lengths(predictions: Sequence[object], references: Sequence[object], what: str) -> None:
    """One prediction per reference item, and at least one: the scorers' shared input check."""
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions for {len(references)} {what}; give exactly one prediction per item"
        )
    if not predictions:
        raise ValueError(f"no predictions and no {what}: there is nothing to score")


# ---- caption metrics (pycocoevalcap) ---------------------------------------------------------------

SPICE_MISSING = (
    "SPICE not computed: it needs the Stanford CoreNLP 3.6.0 jars, which pycocoevalcap downloads on first\n"
    "use (about 1 GB). On Colab run helpers.evaluation.metrics.download_spice_models() once; offline, SPICE\n"
    "is skipped."
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


@contextmanager
def _without_java_speed_line() -> Iterator[None]:
    """Drop the "PTBTokenizer tokenized N tokens at X tokens per second." line the tokenizer's java prints.

    The java process writes it to the process's stderr (file descriptor 2, inherited), so notebooks show it as
    a red stderr block after every evaluation; anything else java writes there is passed on to `sys.stderr`.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines()
            kept = [line for line in lines if not line.startswith("PTBTokenizer tokenized")]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


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
    with _without_java_speed_line():
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
    check_lengths(predictions, references, "reference lists")
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

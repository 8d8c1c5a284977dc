"""Evaluation pipelines with the paper's protocols, bootstrap intervals, and the table against the paper.

Protocols (section 4 of the paper, and LAVIS's BLIP-2 eval configs):
- zero-shot VQA: "Question: {} Answer:" for OPT, "Question: {} Short answer:" for Flan-T5 (the backend
  picks by model), beam search with 5 beams, length penalty -1 (shorter answers), at most 10 tokens;
- captioning: beam search with 5 beams, 8 to 30 tokens;
- retrieval: ITC similarity over every candidate, then the ITM head re-ranks the top k=128, both directions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.backends.base import Blip2Backend
from helpers.datasets import CaptionExample, RetrievalSet, VQAExample, write_json_atomic
from helpers.evaluation import (
    bleu4,
    caption_scores,
    exact_match_scores,
    retrieval_ranks,
    vqa_scores,
)
from helpers.generation import GenerationSettings
from helpers.images import load_images
from helpers.paper import PAPER, paper_model, paper_number

VQA_SETTINGS = GenerationSettings(num_beams=5, length_penalty=-1.0, max_new_tokens=10, min_new_tokens=1)
"""Zero-shot VQA decoding: the paper's beam 5 and length penalty -1; LAVIS's max_len 10, min_len 1."""

CAPTION_SETTINGS = GenerationSettings(num_beams=5, max_new_tokens=30, min_new_tokens=8)
"""Captioning decoding, as LAVIS's COCO caption eval configs: beam 5, 8 to 30 tokens."""

RETRIEVAL_TOP_K = 128
"""Candidates ITC passes to the ITM re-ranker (LAVIS's k_test)."""

RECALL_KS = (1, 5, 10)


@dataclass(frozen=True)
class Result:
    """One metric of one run: value on the paper's scale, a bootstrap interval, and the sample size."""

    kind: str  # "generation" or "retrieval": which checkpoint produced it
    dataset: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n: int


def bootstrap_ci(
    n: int,
    statistic: Callable[[np.ndarray], float],
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap: recompute `statistic` on `resamples` index resamples of the n items."""
    if n < 1:
        raise ValueError("bootstrap needs at least one item")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(resamples)])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _mean_result(kind: str, dataset: str, metric: str, scores: Sequence[float], resamples: int) -> Result:
    values = np.asarray(scores, dtype=float)
    low, high = bootstrap_ci(len(values), lambda idx: float(values[idx].mean()), resamples)
    return Result(kind, dataset, metric, float(values.mean()), low, high, len(values))


def _batches(count: int, size: int, desc: str):
    return tqdm(range(0, count, size), desc=desc, total=math.ceil(count / size))


def evaluate_vqa(
    model: Blip2Backend,
    examples: Sequence[VQAExample],
    dataset: str,
    *,
    exact_match: bool = False,
    settings: GenerationSettings = VQA_SETTINGS,
    batch_size: int = 8,
    resamples: int = 1000,
) -> tuple[Result, list[str]]:
    """Zero-shot VQA accuracy (exact match for GQA) and the predicted answers."""
    predictions: list[str] = []
    for start in _batches(len(examples), batch_size, dataset):
        batch = examples[start : start + batch_size]
        images = load_images([example.image for example in batch])
        predictions += model.ask(images, [example.question for example in batch], settings=settings)
    if exact_match:
        scores = exact_match_scores(predictions, [example.answers[0] for example in examples])
    else:
        scores = vqa_scores(predictions, [example.answers for example in examples])
    return _mean_result("generation", dataset, "accuracy", [100 * s for s in scores], resamples), predictions


def evaluate_captions(
    model: Blip2Backend,
    examples: Sequence[CaptionExample],
    dataset: str,
    *,
    settings: GenerationSettings = CAPTION_SETTINGS,
    batch_size: int = 8,
    resamples: int = 200,
) -> tuple[list[Result], list[str]]:
    """BLEU-4, CIDEr (and SPICE where available) with bootstrap intervals, and the captions."""
    captions: list[str] = []
    for start in _batches(len(examples), batch_size, dataset):
        captions += model.caption(
            load_images([e.image for e in examples[start : start + batch_size]]), settings
        )
    scores = caption_scores(captions, [example.references for example in examples])
    for note in scores.notes:
        print(note)
    predicted, referenced = scores.tokenized_predictions, scores.tokenized_references

    def resampled_bleu(indices: np.ndarray) -> float:
        # Bootstrap draws repeat images; give each draw its own key so BLEU counts it each time.
        return bleu4(
            {k: predicted[int(i)] for k, i in enumerate(indices)},
            {k: referenced[int(i)] for k, i in enumerate(indices)},
        )

    low, high = bootstrap_ci(len(examples), resampled_bleu, resamples)
    results = [Result("generation", dataset, "BLEU-4", scores.metrics["BLEU-4"], low, high, len(examples))]
    results += [
        _mean_result("generation", dataset, metric, each, resamples)
        for metric, each in scores.per_image.items()
    ]
    return results, captions


def _similarity(model: Blip2Backend, images: list, texts: list[str], batch_size: int) -> torch.Tensor:
    """ITC: the best query's cosine with each text's [CLS] projection, (num_images, num_texts)."""
    image_proj = torch.cat(
        [
            model.image_features(images[s : s + batch_size]).image_embeds_proj.float()
            for s in range(0, len(images), batch_size)
        ]
    )
    text_proj = torch.cat(
        [
            model.text_features(texts[s : s + batch_size]).text_embeds_proj[:, 0, :].float()
            for s in range(0, len(texts), batch_size)
        ]
    )
    return torch.einsum("iqd,td->itq", image_proj.cpu(), text_proj.cpu()).max(dim=-1).values


def _rerank(
    itc: torch.Tensor, top_k: int, itm: Callable[[list[tuple[int, int]]], torch.Tensor], desc: str
) -> torch.Tensor:
    """Scores for ranking: ITM probability for each row's ITC top k, ITC minus 10 (always below) elsewhere."""
    scores = itc - 10.0
    k = min(top_k, itc.shape[1])
    if k < 1:
        return scores
    for row in tqdm(range(itc.shape[0]), desc=desc):
        head = torch.topk(itc[row], k).indices.tolist()
        scores[row, head] = itm([(row, column) for column in head]).cpu()
    return scores


def evaluate_retrieval(
    model: Blip2Backend,
    data: RetrievalSet,
    dataset: str,
    *,
    top_k: int = RETRIEVAL_TOP_K,
    batch_size: int = 32,
    resamples: int = 1000,
) -> list[Result]:
    """Image-to-text (TR@K) and text-to-image (IR@K) recall with ITC top-k then ITM re-ranking."""
    images, texts = load_images(list(data.images)), list(data.texts)
    itc = _similarity(model, images, texts, batch_size)

    def itm(pairs: list[tuple[int, int]], swap: bool) -> torch.Tensor:
        pairs = [(b, a) for a, b in pairs] if swap else pairs
        chunks = [pairs[s : s + batch_size] for s in range(0, len(pairs), batch_size)]
        return torch.cat(
            [
                model.itm_probabilities([images[i] for i, _ in chunk], [texts[t] for _, t in chunk])
                for chunk in chunks
            ]
        )

    i2t = _rerank(itc, top_k, lambda pairs: itm(pairs, swap=False), f"{dataset} image→text")
    t2i = _rerank(itc.T.contiguous(), top_k, lambda pairs: itm(pairs, swap=True), f"{dataset} text→image")
    results = []
    for prefix, scores, positives in (
        ("TR", i2t, data.image_texts),
        ("IR", t2i, [{image} for image in data.text_image]),
    ):
        ranks = retrieval_ranks(scores, positives).numpy()
        for k in RECALL_KS:
            results.append(
                _mean_result("retrieval", dataset, f"{prefix}@{k}", 100.0 * (ranks < k), resamples)
            )
    return results


@dataclass(frozen=True)
class ComparisonRow:
    """One line of the table: this run against the paper's number for the matching (or stand-in) model."""

    dataset: str
    metric: str
    this_run: float
    ci_low: float
    ci_high: float
    n: int
    backend: str
    checkpoint: str
    paper_model: str
    same_model: bool
    paper: float | None
    difference: float | None
    table: str | None


def compare_with_paper(
    results: Sequence[Result], model: Blip2Backend, paper_datasets: dict[str, str]
) -> list[ComparisonRow]:
    """Pair each result with the paper's number; `paper_datasets` maps a run's dataset to the paper's name."""
    rows = []
    for result in results:
        checkpoint = model.caption_model if result.kind == "generation" else model.retrieval_model
        reference, same = paper_model(checkpoint, result.kind)
        number = paper_number(reference, paper_datasets.get(result.dataset, result.dataset), result.metric)
        rows.append(
            ComparisonRow(
                dataset=result.dataset,
                metric=result.metric,
                this_run=round(result.value, 2),
                ci_low=round(result.ci_low, 2),
                ci_high=round(result.ci_high, 2),
                n=result.n,
                backend=model.backend_name,
                checkpoint=checkpoint,
                paper_model=reference,
                same_model=same,
                paper=None if number is None else number.value,
                difference=None if number is None else round(result.value - number.value, 2),
                table=None if number is None else number.table,
            )
        )
    return rows


def format_table(rows: Sequence[ComparisonRow]) -> str:
    """A plain-text table: paper number, this run with its 95% interval and N, and the difference."""
    header = f"{'dataset':<36}{'metric':<10}{'paper':>8}{'this run':>10}{'95% CI':>18}{'N':>6}{'diff':>9}  paper model"
    lines = [header, "-" * len(header)]
    for row in rows:
        paper = "-" if row.paper is None else f"{row.paper:.1f}"
        diff = "-" if row.difference is None else f"{row.difference:+.1f}"
        stand_in = "" if row.same_model else " (stand-in: not the model that ran)"
        lines.append(
            f"{row.dataset:<36}{row.metric:<10}{paper:>8}{row.this_run:>10.1f}"
            f"{f'[{row.ci_low:.1f}, {row.ci_high:.1f}]':>18}{row.n:>6}{diff:>9}  {row.paper_model}{stand_in}"
        )
    return "\n".join(lines)


def save_comparison(rows: Sequence[ComparisonRow], path: str | Path, **run: object) -> Path:
    """Save the table as JSON (atomically), with the run's settings and the paper it compares with."""
    return write_json_atomic({"paper": PAPER, "run": run, "rows": [asdict(row) for row in rows]}, path)


def load_comparison(path: str | Path) -> list[ComparisonRow]:
    """Read a table saved by `save_comparison`."""
    return [ComparisonRow(**row) for row in json.loads(Path(path).read_text())["rows"]]

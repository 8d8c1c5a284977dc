"""Evaluation pipelines with the paper's protocols, and bootstrap intervals for each metric.

Protocols (section 4 of the paper, and LAVIS's BLIP-2 eval configs):
- zero-shot VQA: "Question: {} Answer:" for OPT, "Question: {} Short answer:" for Flan-T5 (the backend
  picks by model), beam search with 5 beams, length penalty -1 (shorter answers), at most 10 tokens;
- captioning: beam search with 5 beams, at most 30 new tokens, LAVIS's min_len 8 counted its way (prompt
  tokens included), and "a photo of" before the caption for the COCO-fine-tuned captioners;
- retrieval: ITC similarity over every candidate, then the ITM head re-ranks the top k=128, both directions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.backends.base import Blip2Backend
from helpers.environment import live_progress
from helpers.evaluation.datasets import CaptionExample, RetrievalSet, VQAExample
from helpers.evaluation.metrics import bleu4, caption_scores, retrieval_ranks
from helpers.evaluation.vqa_scoring import VQAScoring, exact_match_scores, vqa_scores
from helpers.generation import GenerationSettings
from helpers.images import load_images

VQA_SETTINGS = GenerationSettings(num_beams=5, length_penalty=-1.0, max_new_tokens=10, min_new_tokens=1)
"""Zero-shot VQA decoding: the paper's beam 5 and length penalty -1; LAVIS's max_len 10, min_len 1.

LAVIS 1.0.2 hands min_len to transformers as `min_length`, which counts the prompt, so it asks for no new
token at all; one new token here only rules out the empty answer."""

CAPTION_MIN_LENGTH = 8
"""LAVIS's caption eval `min_len`, which LAVIS 1.0.2 counts with the tokens already in the sequence."""

CAPTION_SETTINGS = GenerationSettings(num_beams=5, max_new_tokens=30, min_new_tokens=CAPTION_MIN_LENGTH)
"""LAVIS's COCO caption eval configs as numbers: beam 5, max_len 30 new tokens, min_len 8.

`caption_settings(model)` turns min_len into new tokens the way LAVIS 1.0.2 counts it; the evaluation
uses that. These settings, taken literally (8 *new* tokens), ask for one to four tokens more than LAVIS."""


def describe_settings(settings: GenerationSettings) -> str:
    """Decoding settings in one short line: what a learner needs to compare runs."""
    search = "sampling" if settings.use_nucleus_sampling else f"beam {settings.num_beams}"
    return (
        f"{search}, length penalty {settings.length_penalty:g}, {settings.min_new_tokens} to "
        f"{settings.max_new_tokens} new tokens"
    )


def lavis_min_new_tokens(model: Blip2Backend, prompt: str, min_length: int) -> int:
    """New tokens that LAVIS 1.0.2's `min_length` asks for: transformers counts the tokens already there.

    OPT's count includes its prompt with the BOS token ("" is 1 token, "a photo of" 4); Flan-T5's the
    decoder's start token. The visual prompt (query embeddings) is not counted.
    """
    prompt_lengths, _, _ = model._prompt_positions([prompt])
    already = prompt_lengths[0] if prompt_lengths else 1
    return max(min_length - already, 0)


def caption_settings(model: Blip2Backend, min_length: int = CAPTION_MIN_LENGTH) -> GenerationSettings:
    """LAVIS's caption decoding for this model and its caption prompt, min_len counted as LAVIS counts it."""
    return CAPTION_SETTINGS.replace(
        min_new_tokens=lavis_min_new_tokens(model, model.caption_prompt, min_length)
    )


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

    def __str__(self) -> str:
        return (
            f"{self.dataset}, {self.metric}: {self.value:.1f} "
            f"(95% CI [{self.ci_low:.1f}, {self.ci_high:.1f}], N={self.n})"
        )


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
    return tqdm(range(0, count, size), desc=desc, total=math.ceil(count / size), disable=not live_progress())


def evaluate_vqa(
    model: Blip2Backend,
    examples: Sequence[VQAExample],
    dataset: str,
    *,
    exact_match: bool = False,
    scoring: VQAScoring = "official",
    settings: GenerationSettings = VQA_SETTINGS,
    batch_size: int = 8,
    resamples: int = 1000,
) -> tuple[Result, list[str]]:
    """Zero-shot VQA accuracy (exact match for GQA) and the predicted answers.

    `scoring="official"` is the VQA team's scorer, the paper's metric; "lenient" (human answers normalised
    too, for home-made annotations) is reported as "accuracy (lenient)", which no paper number matches.
    """
    predictions: list[str] = []
    for start in _batches(len(examples), batch_size, dataset):
        batch = examples[start : start + batch_size]
        images = load_images([example.image for example in batch])
        predictions += model.ask(images, [example.question for example in batch], settings=settings)
    if exact_match:
        scores = exact_match_scores(predictions, [example.answers[0] for example in examples], scoring)
    else:
        scores = vqa_scores(predictions, [example.answers for example in examples], scoring)
    metric = "accuracy" if scoring == "official" else f"accuracy ({scoring})"
    return _mean_result("generation", dataset, metric, [100 * s for s in scores], resamples), predictions


def evaluate_captions(
    model: Blip2Backend,
    examples: Sequence[CaptionExample],
    dataset: str,
    *,
    settings: GenerationSettings | None = None,
    batch_size: int = 8,
    resamples: int = 200,
) -> tuple[list[Result], list[str]]:
    """BLEU-4, CIDEr (and SPICE where available) with bootstrap intervals, and the captions.

    Decoding defaults to `caption_settings(model)`; the model's `caption_prompt` ("a photo of" for the
    COCO-fine-tuned captioners) starts every caption.
    """
    settings = caption_settings(model) if settings is None else settings
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
    for row in tqdm(range(itc.shape[0]), desc=desc, disable=not live_progress()):
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

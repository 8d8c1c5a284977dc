"""Held-out quality of a toy-world BLIP-2, measured through the backend API so both backends are measured alike."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from helpers.backends.base import Blip2Backend
from helpers.evaluation.metrics import recall_at_k
from helpers.evaluation.vqa_scoring import vqa_accuracy
from helpers.generation import GREEDY, GenerationSettings
from helpers.loading import load_blip2
from helpers.offline import weights_dir
from helpers.toyworld.metrics import caption_attribute_f1
from helpers.toyworld.pipeline import CAPTION, RETRIEVAL
from helpers.toyworld.world import render, retrieval_set, scenes, split_questions

ABLATIONS = "ablations.json"
"""Held-out scores of the shipped run and its two ablations, written by `make toyworld` next to the weights."""

THRESHOLDS = {"caption_f1": 0.9, "vqa_accuracy": 0.85, "retrieval_r1": 0.9}
"""The quality the shipped weights must reach on the held-out split (issue 5)."""


@dataclass(frozen=True)
class EvalSize:
    """How much of the held-out split to score; `fast` is the tests' subset."""

    captions: int = 200
    questions_from: int = 100
    retrieval_queries: int = 100
    candidates: int = 100
    top_k: int = 16

    @classmethod
    def fast(cls) -> EvalSize:
        return cls(captions=40, questions_from=20, retrieval_queries=20)


def load_run(folder: str | Path | None = None, backend: str = "hf", verbose: bool = False) -> Blip2Backend:
    """Load a toy-world run's two checkpoints (caption/, retrieval/) with a backend, on the CPU in float32.

    The default folder holds the shipped weights (data/toyworld/), which the offline profile loads too.
    """
    folder = Path(folder) if folder is not None else weights_dir()
    for kind in (CAPTION, RETRIEVAL):
        if not (folder / kind / "config.json").is_file():
            raise FileNotFoundError(f"{folder / kind}: no checkpoint; train one with `make toyworld` first")
    return load_blip2(
        "offline",
        backend=backend,
        device="cpu",
        dtype="float32",
        model_id=str(folder / CAPTION),
        retrieval_id=str(folder / RETRIEVAL),
        verbose=verbose,
    )


def evaluate(
    model: Blip2Backend, seed: int = 0, size: EvalSize | None = None, settings: GenerationSettings = GREEDY
) -> dict[str, float]:
    """caption_f1, vqa_accuracy (VQA v2 accuracy, lenient: the toy answers are words like "two") and
    zero-shot image->text retrieval_r1, all in [0, 1]."""
    size = size or EvalSize()
    test = scenes(seed, "test", max(size.captions, size.questions_from))
    images = [render(scene) for scene in test]
    captions = model.caption(images[: size.captions], settings)
    pairs = split_questions(seed, "test", test[: size.questions_from])
    answers = model.ask([images[i] for i, _ in pairs], [qa.question for _, qa in pairs], settings=settings)
    return {
        "caption_f1": caption_attribute_f1(captions, test[: size.captions]),
        "vqa_accuracy": vqa_accuracy(answers, [qa.answers for _, qa in pairs], scoring="lenient") / 100,
        "retrieval_r1": retrieval_r1(model, seed, size),
    }


def retrieval_r1(model: Blip2Backend, seed: int, size: EvalSize) -> float:
    """R@1 of the paper's protocol (ITC over all candidates, ITM re-ranks the top k) over distinct captions."""
    candidates = retrieval_set(seed, "test", size.candidates)
    texts = [scene.caption() for scene in candidates]
    queries = candidates[: size.retrieval_queries]
    scores = torch.zeros(len(queries), len(texts))
    for row, scene in enumerate(queries):
        ranked = model.rank_texts(render(scene), texts, top_k=size.top_k)
        for position, entry in enumerate(ranked):
            scores[row, entry.index] = len(ranked) - position
    return recall_at_k(scores, [{row} for row in range(len(queries))], ks=(1,))["R@1"] / 100


SHORT_NAMES = {
    "caption_f1": "caption F1",
    "vqa_accuracy": "VQA",
    "retrieval_r1": "R@1",
    "stage2_loss_first_100": "LM loss first 100",
    "stage2_loss_last_100": "last 100",
}
"""Column headings of `ablation_table`, short enough for the table to fit 110 columns."""


def ablation_table(folder: str | Path | None = None) -> str:
    """The held-out scores of a run and its two ablations (ablations.json, written by `make toyworld`) as text."""
    path = (Path(folder) if folder is not None else weights_dir()) / ABLATIONS
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no ablation scores; `make toyworld` trains the runs and writes them"
        )
    rows = json.loads(path.read_text())["rows"]
    names = list(next(iter(rows.values())))
    headings = [SHORT_NAMES.get(name, name) for name in names]
    widths = [max(len(heading), 6) for heading in headings]
    width = max(len(name) for name in rows)
    lines = [f"{'run':<{width}}  " + "  ".join(f"{h:>{w}}" for h, w in zip(headings, widths, strict=True))]
    lines += [
        f"{run:<{width}}  "
        + "  ".join(f"{scores[name]:>{w}.3f}" for name, w in zip(names, widths, strict=True))
        for run, scores in rows.items()
    ]
    return "\n".join(lines)

"""Retrieval benchmark: the Q-Former's ITC + ITM ranking against ranking by the LM's log-likelihood.

Both rankers order the same 100 candidate texts for one image, on full-size architectures with random
weights (`helpers.full_size`), in one process on the CPU in fp32 (the kit's CPU precision; fp16 and bf16
matmuls are far slower on most CPUs):
- the kit's `rank_texts`: ITC over all texts, ITM re-ranks ITC's top k (blip2-itm-vit-g architecture);
- the method of existing BLIP-2 command-line utilities: each text scored by the average log-likelihood of
  its tokens under OPT-2.7B given the image (blip2-opt-2.7b architecture). Made as fast as it fairly can
  be: the image's visual prompt is computed once and texts go through the LM in batches. It runs on a
  subset of the texts and is extrapolated linearly (each text costs one LM forward pass).
Goal: the Q-Former ranking >= 20x faster. Also: ITC throughput with the image features cached (texts/s).
The two models are loaded one after the other, never together (OPT-2.7B alone takes about 15 GB in fp32).
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from helpers import benchmarking, full_size
from helpers.images import sample_image
from helpers.loading import BACKENDS, load_blip2

GOAL_SPEEDUP = 20.0
_SIZES = ("small", "large")
_COLORS = ("red", "green", "blue", "yellow", "white", "black")
_SUBJECTS = ("cat", "man", "woman", "rocket", "cup of coffee", "flag")
_PLACES = ("couch", "table", "launch pad", "grass")


def candidate_texts(count: int, seed: int = 0) -> list[str]:
    """Captions made of the offline tokenizers' words, so token counts are those of real captions."""
    rng = random.Random(seed)
    return [
        f"a photo of a {rng.choice(_SIZES)} {rng.choice(_COLORS)} {rng.choice(_SUBJECTS)} on a {rng.choice(_PLACES)}"
        for _ in range(count)
    ]


def timed(function: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def qformer_side(backend: str, texts: list[str], top_k: int, itc_texts: int, batch: int) -> dict:
    """rank_texts over the candidates, then ITC throughput with cached image features."""
    image = sample_image("cat")
    load_seconds, model = timed(
        lambda: load_blip2(
            backend=backend, device="cpu", model_id=str(full_size.checkpoint_path(full_size.RETRIEVAL))
        )
    )
    load_seconds += timed(lambda: model.retrieval)[0]  # loaded on first use
    model.rank_texts(image, texts[:2], top_k=1)  # warm-up: first-call allocations
    rank_seconds, _ranked = timed(lambda: model.rank_texts(image, texts, top_k=top_k))
    image_features = model.image_features([image])
    stream = candidate_texts(itc_texts, seed=1)

    def itc_all() -> torch.Tensor:
        scores = [
            model._itc(image_features, model.text_features(stream[i : i + batch]))
            for i in range(0, itc_texts, batch)
        ]
        return torch.cat(scores, dim=1)

    itc_seconds, scores = timed(itc_all)
    return {
        "load_seconds": load_seconds,
        "rank_seconds": rank_seconds,
        "itc_texts": int(scores.shape[1]),
        "itc_seconds": itc_seconds,
        "itc_texts_per_second": scores.shape[1] / itc_seconds,
    }


@torch.inference_mode()
def lm_scores(model, image, texts: list[str], batch: int) -> tuple[float, float, torch.Tensor]:
    """Average log-likelihood of each text's tokens given the image's visual prompt (HF model).

    Returns the seconds for the visual prompt (once per image), the seconds for the texts, and the scores.
    """
    hf = model.model
    tokenizer = model.processor.tokenizer

    def visual_prompt() -> torch.Tensor:
        pixels = model.processor.image_processor([image], return_tensors="pt")["pixel_values"].to(hf.dtype)
        vision = hf.vision_model(pixel_values=pixels).last_hidden_state
        queries = hf.qformer(query_embeds=hf.query_tokens, encoder_hidden_states=vision).last_hidden_state
        return hf.language_projection(queries)

    prompt_seconds, visual = timed(visual_prompt)
    embed = hf.language_model.get_input_embeddings()

    def score_all() -> torch.Tensor:
        scores = []
        for start in range(0, len(texts), batch):
            tokens = tokenizer(
                texts[start : start + batch], padding=True, padding_side="right", return_tensors="pt"
            )
            ids, mask = tokens["input_ids"], tokens["attention_mask"]
            rows, width = ids.shape[0], visual.shape[1]
            inputs = torch.cat([visual.expand(rows, -1, -1), embed(ids)], dim=1)
            full_mask = torch.cat([torch.ones(rows, width, dtype=mask.dtype), mask], dim=1)
            logits = hf.language_model(inputs_embeds=inputs, attention_mask=full_mask).logits
            # position width + t - 1 predicts token t; the first text token (BOS) is given, not scored
            predicted = F.log_softmax(logits[:, width:-1].float(), dim=-1)
            token_logp = predicted.gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]
            scores.append(token_logp.sum(dim=1) / mask[:, 1:].sum(dim=1))
        return torch.cat(scores)

    texts_seconds, scores = timed(score_all)
    return prompt_seconds, texts_seconds, scores


def lm_side(texts: list[str], measured: int, batch: int) -> dict:
    image = sample_image("cat")
    load_seconds, model = timed(
        lambda: load_blip2(
            backend="hf", device="cpu", model_id=str(full_size.checkpoint_path(full_size.GENERATION))
        )
    )
    lm_scores(model, image, texts[:1], batch=1)  # warm-up
    prompt_seconds, texts_seconds, scores = lm_scores(model, image, texts[:measured], batch)
    per_text = texts_seconds / measured
    return {
        "load_seconds": load_seconds,
        "visual_prompt_seconds": prompt_seconds,
        "texts_measured": measured,
        "texts_measured_seconds": texts_seconds,
        "seconds_per_text": per_text,
        # Existing BLIP-2 CLIs replicate the image for every candidate, so each text pays for the visual prompt.
        "rank_seconds_extrapolated": (prompt_seconds + per_text) * len(texts),
        "rank_seconds_visual_prompt_once": prompt_seconds + per_text * len(texts),
        "extrapolated": measured < len(texts),
        "scores_finite": bool(torch.isfinite(scores).all()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument(
        "--top-k", type=int, default=16, help="ITM re-ranks ITC's top k (rank_texts' default)"
    )
    parser.add_argument(
        "--lm-texts", type=int, default=10, help="texts the LM scores; the rest is extrapolated"
    )
    parser.add_argument("--lm-batch", type=int, default=5)
    parser.add_argument("--itc-texts", type=int, default=10_000)
    parser.add_argument("--itc-batch", type=int, default=250)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    args = parser.parse_args()
    torch.manual_seed(0)
    texts = candidate_texts(args.candidates)
    full_size.checkpoint_path(full_size.RETRIEVAL)
    full_size.checkpoint_path(full_size.GENERATION)
    figures: dict = {}
    for backend in args.backends:  # one model at a time: each is freed before the next loads
        figures[backend] = qformer_side(backend, texts, args.top_k, args.itc_texts, args.itc_batch)
        gc.collect()
    figures["lm_log_likelihood"] = lm = lm_side(texts, min(args.lm_texts, len(texts)), args.lm_batch)
    goals = []
    for backend in args.backends:
        speedup = lm["rank_seconds_extrapolated"] / figures[backend]["rank_seconds"]
        figures[backend]["speedup_vs_lm"] = speedup
        figures[backend]["speedup_vs_lm_visual_prompt_once"] = (
            lm["rank_seconds_visual_prompt_once"] / figures[backend]["rank_seconds"]
        )
        goals.append(
            benchmarking.Goal(
                f"{backend}: rank {len(texts)} texts, speed-up vs LM", speedup, ">=", GOAL_SPEEDUP, "x"
            )
        )
        print(
            f"{backend}: rank_texts {figures[backend]['rank_seconds']:.1f} s vs LM {lm['rank_seconds_extrapolated']:.0f} s "
            f"-> {speedup:.1f}x (visual prompt once: {figures[backend]['speedup_vs_lm_visual_prompt_once']:.1f}x); "
            f"ITC {figures[backend]['itc_texts_per_second']:.0f} texts/s"
        )
    settings = {
        "candidates": len(texts),
        "top_k": args.top_k,
        "itc_batch": args.itc_batch,
        "lm_texts_measured": lm["texts_measured"],
        "lm_batch": args.lm_batch,
        "device": "cpu",
        "dtype": "float32 (the kit's CPU precision for both rankers)",
        "qformer_checkpoint": "blip2-itm-vit-g architecture (Blip2ForImageTextRetrieval), random fp16 weights",
        "lm_checkpoint": "blip2-opt-2.7b architecture, random fp16 weights, loaded by load_blip2 in fp32",
        "lm_method": "average log-likelihood of each text's tokens given the image's visual prompt",
        "extrapolation": (
            "LM time = (visual prompt + measured seconds per text) x candidates, as CLIs that replicate the "
            "image per candidate spend it; rank_seconds_visual_prompt_once is the cheaper variant"
        ),
        "image": "the bundled cat photo",
    }
    benchmarking.save(benchmarking.record("retrieval", settings, figures, goals), args.out)


if __name__ == "__main__":
    main()

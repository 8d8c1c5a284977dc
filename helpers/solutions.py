"""Worked solutions to the notebooks' exercises that have one exact answer, run by the tests so they cannot rot.

Each function is one exercise (`nb04_ex1` is notebook 04's exercise 1) and returns what the exercise asks
for; docs/workshop.md gives the reasoning, and the answers to the exercises that need a GPU or judgement.
Everything here runs offline on a CPU in seconds: parameter counts on the meta device, the memory plan, and
the offline miniature.
"""

from __future__ import annotations

import math

import torch
from transformers import Blip2ForConditionalGeneration

from helpers.evaluation.paper_results import ZERO_SHOT_VQA
from helpers.finetune.memory_plan import plan_memory
from helpers.memory import HEADROOM
from helpers.offline import weights_dir
from helpers.precision import choose_precision
from helpers.pretraining import freeze_for_stage
from helpers.toyworld import film
from helpers.variants import count_variant, variant_config


def _trainable(config) -> int:
    with torch.device("meta"):
        model = Blip2ForConditionalGeneration(config)
    freeze_for_stage(model, 2)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def nb00_ex2() -> float:
    """GiB blip2-opt-6.7b needs in fp16 with the kit's 20% headroom, as `helpers.memory.estimate` computes it
    from the hub config (here from the kit's copy of it)."""
    from helpers.workshop import fp16_weight_bytes

    return fp16_weight_bytes("blip2-opt-6.7b") * HEADROOM / 2**30


def nb00_ex3() -> dict[str, str]:
    """Two refused precisions: fp16 on a CPU, and fp16 for Flan-T5 anywhere. Returns each error message."""
    messages = {}
    for label, kwargs in {
        "fp16 on cpu": {"device": "cpu", "dtype": "float16"},
        "fp16 for Flan-T5": {"device": "auto", "dtype": "float16", "encoder_decoder_lm": True},
    }.items():
        try:
            choose_precision(**kwargs)
        except ValueError as error:
            messages[label] = str(error)
    return messages


def nb04_ex1(queries: int = 64) -> int:
    """Trainable parameters blip2-opt-2.7b gains with `queries` learned queries instead of 32: the queries
    themselves (768 wide each); nothing else depends on their number."""
    config = variant_config("blip2-opt-2.7b")
    base = _trainable(config)
    config.num_query_tokens = queries
    return _trainable(config) - base


def nb04_ex2() -> int:
    """Trainable parameters added by cross-attention in every Q-Former layer instead of every other one."""
    config = variant_config("blip2-opt-2.7b")
    base = _trainable(config)
    config.qformer_config.cross_attention_frequency = 1
    return _trainable(config) - base


def nb05_ex5() -> dict[str, int]:
    """What training OPT-2.7B too would cost: BLIP-2's trainable count, and that plus the whole LLM."""
    count = count_variant("blip2-opt-2.7b")
    return {"blip2": count.trainable, "with the LLM": count.trainable + count["LLM"]}


def nb05_ex7() -> dict[str, object]:
    """From the shipped film's stage 2: the frozen OPT's answers to the count questions before any training
    (step 0) with their share right, and the questions still wrong at the last frame, with their scenes."""
    stage2 = film.load_films(weights_dir())[2]
    questions = stage2.meta["questions"]
    counts = [index for index, (*_, kind) in enumerate(questions) if kind == "count"]
    first, last = stage2.arrays["answers"][0], stage2.arrays["answers"][-1]
    return {
        "count answers at step 0": sorted({str(first[index]) for index in counts}),
        "count right at step 0": int(stage2.arrays["answer_right"][0][counts].sum()),
        "count questions": len(counts),
        "wrong at the end": [
            (question, str(answer), stage2.meta["probe_captions"][scene])
            for (scene, question, _, _), answer, right in zip(
                questions, last, stage2.arrays["answer_right"][-1], strict=True
            )
            if not right
        ],
    }


def nb06_ex4(batch_size: int = 16) -> int:
    """The largest text length at which a batch of `batch_size` fits a T4 without gradient checkpointing."""
    best = 0
    for tokens in range(1, 1025):
        if not plan_memory("blip2-opt-2.7b", batch_size=batch_size, text_tokens=tokens).fits():
            break
        best = tokens
    return best


def nb07_ex1() -> float:
    """How much a bootstrap interval shrinks when the sample doubles: its width falls like 1/sqrt(N)."""
    return 1 / math.sqrt(2)


def nb08_ex4() -> float:
    """Flamingo80B's trainable parameters over those of the blip2-opt-2.7b checkpoint."""
    flamingo = next(m for m in ZERO_SHOT_VQA if m.name == "Flamingo80B")
    return float(flamingo.trainable_params[:-1]) * 1e9 / count_variant("blip2-opt-2.7b").trainable

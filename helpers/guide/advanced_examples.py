"""The guide's `blip2_advanced_examples`: pretraining stages, task demo, Q-Former anatomy, related work,
visual features. Each function prints what it found and returns it, so a notebook can also use the values."""

from __future__ import annotations

import textwrap
from typing import Any

import torch

from helpers.evaluation.paper_results import OVERVIEW, ZERO_SHOT_VQA
from helpers.guide.adapter import GuideModel, components
from helpers.images import ImageSource

__all__ = [
    "analyze_qformer_architecture",
    "compare_with_other_methods",
    "demonstrate_blip2_tasks",
    "explain_two_stage_pretraining",
    "extract_visual_features",
]

TWO_STAGES = {
    "Stage 1: vision-language representation learning": (
        "Q-Former + frozen image encoder, trained on image-text pairs with three objectives sharing one model:",
        "ITC (image-text contrastive): queries and text attend only to themselves (unimodal mask); the best "
        "query-text cosine is contrasted against in-batch negatives.",
        "ITM (image-text matching): bidirectional mask, queries see the text; a binary head on every query "
        "output, averaged, separates pairs from hard negatives mined by ITC similarity.",
        "ITG (image-grounded text generation): causal mask on the text, which sees all queries; [DEC] "
        "replaces [CLS], so the queries must carry everything the caption needs.",
    ),
    "Stage 2: vision-to-language generative learning": (
        "Q-Former outputs -> a fully connected layer -> the frozen LLM's input embedding size, prepended to the "
        "text as soft visual prompts.",
        "Decoder-only LLMs (OPT): language-modelling loss on the text. Encoder-decoder LLMs (Flan-T5): prefix "
        "LM loss, the text's first part goes to the encoder with the queries, the rest is the target.",
        "Only the Q-Former's query side, its 32 queries and the projection train (about 107M parameters with "
        "OPT-2.7B; stage 1 trains about 188M, with the text side and ITC/ITM heads that stage 2 drops); the "
        "image encoder and the LLM stay frozen.",
    ),
}


def explain_two_stage_pretraining() -> dict[str, tuple[str, ...]]:
    """Print BLIP-2's two pretraining stages (section 3.2-3.3 of the paper) and return the text."""
    for stage, points in TWO_STAGES.items():
        print(stage)
        for point in points:
            print(textwrap.fill(point, 100, initial_indent="  - ", subsequent_indent="    "))
    return TWO_STAGES


DEMO_QUESTIONS = ("What is shown in the photo?", "What colors dominate the image?")
DEMO_INSTRUCTION = "Describe in detail what is happening in the image."


def demonstrate_blip2_tasks(
    model: Any, image: ImageSource | torch.Tensor, vis_processors: Any = None
) -> dict:
    """Caption, answer two questions and follow an instruction on one image, with either kind of model."""
    guide = GuideModel(model, vis_processors)
    results = {
        "caption": guide.caption(image),
        "vqa": {question: guide.ask(image, question) for question in DEMO_QUESTIONS},
        "instruction": {DEMO_INSTRUCTION: guide.instruct(image, DEMO_INSTRUCTION)},
    }
    print(f"Caption: {results['caption']}")
    for question, answer in results["vqa"].items():
        print(f"Q: {question}  A: {answer}")
    print(f"Instruction: {DEMO_INSTRUCTION}")
    print(
        textwrap.fill(
            results["instruction"][DEMO_INSTRUCTION], 100, initial_indent="  -> ", subsequent_indent="     "
        )
    )
    return results


def _count(part: torch.nn.Module | torch.nn.Parameter) -> int:
    if isinstance(part, torch.nn.Parameter | torch.Tensor):
        return part.numel()
    return sum(parameter.numel() for parameter in part.parameters())


def _cross_attention_layers(qformer: torch.nn.Module) -> list[int]:
    layers = [module for module in qformer.modules() if hasattr(module, "has_cross_attention")]
    return [index for index, layer in enumerate(layers) if layer.has_cross_attention]


def analyze_qformer_architecture(model: Any) -> dict[str, Any]:
    """Parameter counts per part, the trainable share, the queries, and where the Q-Former cross-attends."""
    parts = components(GuideModel(model).module)
    counts = {part: _count(value) for part, value in parts.items()}
    trainable = counts["Q-Former"] + counts["learned queries"] + counts["language projection"]
    queries = parts["learned queries"]
    report = {
        "parameters": counts,
        "trainable (Q-Former + queries + projection)": trainable,
        "total": sum(counts.values()),
        "num_queries": int(queries.shape[1]),
        "query_dim": int(queries.shape[2]),
        "cross_attention_layers": _cross_attention_layers(parts["Q-Former"]),
    }
    for part, count in counts.items():
        print(f"{part:<22}{count:>16,}")
    print(f"{'trainable in BLIP-2':<22}{trainable:>16,}  ({100 * trainable / report['total']:.1f}% of all)")
    print(f"{report['num_queries']} learned queries of width {report['query_dim']}")
    print(
        f"cross-attention in Q-Former layers {report['cross_attention_layers']} "
        "(the paper inserts it every other block)"
    )
    return report


def compare_with_other_methods() -> list[dict[str, Any]]:
    """Print the paper's Tables 1 and 2: BLIP-2 against Flamingo and others, and the headline margins."""
    print("Table 2 - zero-shot VQA accuracy (%)")
    header = (
        f"{'method':<24}{'trainable':>10}{'total':>8}{'VQAv2 val':>11}{'test-dev':>10}{'OK-VQA':>8}{'GQA':>7}"
    )
    print(header)
    print("-" * len(header))

    def cell(value: float | None, width: int) -> str:
        return f"{'-' if value is None else value:>{width}}"

    rows = []
    for m in ZERO_SHOT_VQA:
        print(
            f"{m.name:<24}{m.trainable_params:>10}{m.total_params:>8}{cell(m.vqav2_val, 11)}"
            f"{cell(m.vqav2_testdev, 10)}{cell(m.okvqa_test, 8)}{cell(m.gqa_testdev, 7)}"
        )
        rows.append(vars(m) | {"name": m.name})
    best = max((m for m in ZERO_SHOT_VQA if m.name.startswith("BLIP-2")), key=lambda m: m.vqav2_testdev or 0)
    flamingo = next(m for m in ZERO_SHOT_VQA if m.name == "Flamingo80B")
    blip2 = next(row for row in OVERVIEW if row[0] == "BLIP-2")
    ratio = _params(next(row for row in OVERVIEW if row[0] == "Flamingo")[1]) / _params(blip2[1])
    print(
        f"\n{best.name} beats Flamingo80B on VQAv2 test-dev by {best.vqav2_testdev - flamingo.vqav2_testdev:.1f} "
        f"points ({best.vqav2_testdev} vs {flamingo.vqav2_testdev})\nwith {ratio:.0f}x fewer trainable parameters "
        f"({blip2[1]} vs {flamingo.trainable_params})."
    )
    print(
        "\nTable 1 - overview: method, trainable params, VQAv2 test-dev, NoCaps CIDEr/SPICE, Flickr30K TR@1/IR@1"
    )
    for name, params, vqa, nocaps, flickr in OVERVIEW:
        print(f"{name:<10}{params:>7}{cell(vqa, 8)}{(nocaps or '-'):>16}{(flickr or '-'):>14}")
    return rows


def _params(text: str) -> float:
    scale = {"M": 1e6, "B": 1e9}[text[-1]]
    return float(text[:-1]) * scale


def extract_visual_features(
    model: Any, image: ImageSource | torch.Tensor, vis_processors: Any = None
) -> dict:
    """The Q-Former's fixed-size visual summary of an image (and, for LAVIS, the ViT patches and LLM inputs)."""
    features = GuideModel(model, vis_processors).visual_features(image)
    for name, tensor in features.items():
        print(f"{name:<20}{tuple(tensor.shape)}")
    return features

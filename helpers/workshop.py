"""Planning a workshop: per notebook, what a free Colab T4 must download and hold, computed, not guessed.

Every figure comes from the real architectures the kit keeps (`helpers.variants`, built on the meta device)
and the fine-tuning memory plan (`helpers.finetune.memory_plan`). They are estimates until measured on a T4:
the download assumes the hub's fp32 safetensors (4 bytes a parameter, which is what
`Salesforce/blip2-opt-2.7b`'s 15.5 GB are), GPU memory is the fp16 weights (Q-Former in fp32, as
transformers keeps it) with the kit's 20% headroom, and the minutes assume a download speed and a run time
written down below. docs/workshop.md shows `workshop_table()`; a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from helpers.finetune.memory_plan import plan_memory
from helpers.memory import HEADROOM
from helpers.variants import STAGE1_VARIANT, meta_model

GENERATION = "blip2-opt-2.7b"
"""The t4 profile's generation checkpoint, Salesforce/blip2-opt-2.7b."""
RETRIEVAL = STAGE1_VARIANT
"""The t4 profile's retrieval checkpoint, Salesforce/blip2-itm-vit-g (the stage-1 Q-Former with its heads)."""
DOWNLOAD_BYTES_PER_SECOND = 100 * 10**6
"""Assumed hub-to-Colab speed (100 MB/s); Colab's is often higher, a workshop's shared network lower."""
LOAD_BYTES_PER_SECOND = 500 * 10**6
"""Assumed speed of reading the fp32 files from Colab's disk and casting them to fp16 on the GPU."""


@dataclass(frozen=True)
class NotebookPlan:
    """What one notebook loads on the `t4` profile (hf backend), how it trains if it does, and its run time."""

    name: str
    checkpoints: tuple[str, ...]
    run_minutes: float
    """Assumed minutes of computation once loaded (generation, training, evaluation), not measured."""
    training_batch: int | None = None
    """Batch size of the fine-tuning steps it runs on the generation model (None: inference only)."""


NOTEBOOKS = (
    NotebookPlan("00_setup", (GENERATION,), 1),
    NotebookPlan("01_captioning", (GENERATION,), 2),
    NotebookPlan("02_vqa_and_instructed_generation", (GENERATION,), 3),
    NotebookPlan("03_retrieval_and_features", (GENERATION, RETRIEVAL), 2),
    NotebookPlan("04_qformer_anatomy", (GENERATION,), 1),
    NotebookPlan("05_two_stage_pretraining", (RETRIEVAL, GENERATION), 4, training_batch=4),
    NotebookPlan("06_finetuning", (GENERATION,), 5, training_batch=2),
    NotebookPlan("07_paper_comparison", (GENERATION, RETRIEVAL), 15),
    NotebookPlan("08_colab_guide", (GENERATION,), 3),
)
"""Notebook 08's LAVIS route downloads LAVIS's own files (EVA ViT-g, facebook/opt-2.7b, the BLIP-2 .pth)
as well; counted here is the kit's route, the same weights in one download."""


@cache
def parameters(variant: str) -> int:
    return sum(parameter.numel() for parameter in meta_model(variant).parameters())


@cache
def fp16_weight_bytes(variant: str) -> int:
    """Weights on the GPU in fp16, the modules transformers keeps in fp32 (the Q-Former) at 4 bytes."""
    model = meta_model(variant)
    kept = tuple(model._keep_in_fp32_modules or ())
    return sum(p.numel() * (4 if name.startswith(kept) else 2) for name, p in model.named_parameters())


@dataclass(frozen=True)
class NotebookEstimate:
    name: str
    download_bytes: int
    peak_gpu_bytes: int
    t4_minutes: float


def estimate(plan: NotebookPlan) -> NotebookEstimate:
    """Download, peak GPU memory and minutes on a T4 for one notebook, from the sizes above."""
    download = sum(4 * parameters(variant) for variant in plan.checkpoints)
    held = sum(fp16_weight_bytes(variant) for variant in plan.checkpoints)
    peak = int(held * HEADROOM)
    if plan.training_batch is not None:
        step = plan_memory(GENERATION, batch_size=plan.training_batch, text_tokens=32).total
        others = held - fp16_weight_bytes(GENERATION)
        peak = max(peak, int((step + others) * HEADROOM))
    seconds = download / DOWNLOAD_BYTES_PER_SECOND + download / LOAD_BYTES_PER_SECOND + 60 * plan.run_minutes
    return NotebookEstimate(plan.name, download, peak, seconds / 60)


def workshop_table(cpu_seconds: dict[str, float]) -> str:
    """The per-notebook Markdown table: measured offline CPU seconds beside the T4 estimates."""
    rows = [
        "| notebook | offline, 2 CPU cores (s, measured) | T4 download (GB, est.) | T4 peak GPU memory (GiB, est.) "
        "| T4 minutes (est.) |",
        "|---|---|---|---|---|",
    ]
    for plan in NOTEBOOKS:
        result = estimate(plan)
        rows.append(
            f"| `{plan.name}` | {cpu_seconds[plan.name]:.0f} | {result.download_bytes / 1e9:.1f} "
            f"| {result.peak_gpu_bytes / 2**30:.1f} | {result.t4_minutes:.0f} |"
        )
    return "\n".join(rows)

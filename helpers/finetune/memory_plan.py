"""Will fine-tuning fit? The memory of a BLIP-2 fine-tuning step, computed from the real architecture.

Weights, gradients and AdamW states are exact: the variant is built on the meta device (no memory) and its
parameters counted with the same split the trainer uses (ViT and LLM frozen in fp16; the Q-Former side
trainable and held in fp32). Activations follow Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models", Sec. 4.1): a transformer layer keeps s·b·h·(34 + 5·a·s/h)
bytes for the backward pass in 16-bit precision, and only its 2·s·b·h-byte input with full activation
checkpointing. The frozen ViT stores nothing (no gradient flows into it); the frozen LLM must keep its
activations, because the gradient reaches the Q-Former *through* it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from helpers.environment import format_bytes
from helpers.memory import HEADROOM
from helpers.variants import meta_model, variant_config

T4_BYTES = 15360 * 2**20
"""The memory Colab's T4 reports (nvidia-smi: 15360 MiB)."""

_FROZEN_VISION = ("vision_model.embeddings.", "vision_model.encoder.")
_LLM = "language_model."


@dataclass(frozen=True)
class MemoryPlan:
    """The bytes one fine-tuning step needs, item by item."""

    variant: str
    batch_size: int
    sequence: int
    gradient_checkpointing: bool
    rows: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(size for _, size in self.rows)

    def fits(self, device_bytes: int = T4_BYTES) -> bool:
        """With the kit's usual headroom (CUDA context, allocator fragmentation)."""
        return self.total * HEADROOM <= device_bytes

    def __str__(self) -> str:
        width = max(len(label) for label, _ in self.rows)
        lines = [f"{label:<{width}}  {format_bytes(size):>10}" for label, size in self.rows]
        lines.append(f"{'total':<{width}}  {format_bytes(self.total):>10}")
        lines.append(
            f"{'with ' + format(HEADROOM - 1, '.0%') + ' headroom':<{width}}  {format_bytes(int(self.total * HEADROOM)):>10}"
            f"  (T4: {format_bytes(T4_BYTES)}, fits: {self.fits()})"
        )
        return "\n".join(lines)


@cache
def _parameter_split(variant: str) -> tuple[int, int, int]:
    """(frozen ViT, frozen LLM, trainable) parameter counts, the split `HFBackend.trainable_parts` makes."""
    frozen_vision = frozen_llm = trainable = 0
    for name, parameter in meta_model(variant).named_parameters():
        if name.startswith(_FROZEN_VISION):
            frozen_vision += parameter.numel()
        elif name.startswith(_LLM):
            frozen_llm += parameter.numel()
        else:
            trainable += parameter.numel()
    return frozen_vision, frozen_llm, trainable


def _layer_activations(sequence: int, batch: int, hidden: int, heads: int, checkpointing: bool) -> int:
    if checkpointing:
        return 2 * sequence * batch * hidden
    return int(sequence * batch * hidden * (34 + 5 * heads * sequence / hidden))


def plan_memory(
    variant: str = "blip2-opt-2.7b",
    *,
    batch_size: int = 16,
    text_tokens: int = 32,
    gradient_checkpointing: bool = False,
    train_vision: bool = False,
    image_size: int = 224,
) -> MemoryPlan:
    """Memory of one caption/VQA fine-tuning step with the ViT and LLM frozen in fp16 (fp16 autocast).

    `train_vision=True, image_size=364` is the paper's fine-tuning setting (LAVIS's caption_coco configs:
    `freeze_vit: False`, 364 px): the ViT's weights, gradients and AdamW moments join the trainable side
    in fp32, and its activations at (image_size / 14)² + 1 tokens are kept for the backward pass.
    """
    frozen_vision, frozen_llm, trainable = _parameter_split(variant)
    if train_vision:
        frozen_vision, trainable = 0, trainable + frozen_vision
    config = variant_config(variant)
    text = config.text_config
    sequence = config.num_query_tokens + text_tokens + 1  # queries, BOS, text
    llm = text.num_hidden_layers * _layer_activations(
        sequence, batch_size, text.hidden_size, text.num_attention_heads, gradient_checkpointing
    )
    qformer_config = config.qformer_config
    qformer = qformer_config.num_hidden_layers * _layer_activations(
        config.num_query_tokens,
        batch_size,
        qformer_config.hidden_size,
        qformer_config.num_attention_heads,
        gradient_checkpointing,
    )
    logits = batch_size * sequence * text.vocab_size * (2 + 4)  # fp16 logits and the loss's fp32 copy
    vision_config = config.vision_config
    vision = 0
    if train_vision:
        image_tokens = (image_size // vision_config.patch_size) ** 2 + 1
        vision = vision_config.num_hidden_layers * _layer_activations(
            image_tokens,
            batch_size,
            vision_config.hidden_size,
            vision_config.num_attention_heads,
            gradient_checkpointing,
        )
    side = "Q-Former side and ViT" if train_vision else "Q-Former side"
    rows = (
        ("ViT, frozen, fp16 weights", 2 * frozen_vision),
        ("LLM, frozen, fp16 weights", 2 * frozen_llm),
        (f"{side}, trainable, fp32 weights", 4 * trainable),
        ("gradients of the trainable weights, fp32", 4 * trainable),
        ("AdamW moments (2 per trainable weight), fp32", 8 * trainable),
        ("LLM activations kept for backward", llm),
        ("Q-Former activations kept for backward", qformer),
        (f"ViT activations kept for backward ({image_size} px)", vision),
        ("LM logits for the loss", logits),
    )
    rows = tuple(row for row in rows if row[1] or not row[0].startswith("ViT"))  # no ViT row that is 0
    return MemoryPlan(variant, batch_size, sequence, gradient_checkpointing, rows)


def largest_batch(
    variant: str = "blip2-opt-2.7b",
    *,
    text_tokens: int = 32,
    gradient_checkpointing: bool = False,
    device_bytes: int = T4_BYTES,
    limit: int = 1024,
) -> int:
    """The largest batch size whose step fits `device_bytes` (0 if not even one example fits)."""
    best = 0
    for batch in range(1, limit + 1):
        plan = plan_memory(
            variant, batch_size=batch, text_tokens=text_tokens, gradient_checkpointing=gradient_checkpointing
        )
        if not plan.fits(device_bytes):
            break
        best = batch
    return best

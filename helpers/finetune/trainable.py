"""Which parameters train: BLIP-2 fine-tunes the Q-Former side and keeps the ViT and the LLM frozen.

The paper also unfreezes the ViT for VQA and retrieval fine-tuning (`train_vision`); LoRA adapters on the
LLM (peft) are an option the paper does not use, for tasks where the frozen LLM's wording is the limit.
Trainable parameters are held in fp32 even when the model is loaded in fp16: fp16 weights cannot take
AdamW's small updates and GradScaler refuses fp16 gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from helpers.backends.base import Blip2Backend, TrainableParts


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the LLM's attention projections (peft picks the right modules for OPT and T5)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05


@dataclass
class Trainable:
    """The task's modules, the trainable parameters by name, and the LoRA wrapper when there is one."""

    parts: TrainableParts
    parameters: dict[str, torch.nn.Parameter]
    lora: PeftModel | None
    train_vision: bool

    def train_mode(self) -> None:
        """Dropout on where BLIP-2 has it; a frozen ViT stays in eval mode, as in LAVIS."""
        self.parts.root.train()
        if not self.train_vision:
            for module in self.parts.vision:
                module.eval()

    def eval_mode(self) -> None:
        self.parts.root.eval()

    def merge_lora(self) -> None:
        """Fold the adapters into the LLM's weights, so the saved model is plain HF layout for both backends."""
        if self.lora is not None:
            self.lora.merge_and_unload()
            self.lora = None


def prepare_trainable(
    backend: Blip2Backend,
    task: str,
    *,
    train_vision: bool = False,
    lora: LoraSettings | None = None,
    gradient_checkpointing: bool = False,
) -> Trainable:
    """Freeze what the task keeps fixed, add LoRA if asked, and hold the trainable parameters in fp32."""
    parts = backend.trainable_parts(task)
    frozen = [module for module in parts.vision if not train_vision]
    if parts.language_model is not None:
        frozen.append(parts.language_model)
    parts.root.requires_grad_(True)
    for module in frozen:
        module.requires_grad_(False)
    adapter = None
    if lora is not None:
        if parts.language_model is None:
            raise ValueError(
                f"LoRA adapts the language model, and the {task!r} task has none; drop the LoRA option"
            )
        config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout)
        adapter = get_peft_model(parts.language_model, config)  # injects the adapters in place
    parameters = {name: p for name, p in parts.root.named_parameters() if p.requires_grad}
    for parameter in parameters.values():
        parameter.data = parameter.data.float()
    if gradient_checkpointing:
        backend.enable_gradient_checkpointing(task)
    return Trainable(parts, parameters, adapter, train_vision)

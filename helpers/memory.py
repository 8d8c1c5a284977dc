"""Will it fit? A memory estimate from the config alone, checked before any weight is loaded.

Loading blip2-opt-6.7b on a free T4 otherwise runs for minutes and then dies with an opaque CUDA OOM.
Building the architecture on the meta device costs no memory and gives the exact parameter count.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch
from accelerate import init_empty_weights
from transformers import AutoConfig, Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval

from helpers.environment import format_bytes
from helpers.precision import Precision

HEADROOM = 1.2
"""Weights are not all: activations, the KV cache and CUDA's context need about 20% on top."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes the weights of a checkpoint take in a given dtype, and the free bytes on the device."""

    weight_bytes: int
    available_bytes: int

    @property
    def fits(self) -> bool:
        return self.weight_bytes * HEADROOM <= self.available_bytes


def weight_bytes(model_id: str, dtype: torch.dtype) -> int:
    """Exact weight bytes, counting the Q-Former and queries in fp32 as transformers keeps them."""
    config = AutoConfig.from_pretrained(model_id)
    retrieval = "Blip2ForImageTextRetrieval" in (config.architectures or [])  # e.g. blip2-itm-vit-g
    with init_empty_weights():
        model = (Blip2ForImageTextRetrieval if retrieval else Blip2ForConditionalGeneration)(config)
    model.tie_weights()  # from_pretrained ties the LM head to the embeddings; count that matrix once
    kept_fp32 = tuple(model._keep_in_fp32_modules or ())
    itemsize = torch.finfo(dtype).bits // 8
    return sum(
        parameter.numel() * (4 if name.startswith(kept_fp32) else itemsize)
        for name, parameter in model.named_parameters()
    )


def available_bytes(device: torch.device) -> int:
    """Free memory where the weights will live: GPU memory for CUDA, otherwise available RAM.

    On CUDA, also what this process may still take under `torch.cuda.set_per_process_memory_fraction`
    (a shared GPU, or the GPU check's T4 emulation): the driver's free memory does not know that cap.
    """
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        if not hasattr(torch.cuda, "get_per_process_memory_fraction"):  # torch < 2.6 cannot report a cap
            return free
        cap = int(torch.cuda.get_per_process_memory_fraction(device) * total)
        return min(free, cap - torch.cuda.memory_reserved(device))
    return psutil.virtual_memory().available


def estimate(model_id: str, precision: Precision) -> MemoryEstimate:
    return MemoryEstimate(weight_bytes(model_id, precision.dtype), available_bytes(precision.device))


def check_fits(model_id: str, precision: Precision) -> MemoryEstimate:
    """Raise a MemoryError that says what to do when the checkpoint will not fit."""
    result = estimate(model_id, precision)
    if not result.fits:
        need, have = result.weight_bytes * HEADROOM / 2**30, result.available_bytes / 2**30
        raise MemoryError(
            f"{model_id} needs about {need:.1f} GiB in {precision.dtype} on {precision.device.type}, "
            f"but only {have:.1f} GiB is free. Use a smaller variant (profile='t4': blip2-opt-2.7b), "
            "load in 8-bit (profile='t4-flan-t5' style, needs bitsandbytes), or restart the runtime to free memory."
        )
    return result


def fit_report(model_id: str, precision: Precision, *, load_in_8bit: bool = False) -> str:
    """The memory check as a notebook prints it: weights, headroom, free memory, verdict."""
    if load_in_8bit:
        return f"{model_id}: loaded in 8-bit, about half its fp16 size; quantised loads are not estimated"
    result = estimate(model_id, precision)
    return (
        f"{model_id}\n"
        f"  weights in {precision.dtype}: {format_bytes(result.weight_bytes)}\n"
        f"  needed with {HEADROOM - 1:.0%} headroom: {format_bytes(int(result.weight_bytes * HEADROOM))}\n"
        f"  free on {precision.device.type}: {format_bytes(result.available_bytes)} -> fits: {result.fits}"
    )

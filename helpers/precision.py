"""Device and dtype choice, made once and reported.

BLIP-2's numerics are fussy: LAVIS runs the ViT in fp16 and Flan-T5 in bf16, fp16 matmuls are missing or
slow on CPU, the T4 has no bf16, and T5 overflows in fp16. Every load goes through `choose_precision` so
the rule lives in one place and the notebook can print what was chosen and why.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from helpers.user_input import check_device

_DTYPE_NAMES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@dataclass(frozen=True)
class Precision:
    """Where the model runs and in which dtype, with the sentence a notebook prints."""

    device: torch.device
    dtype: torch.dtype
    reason: str

    def __str__(self) -> str:
        return f"{self.device.type} / {str(self.dtype).removeprefix('torch.')} ({self.reason})"


def choose_device(requested: str | torch.device = "auto") -> torch.device:
    """`auto` means the first CUDA GPU when there is one, otherwise the CPU; see SUPPORTED_DEVICES."""
    device = check_device(requested)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return device


def _bf16_supported(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)


def choose_precision(
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    *,
    encoder_decoder_lm: bool = False,
) -> Precision:
    """Pick the dtype for a device; `encoder_decoder_lm` marks Flan-T5, which must never run in fp16."""
    resolved = choose_device(device)
    if dtype == "auto":
        return _auto_dtype(resolved, encoder_decoder_lm)
    chosen = _parse_dtype(dtype)
    if chosen == torch.float16 and encoder_decoder_lm:
        raise ValueError(
            "dtype=float16 with a Flan-T5 model: T5 activations overflow in fp16 and the answers become "
            "garbage. Use dtype='bfloat16' on GPUs that support it, 'float32', or a profile with 8-bit loading."
        )
    if chosen == torch.float16 and resolved.type == "cpu":
        raise ValueError(
            "dtype=float16 on the CPU: half-precision kernels are missing or slow there; use 'float32'."
        )
    if chosen == torch.bfloat16 and resolved.type == "cuda" and not _bf16_supported(resolved):
        raise ValueError(
            f"dtype=bfloat16 but {torch.cuda.get_device_name(resolved)} has no bf16; use 'float16'."
        )
    return Precision(resolved, chosen, "requested")


def _auto_dtype(device: torch.device, encoder_decoder_lm: bool) -> Precision:
    if device.type != "cuda":
        return Precision(
            device, torch.float32, f"{device.type}: fp32, half precision is unsupported or slow there"
        )
    if _bf16_supported(device):
        return Precision(device, torch.bfloat16, "GPU with bf16: the range of fp32 at half the memory")
    if encoder_decoder_lm:
        return Precision(
            device, torch.float32, "GPU without bf16 and a T5 model: fp32, since T5 overflows in fp16"
        )
    return Precision(device, torch.float16, "GPU without bf16 (e.g. T4): fp16 halves the memory")


def _parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPE_NAMES[dtype]
    except KeyError:
        known = ", ".join(["auto", *_DTYPE_NAMES])
        raise ValueError(f"dtype={dtype!r} is not understood; use one of: {known}") from None

"""A free Colab T4 on a bigger GPU: this process gets 15 GiB and no bf16, as on Colab.

A T4 has 15 GiB (15,360 MiB) and no native bf16, so the kit picks fp16 there (`helpers.precision`), sizes
batches for it (`helpers.finetune.memory_plan`) and refuses what will not fit (`helpers.memory`). On an H200
those paths would never run: bf16 is there and 139 GiB hide any excess. `emulate` caps the caching
allocator at 15 GiB (`torch.cuda.set_per_process_memory_fraction`, the fraction computed from the device's
total memory) and makes `torch.cuda.is_bf16_supported` answer False, as on a T4, so every dtype choice takes
the T4 branch. The CUDA context is not counted by the cap; the driver's figure (`driver_memory`) shows it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

T4_NAME = "Tesla T4"
T4_MEMORY_BYTES = 15 * 2**30
"""A T4's memory as nvidia-smi reports it (15,360 MiB); Colab's free tier gives the whole card."""


@dataclass(frozen=True)
class Emulation:
    """What `emulate` did, and what the kit then chose: the GPU check's report states it."""

    device_name: str
    device_memory_bytes: int
    cap_bytes: int
    fraction: float
    bf16_supported: bool
    auto_dtype: str
    bf16_request: str

    def describe(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "emulates": f"{T4_NAME}: {self.cap_bytes / 2**30:.0f} GiB for this process, no bf16",
        }


def memory_fraction(total_bytes: int, cap_bytes: int = T4_MEMORY_BYTES) -> float:
    """The fraction of a device's memory that leaves this process `cap_bytes`: cap / total."""
    if cap_bytes <= 0:
        raise ValueError(f"cap_bytes={cap_bytes}: a memory cap must be positive")
    if total_bytes < cap_bytes:
        raise ValueError(
            f"this GPU has {total_bytes / 2**30:.1f} GiB, less than the {cap_bytes / 2**30:.0f} GiB of the "
            "GPU to emulate; run the check on a larger GPU, or on a T4 itself without emulation"
        )
    return cap_bytes / total_bytes


def _no_bf16(including_emulation: bool = True) -> bool:
    """A T4 (compute capability 7.5) has no bf16 units: the kit must take its fp16 path."""
    return False


def emulate(device: int = 0, cap_bytes: int = T4_MEMORY_BYTES) -> Emulation:
    """Cap this process at `cap_bytes` on `device` and hide bf16; returns what the kit then chooses."""
    if not torch.cuda.is_available():
        raise RuntimeError("T4 emulation needs a CUDA GPU; none is visible in this process")
    properties = torch.cuda.get_device_properties(device)
    fraction = memory_fraction(properties.total_memory, cap_bytes)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    torch.cuda.is_bf16_supported = _no_bf16
    return Emulation(
        device_name=properties.name,
        device_memory_bytes=properties.total_memory,
        cap_bytes=cap_bytes,
        fraction=fraction,
        bf16_supported=torch.cuda.is_bf16_supported(),
        auto_dtype=_auto_dtype(),
        bf16_request=_bf16_request(),
    )


def _auto_dtype() -> str:
    from helpers.precision import choose_precision

    return str(choose_precision("cuda").dtype).removeprefix("torch.")


def _bf16_request() -> str:
    """What asking the kit for bf16 now does: on a T4 it must be refused with a reason."""
    from helpers.precision import choose_precision

    try:
        choose_precision("cuda", "bfloat16")
    except ValueError as error:
        return f"refused: {error}"
    return "accepted"

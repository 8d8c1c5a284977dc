"""Inside a notebook kernel the GPU check starts: T4 emulation before the first cell, torch's peaks after each.

papermill starts a fresh `python3` kernel per notebook, so the check cannot call `t4.emulate` itself. It
points $IPYTHONDIR at a folder whose startup script (`startup_script`) calls `install`: IPython runs startup
scripts before any cell. After every cell the kernel writes its pid and torch's peak allocated and reserved
bytes to $BLIP2_GPU_CHECK_PEAKS (a JSON file, replaced atomically), so the figures survive a failing cell.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from helpers.benchmarking import write_atomic
from helpers.gpu_check import t4

PEAKS_ENV_VAR = "BLIP2_GPU_CHECK_PEAKS"
STARTUP_FILE = "00-blip2-gpu-check.py"


def startup_script() -> str:
    """The IPython startup file: two lines, so a reader of the profile folder sees what runs."""
    return "from helpers.gpu_check import kernel\n\nkernel.install(get_ipython())  # noqa: F821\n"


def write_ipython_dir(folder: Path) -> Path:
    """An IPython folder whose default profile runs `startup_script`; pass it to the kernel as $IPYTHONDIR."""
    startup = folder / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / STARTUP_FILE).write_text(startup_script())
    return folder


def peaks(emulation: t4.Emulation) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "torch_peak_allocated_bytes": torch.cuda.max_memory_allocated(),
        "torch_peak_reserved_bytes": torch.cuda.max_memory_reserved(),
        "emulation": emulation.describe(),
    }


def install(shell: Any) -> None:
    """Emulate a T4 in this kernel and record torch's peaks after every cell into $BLIP2_GPU_CHECK_PEAKS."""
    target = os.environ.get(PEAKS_ENV_VAR)
    if not target:
        raise RuntimeError(f"${PEAKS_ENV_VAR} is not set: the GPU check sets it for the kernels it starts")
    emulation = t4.emulate()

    def record(_result: Any = None) -> None:
        write_atomic(target, json.dumps(peaks(emulation)))

    record()
    shell.events.register("post_run_cell", record)


def read_peaks(path: Path) -> dict[str, Any] | None:
    """What a kernel last wrote, or None when it never started (the notebook failed before its kernel)."""
    return json.loads(path.read_text()) if path.exists() else None

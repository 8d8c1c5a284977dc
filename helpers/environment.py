"""The setup report: what this runtime offers BLIP-2, and what to change before loading a model.

Most failures in a BLIP-2 notebook come from the runtime, not the code: no GPU selected on Colab, a GPU
without bf16, too little RAM or disk for the real checkpoints, a missing backend. `00_setup` prints this
report first so those problems show up in one table, each with the step that fixes it.
"""

from __future__ import annotations

import html
import importlib.util
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch
import transformers

GIB = 2**30
MIN_FREE_RAM_BYTES = 8 * 10**9
"""blip2-opt-2.7b holds 7.7 GB of fp16 weights, which pass through RAM on their way to the GPU; a free
Colab runtime has about 12.7 GB in all, so this warns only when other work already took a good share."""
MIN_FREE_DISK_BYTES = 20 * 10**9
"""blip2-opt-2.7b (about 15.5 GB on the hub) plus the ViT-g retrieval checkpoint (about 4.6 GB)."""
COLAB_GPU_STEP = "Runtime > Change runtime type > T4 GPU"


@dataclass(frozen=True)
class EnvironmentReport:
    """A snapshot of the runtime; GPU fields are None when no CUDA GPU is visible."""

    python_version: str
    platform: str
    on_colab: bool
    torch_version: str
    cuda_available: bool
    cuda_version: str | None
    """The CUDA version torch was built for; None for a CPU-only build."""
    gpu_name: str | None
    gpu_total_bytes: int | None
    gpu_free_bytes: int | None
    gpu_bf16: bool | None
    ram_total_bytes: int
    ram_available_bytes: int
    working_dir: str
    disk_free_bytes: int
    transformers_version: str
    backends: dict[str, bool]
    """Backend name -> whether it can be used here: "hf" (transformers' Blip2 classes) and "lavis"."""

    def as_rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs, in the order the table shows them."""
        gpu_memory = "-"
        if self.gpu_total_bytes is not None and self.gpu_free_bytes is not None:
            gpu_memory = f"{format_bytes(self.gpu_free_bytes)} free of {format_bytes(self.gpu_total_bytes)}"
        build = f"torch built for CUDA {self.cuda_version}" if self.cuda_version else "CPU-only torch build"
        return [
            ("Python", self.python_version),
            ("Platform", self.platform),
            ("Google Colab", _yes_no(self.on_colab)),
            ("torch", self.torch_version),
            ("CUDA", f"{'available' if self.cuda_available else 'not available'} ({build})"),
            ("GPU", self.gpu_name or "none"),
            ("GPU memory", gpu_memory),
            ("GPU bf16", "-" if self.gpu_bf16 is None else _yes_no(self.gpu_bf16)),
            (
                "RAM",
                f"{format_bytes(self.ram_available_bytes)} available of {format_bytes(self.ram_total_bytes)}",
            ),
            ("Disk", f"{format_bytes(self.disk_free_bytes)} free in {self.working_dir}"),
            ("transformers", self.transformers_version),
            ("backend hf", "importable" if self.backends["hf"] else "not importable"),
            ("backend lavis", "installed" if self.backends["lavis"] else "not installed"),
        ]

    def __str__(self) -> str:
        rows = self.as_rows()
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """The text form (saved copies, plain-text frontends) is the same table as the HTML one."""
        printer.text(str(self))

    def _repr_html_(self) -> str:
        """Jupyter shows the report as a table rather than the dataclass repr."""
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(label)}</th>"
            f"<td style='text-align:left'>{html.escape(value)}</td></tr>"
            for label, value in self.as_rows()
        )
        return f"<table>{body}</table>"

    def warnings(self) -> list[str]:
        """What to fix before loading real checkpoints, each with the step that fixes it; empty if nothing."""
        found = []
        if not self.cuda_available:
            if self.on_colab:
                found.append(
                    f"No GPU: the offline profile will be used; choose {COLAB_GPU_STEP}, "
                    "then run the notebook again."
                )
            else:
                found.append(
                    "No GPU: the offline profile will be used; the real profiles need a CUDA GPU "
                    f"(on Colab: {COLAB_GPU_STEP})."
                )
        if self.ram_available_bytes < MIN_FREE_RAM_BYTES:
            found.append(
                f"Less than {MIN_FREE_RAM_BYTES // 10**9} GB free RAM "
                f"({format_bytes(self.ram_available_bytes)} available): loading real checkpoints may kill "
                "the runtime; close other notebooks or restart the runtime."
            )
        if self.disk_free_bytes < MIN_FREE_DISK_BYTES:
            found.append(
                f"Less than {MIN_FREE_DISK_BYTES // 10**9} GB free disk for real checkpoints "
                f"({format_bytes(self.disk_free_bytes)} free in {self.working_dir}): "
                "free some space or use the offline profile."
            )
        if not self.backends["hf"]:
            found.append(
                "transformers has no Blip2ForConditionalGeneration: install the kit's dependencies "
                "(pip install -e . locally, or rerun the install cell on Colab)."
            )
        return found


def environment_report(working_dir: str | Path = ".") -> EnvironmentReport:
    """Inspect this runtime; `working_dir` is where the free disk space is measured."""
    folder = Path(working_dir).resolve()
    memory = psutil.virtual_memory()
    cuda = torch.cuda.is_available()
    gpu_free = gpu_total = None
    if cuda:
        gpu_free, gpu_total = torch.cuda.mem_get_info(0)
    return EnvironmentReport(
        python_version=platform.python_version(),
        platform=platform.platform(),
        on_colab="google.colab" in sys.modules,
        torch_version=torch.__version__,
        cuda_available=cuda,
        cuda_version=torch.version.cuda,
        gpu_name=torch.cuda.get_device_name(0) if cuda else None,
        gpu_total_bytes=gpu_total,
        gpu_free_bytes=gpu_free,
        gpu_bf16=torch.cuda.is_bf16_supported(including_emulation=False) if cuda else None,
        ram_total_bytes=memory.total,
        ram_available_bytes=memory.available,
        working_dir=str(folder),
        disk_free_bytes=shutil.disk_usage(folder).free,
        transformers_version=transformers.__version__,
        backends={"hf": _hf_importable(), "lavis": importlib.util.find_spec("lavis") is not None},
    )


def _hf_importable() -> bool:
    """The HF backend needs transformers' Blip2 classes, which older releases lack."""
    try:
        from transformers import Blip2ForConditionalGeneration  # noqa: F401
    except ImportError:
        return False
    return True


def format_bytes(size: int) -> str:
    """GiB for model-sized amounts; MiB below one GiB, so the offline model's few MiB do not print as 0.0."""
    if size < GIB:
        return f"{size / 2**20:.1f} MiB"
    return f"{size / GIB:.1f} GiB"


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def live_progress() -> bool:
    """Whether a progress bar would be watched live: a person at a Jupyter frontend, or a terminal.

    A headless run (papermill, nbval, CI logs) only keeps a bar's first frame, a "0%" that never moves, so
    the kit's bars and transformers' "Loading weights" bar are off there. In a kernel the sign is the
    current request's `allow_stdin`: frontends with a person (JupyterLab, Colab, VS Code) can answer
    `input()`, headless executors say they cannot.
    """
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is not None and hasattr(kernel, "get_parent"):
        return bool(kernel.get_parent().get("content", {}).get("allow_stdin", False))
    return sys.stderr.isatty()


def quiet_progress_bars_when_headless() -> None:
    """Turn off transformers' and the hub's progress bars (weights loading, downloads) in a headless run."""
    if not live_progress():
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()

"""One notebook under papermill with the `t4` profile, in a kernel that emulates a T4 (`kernel`).

The kernel gets the T4 emulation through $IPYTHONDIR's startup script, the checkpoint folders through
$BLIP2_CHECKPOINT_DIR, and imports this checkout's `helpers` ($PYTHONPATH). A notebook passes when papermill
ran every cell and the kernel confirmed the emulation; the result carries torch's peaks from the kernel and
the kernel's process id, by which the driver's figure is found.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.gpu_check import kernel
from helpers.profiles import CHECKPOINT_DIR_ENV_VAR, PROFILE_ENV_VAR

REPOSITORY = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPOSITORY / "notebooks"
TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class Setting:
    """Where a notebook run reads and writes."""

    out: Path
    ipython_dir: Path
    checkpoint_dir: Path


def environment(setting: Setting, peaks_file: Path) -> dict[str, str]:
    """The kernel's environment: T4 profile and emulation, local checkpoints, this checkout first on the path."""
    python_path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    return {
        **os.environ,
        "IPYTHONDIR": str(setting.ipython_dir),
        kernel.PEAKS_ENV_VAR: str(peaks_file),
        PROFILE_ENV_VAR: "t4",
        CHECKPOINT_DIR_ENV_VAR: str(setting.checkpoint_dir),
        "PYTHONPATH": python_path,
    }


def command(notebook: Path, output: Path, backend: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "papermill",
        "--log-level",
        "WARNING",
        "-k",
        "python3",
        *("-p", "PROFILE", "t4", "-p", "BACKEND", backend, "-p", "DEVICE", "cuda"),
        str(notebook),
        str(output),
    ]


def notebook_path(name: str) -> Path:
    path = NOTEBOOKS / f"{name}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(
            f"notebook {path} does not exist; the GPU check runs from a checkout of the kit"
        )
    return path


def run(name: str, backend: str, setting: Setting) -> dict[str, Any]:
    """Execute one notebook; pass/fail, seconds, torch's peaks and the kernel pid (for the driver's figure)."""
    stem = f"{name}-{backend}"
    output = setting.out / "notebooks" / f"{stem}.ipynb"
    peaks_file = setting.out / "kernels" / f"{stem}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    peaks_file.parent.mkdir(parents=True, exist_ok=True)
    peaks_file.unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        completed = subprocess.run(
            command(notebook_path(name), output, backend),
            env=environment(setting, peaks_file),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
        returncode, stderr = completed.returncode, completed.stderr
    except subprocess.TimeoutExpired as timeout:
        returncode, stderr = None, f"timed out after {TIMEOUT_SECONDS} s\n{timeout.stderr or ''}"
    seconds = time.perf_counter() - start
    peaks = kernel.read_peaks(peaks_file)
    return verdict(name, backend, returncode, stderr, seconds, peaks, output)


def verdict(
    name: str,
    backend: str,
    returncode: int | None,
    stderr: str | bytes,
    seconds: float,
    peaks: dict[str, Any] | None,
    output: Path,
) -> dict[str, Any]:
    """pass only if papermill succeeded and the kernel wrote its peaks (so the emulation was on)."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    error = None
    if returncode != 0:
        error = stderr.strip()[-3000:] or f"papermill exited with {returncode}"
    elif peaks is None:
        error = "the kernel never confirmed the T4 emulation (its startup script did not run)"
    return {
        "notebook": name,
        "backend": backend,
        "status": "pass" if error is None else "fail",
        "seconds": seconds,
        "kernel_pid": peaks["pid"] if peaks else None,
        "torch_peak_allocated_bytes": peaks["torch_peak_allocated_bytes"] if peaks else None,
        "torch_peak_reserved_bytes": peaks["torch_peak_reserved_bytes"] if peaks else None,
        "emulation": peaks["emulation"] if peaks else None,
        "executed_notebook": str(output),
        "error": error,
    }

"""Training checkpoints that a run resumes from exactly, written so a crash never leaves half of one.

A checkpoint folder `checkpoints/step-NNNNNNN/` holds the trainable weights (`trainable.safetensors`: the
Q-Former side, LoRA adapters; the frozen ViT and LLM are not copied), accelerate's state (optimizer,
scheduler, GradScaler and every process's RNG states) and `progress.json` (step, epoch, batches already
consumed in that epoch, and the run's settings). It is written under a temporary name and renamed into
place, so `latest_checkpoint` only ever sees complete folders.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

CHECKPOINTS = "checkpoints"
_PREFIX = "step-"
_WEIGHTS = "trainable.safetensors"
_PROGRESS = "progress.json"
LOG_FILE = "log.jsonl"
"""The training log: it belongs with the checkpoints, which record how many of its lines they had seen."""


@dataclass(frozen=True)
class Progress:
    """Where training stands: optimizer steps taken, the epoch, batches of it consumed, log records written."""

    step: int
    epoch: int
    batches_done: int
    log_records: int


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / CHECKPOINTS / f"{_PREFIX}{step:07d}"


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None; temporary folders of an interrupted save are ignored."""
    folders = sorted((output_dir / CHECKPOINTS).glob(f"{_PREFIX}*"))
    return folders[-1] if folders else None


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: Path,
    parameters: dict[str, torch.nn.Parameter],
    progress: Progress,
    settings: dict[str, Any],
    keep: int,
) -> Path:
    """Write a checkpoint on every process (each saves its RNG state), then rename it into place."""
    final = checkpoint_dir(output_dir, progress.step)
    staging = final.with_name(f".tmp-{final.name}")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()  # every process's RNG file is in `staging` before it is renamed
    if accelerator.is_main_process:
        save_file({name: p.detach().cpu().contiguous() for name, p in parameters.items()}, staging / _WEIGHTS)
        record = asdict(progress) | {"settings": settings}
        (staging / _PROGRESS).write_text(json.dumps(record, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        for old in sorted((output_dir / CHECKPOINTS).glob(f"{_PREFIX}*"))[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(
    accelerator: Accelerator,
    folder: Path,
    parameters: dict[str, torch.nn.Parameter],
    settings: dict[str, Any],
) -> Progress:
    """Restore weights, optimizer, scheduler, scaler and RNG; refuse a checkpoint made with other settings."""
    record = check_resumable(folder, settings)
    weights = load_file(folder / _WEIGHTS)
    if set(weights) != set(parameters):
        raise ValueError(
            f"{folder} holds other trainable parameters than this run; train into a new output directory"
        )
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(weights[name])
    accelerator.load_state(str(folder))
    return Progress(**{key: record[key] for key in ("step", "epoch", "batches_done", "log_records")})


def check_resumable(folder: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's progress record, if it was written with `settings`; otherwise a ValueError listing each
    difference. Cheap (one small JSON file), so a run checks it before loading any model."""
    record = json.loads((folder / _PROGRESS).read_text())
    saved = record["settings"]
    changed = {key: (saved.get(key), value) for key, value in settings.items() if saved.get(key) != value}
    if changed:
        listed = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
        raise ValueError(
            f"{folder} was written with other settings ({listed}); resume with the same settings, "
            "train into a new output directory, or start over with --no-resume (resume=False)"
        )
    return record


def clear_checkpoints(output_dir: Path) -> list[Path]:
    """Delete a previous run's checkpoints and log, so a fresh run can never resume from them later."""
    removed = [path for path in (output_dir / CHECKPOINTS, output_dir / LOG_FILE) if path.exists()]
    shutil.rmtree(output_dir / CHECKPOINTS, ignore_errors=True)
    (output_dir / LOG_FILE).unlink(missing_ok=True)
    return removed

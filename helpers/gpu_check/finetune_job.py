"""Twenty fine-tuning steps in fp16 with a GradScaler on the full-size blip2-opt-2.7b, as on a free T4.

Runs in its own process under T4 emulation with the `t4` profile: `helpers.finetune.train` on a manifest of
the bundled photos (8 examples, batch 2, 5 epochs = 20 optimizer steps), mixed precision chosen by the kit
(fp16 with loss scaling where there is no bf16), gradient checkpointing on as notebook 06 does on a GPU.
Checks: every loss finite; the scaler took steps (accelerate's GradScaler, counted per optimizer step);
the last checkpoint's trainable weights equal the model's; the model reloaded from the output folder holds
the same weights and captions the same. The trained model is freed before the reload: two copies of
OPT-2.7B do not fit in 15 GiB.

    python -m helpers.gpu_check.finetune_job --backend hf --work DIR --out result.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from accelerate.optimizer import AcceleratedOptimizer
from safetensors.torch import load_file

from helpers import GREEDY, load_blip2, sample_image, sample_names, sample_path
from helpers.benchmarking import write_atomic
from helpers.finetune import TrainingConfig, train
from helpers.finetune.checkpoints import latest_checkpoint
from helpers.gpu_check import t4

STEPS = 20
BATCH_SIZE = 2
EXAMPLES = 8
TASK = "caption"


def write_manifest(folder: Path) -> Path:
    """A caption manifest of the bundled photos, repeated to EXAMPLES lines (image path, TAB, caption)."""
    names = [sample_names()[i % len(sample_names())] for i in range(EXAMPLES)]
    lines = ["# image_path<TAB>caption", *(f"{sample_path(name)}\ta photo of a {name}" for name in names)]
    manifest = folder / "train.tsv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


@contextmanager
def scaler_steps() -> Iterator[list[dict[str, Any]]]:
    """Record, for each optimizer step accelerate takes, whether a GradScaler ran it and whether it skipped."""
    taken: list[dict[str, Any]] = []
    original = AcceleratedOptimizer.step

    def step(self: AcceleratedOptimizer, closure: Any = None) -> Any:
        result = original(self, closure)
        scaler = self.scaler
        taken.append(
            {
                "scaler": scaler is not None,
                "skipped": bool(self.step_was_skipped),
                "scale": float(scaler.get_scale()) if scaler is not None else None,
            }
        )
        return result

    AcceleratedOptimizer.step = step
    try:
        yield taken
    finally:
        AcceleratedOptimizer.step = original


def root_parameters(model: Any) -> dict[str, torch.Tensor]:
    return dict(model.trainable_parts(TASK).root.named_parameters())


def equal_to_checkpoint(saved: dict[str, torch.Tensor], parameters: dict[str, torch.Tensor]) -> bool:
    """Every saved tensor equals the model's, compared in the dtype the model holds it in."""
    return all(
        name in parameters
        and torch.equal(tensor.to(parameters[name].device, parameters[name].dtype), parameters[name])
        for name, tensor in saved.items()
    )


def run(backend: str, work: Path, profile: str = "t4", device: str = "cuda") -> dict[str, Any]:
    """Train, check the checkpoint, free the model, reload it and compare; the figures as a dict."""
    work.mkdir(parents=True, exist_ok=True)
    model = load_blip2(profile, backend=backend, device=device)
    config = TrainingConfig(
        task=TASK,
        train_manifest=write_manifest(work),
        output_dir=work / "run",
        epochs=math.ceil(STEPS * BATCH_SIZE / EXAMPLES),
        batch_size=BATCH_SIZE,
        learning_rate=1e-5,
        warmup_steps=2,
        checkpoint_every=10,
        gradient_checkpointing=True,
        resume=False,
    )
    with scaler_steps() as steps:
        result = train(model, config)
    images = [sample_image(name) for name in sample_names()[:3]]
    captions = model.caption(images, GREEDY)
    checkpoint = latest_checkpoint(Path(config.output_dir))
    saved = load_file(checkpoint / "trainable.safetensors") if checkpoint else {}
    checkpoint_equal = bool(saved) and equal_to_checkpoint(saved, root_parameters(model))
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    reloaded = load_blip2(profile, backend=backend, device=device, model_id=str(config.output_dir))
    losses = result.losses
    return {
        "steps": result.steps,
        "losses": losses,
        "losses_finite": bool(losses) and all(math.isfinite(loss) for loss in losses),
        "optimizer_steps": len(steps),
        "scaler_steps_taken": sum(step["scaler"] and not step["skipped"] for step in steps),
        "scaler_steps_skipped": sum(step["skipped"] for step in steps),
        "loss_scales": [step["scale"] for step in steps],
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_equals_model": checkpoint_equal,
        "reloaded_equals_checkpoint": bool(saved) and equal_to_checkpoint(saved, root_parameters(reloaded)),
        "reloaded_captions_equal": reloaded.caption(images, GREEDY) == captions,
        "captions": captions,
        "torch_peak_allocated_bytes": torch.cuda.max_memory_allocated()
        if torch.cuda.is_available()
        else None,
    }


def passed(result: dict[str, Any]) -> bool:
    """The verdict: STEPS steps, finite losses, the scaler stepping, checkpoint and reload equal."""
    return (
        result["steps"] == STEPS
        and result["losses_finite"]
        and result["scaler_steps_taken"] > 0
        and result["checkpoint_equals_model"]
        and result["reloaded_equals_checkpoint"]
        and result["reloaded_captions_equal"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="hf", choices=("hf", "lavis"))
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    emulation = t4.emulate()
    result = run(args.backend, Path(args.work))
    result["emulation"] = emulation.describe()
    result["passed"] = passed(result)
    write_atomic(args.out, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

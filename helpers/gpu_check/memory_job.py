"""Pre-flight against reality: what `helpers.memory` predicts for each model, and the peak torch measures.

Runs in its own process under T4 emulation with the `t4` profile (checkpoints from $BLIP2_CHECKPOINT_DIR):
load blip2-opt-2.7b and caption the notebooks' three photos with beam search, then load blip2-itm-vit-g
and score six photos against six texts (`match`), as notebooks 01 and 03 do. The prediction is the
pre-flight's own figure, weight bytes x HEADROOM; the measure is torch's peak for each model (the
retrieval model's counted from what was allocated before it loaded). The parent adds the driver's figure.
`refusal` checks the other side of the pre-flight: blip2-flan-t5-xl in fp32 (a T4 has no bf16 and T5
overflows in fp16) must be refused before any weight loads (`--backend` does not matter there).

    python -m helpers.gpu_check.memory_job {measure,refusal} --backend hf --out result.json
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from helpers import load_blip2, sample_image, sample_names
from helpers.benchmarking import write_atomic
from helpers.gpu_check import t4
from helpers.loading import checkpoint_locations
from helpers.memory import HEADROOM, check_fits, weight_bytes
from helpers.precision import choose_precision
from helpers.profiles import choose_profile

TOLERANCE = 0.10
"""The pre-flight should be within 10% of the measured peak: safe, without refusing what fits."""


def comparison(predicted: int, measured: int) -> dict[str, Any]:
    """Prediction over measure; within TOLERANCE either way counts as right."""
    ratio = predicted / measured
    return {
        "predicted_bytes": predicted,
        "measured_bytes": measured,
        "predicted_over_measured": ratio,
        "within_tolerance": abs(ratio - 1) <= TOLERANCE,
    }


def measure(backend: str) -> dict[str, Any]:
    """Both models of the `t4` profile, one after the other in this process."""
    caption_folder, retrieval_folder = checkpoint_locations(choose_profile("t4"))
    model = load_blip2("t4", backend=backend, device="cuda")
    dtype = model.precision.dtype
    photos = [sample_image(name) for name in sample_names()]
    torch.cuda.synchronize()
    model.caption(photos[:3])  # notebook 01: three photos, beam search with 5 beams
    torch.cuda.synchronize()
    caption_peak = torch.cuda.max_memory_allocated()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    model.match(photos[:6], ["a photo of a cat", "a rocket at dusk", "a cup of coffee"] * 2)  # notebook 03
    torch.cuda.synchronize()
    retrieval_peak = torch.cuda.max_memory_allocated() - before
    predicted = {
        "blip2-opt-2.7b": int(weight_bytes(caption_folder, dtype) * HEADROOM),
        "blip2-itm-vit-g": int(weight_bytes(retrieval_folder, dtype) * HEADROOM),
    }
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "models": {
            "blip2-opt-2.7b": comparison(predicted["blip2-opt-2.7b"], caption_peak),
            "blip2-itm-vit-g": comparison(predicted["blip2-itm-vit-g"], retrieval_peak),
        },
        "predicted_total_bytes": sum(predicted.values()),
        "torch_peak_reserved_bytes": torch.cuda.max_memory_reserved(),
    }


def refusal() -> dict[str, Any]:
    """blip2-flan-t5-xl on the T4 without 8-bit: fp32, about 19 GB with headroom, refused up front.

    The same steps `load_blip2` takes before it reads a weight: the profile's checkpoint location, the dtype
    it would choose, the pre-flight. Its checkpoint is a config alone: nothing else is read before refusing,
    so the check does not build 7.9 GB of weights only to refuse them.
    """
    caption_folder, _ = checkpoint_locations(choose_profile("a100-flan-t5-xl"))
    precision = choose_precision("cuda", encoder_decoder_lm=True)
    start = time.perf_counter()
    try:
        check_fits(caption_folder, precision)
    except MemoryError as error:
        return {
            "refused": True,
            "message": str(error),
            "dtype": str(precision.dtype).removeprefix("torch."),
            "seconds_to_refuse": time.perf_counter() - start,
            "fp32_weight_bytes": weight_bytes(caption_folder, torch.float32),
        }
    return {
        "refused": False,
        "message": f"the pre-flight let through, in {precision}, a model a T4 cannot hold",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=("measure", "refusal"))
    parser.add_argument("--backend", default="hf", choices=("hf", "lavis"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    emulation = t4.emulate()
    result = measure(args.backend) if args.check == "measure" else refusal()
    result["emulation"] = emulation.describe()
    write_atomic(args.out, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

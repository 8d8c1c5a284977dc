"""Generation benchmark (GPU only): captions per second at batch 32 against a one-image loop.

The model is the full-size blip2-opt-2.7b architecture with random weights (`helpers.full_size`), loaded
by `load_blip2` in fp16 on the GPU, through each backend. Every caption is exactly `--new-tokens` tokens
long (min = max new tokens), so random weights cost what real ones do; decoding is greedy and beam search
with 5 beams. The batch and the loop are timed in turns (batch, loop, batch, loop ...; medians over
`--repetitions` rounds, `helpers.benchmarking.interleaved`), on the wall clock and in process CPU time, so
the ratio holds on a shared machine. A sweep of other batch sizes is measured once each, for the curve.
`--emulate-t4` caps the process at a free Colab T4's 15 GiB and refuses bf16 (`helpers.gpu_check.t4`).
On a machine without a CUDA GPU the record says it was skipped and why. Goal: batch 32 gives >= 8x the
captions per second of the loop.
"""

from __future__ import annotations

import argparse
import gc

import torch

from helpers import benchmarking, full_size
from helpers.backends.base import Blip2Backend
from helpers.generation import GenerationSettings
from helpers.gpu_check import t4
from helpers.images import sample_image, sample_names
from helpers.loading import BACKENDS, load_blip2

GOAL_SPEEDUP = 8.0
GOAL_BATCH = 32
SWEEP_BATCH_SIZES = (1, 8, 64)
DECODINGS = {"greedy": 1, "beam5": 5}
"""Decoding name -> number of beams."""


def images_for(count: int) -> list:
    photos = [sample_image(name) for name in sample_names()]
    return [photos[i % len(photos)] for i in range(count)]


def decoding_settings(beams: int, new_tokens: int) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=beams)


def batch_against_loop(
    model: Blip2Backend, settings: GenerationSettings, batch: int, loop_images: int, repetitions: int
) -> dict:
    """Captions/s of one batch and of captioning `loop_images` one by one, timed in turns; the ratio."""
    images = images_for(max(batch, loop_images))
    model.caption(images[:2], settings)  # warm-up: CUDA kernels, the allocator, beam-search buffers
    timings = benchmarking.interleaved(
        {
            "batch": lambda: model.caption(images[:batch], settings),
            "loop": lambda: [model.caption([image], settings) for image in images[:loop_images]],
        },
        repetitions=repetitions,
        synchronize=torch.cuda.synchronize if model.precision.device.type == "cuda" else None,
    )
    # Per caption: the batch captions `batch` images per call, the loop `loop_images`.
    per_caption = {
        "batch": timings["batch"].scaled(1 / batch),
        "loop": timings["loop"].scaled(1 / loop_images),
    }
    return {
        "batch_size": batch,
        "loop_images": loop_images,
        "timings": {name: timing.to_dict() for name, timing in timings.items()},
        "batch_captions_per_second": 1 / per_caption["batch"].wall,
        "loop_captions_per_second": 1 / per_caption["loop"].wall,
        "speedup": benchmarking.speedup(per_caption["loop"], per_caption["batch"]),
    }


def sweep(model: Blip2Backend, settings: GenerationSettings, batch_sizes: list[int]) -> dict:
    """Captions/s at other batch sizes, one timing each: the shape of the curve, no ratio stated."""
    result = {}
    for size in batch_sizes:
        images = images_for(size)
        timing = benchmarking.interleaved(
            {"batch": lambda images=images: model.caption(images, settings)},
            repetitions=1,
            synchronize=torch.cuda.synchronize,
        )["batch"]
        result[str(size)] = {"seconds": timing.wall, "captions_per_second": size / timing.wall}
    return result


def measure(backend: str, args: argparse.Namespace) -> tuple[dict, list[benchmarking.Goal]]:
    """One backend: load, then batch against loop for each decoding, then the sweep (greedy)."""
    model = load_blip2(
        backend=backend,
        device="cuda",
        dtype="float16",
        model_id=str(full_size.checkpoint_path(full_size.GENERATION)),
    )
    figures: dict = {}
    goals = []
    for decoding, beams in DECODINGS.items():
        settings = decoding_settings(beams, args.new_tokens)
        figures[decoding] = result = batch_against_loop(
            model, settings, GOAL_BATCH, args.loop_images, args.repetitions
        )
        for clock in ("wall", "cpu"):
            goals.append(
                benchmarking.Goal(
                    f"{backend} {decoding}: batch {GOAL_BATCH} vs one at a time ({clock})",
                    result["speedup"][clock],
                    ">=",
                    GOAL_SPEEDUP,
                    "x",
                )
            )
        print(
            f"{backend} {decoding}: batch {GOAL_BATCH} {result['batch_captions_per_second']:.1f} captions/s, "
            f"loop {result['loop_captions_per_second']:.1f} captions/s -> {result['speedup']['wall']:.1f}x wall, "
            f"{result['speedup']['cpu']:.1f}x CPU"
        )
    if args.sweep:
        figures["sweep_greedy"] = sweep(model, decoding_settings(1, args.new_tokens), args.sweep)
    figures["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated()
    return figures, goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench")
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--loop-images", type=int, default=GOAL_BATCH, help="images captioned one at a time")
    parser.add_argument("--repetitions", type=int, default=3, help="rounds of the interleaved timing")
    parser.add_argument("--sweep", type=int, nargs="*", default=list(SWEEP_BATCH_SIZES), help="batch sizes")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument(
        "--emulate-t4", action="store_true", help="15 GiB cap and no bf16, as a free Colab T4"
    )
    args = parser.parse_args()
    recorded = {
        "checkpoint": "blip2-opt-2.7b architecture, random fp16 weights (helpers.full_size)",
        "dtype": "float16",
        "decodings": {
            name: f"{beams} beam(s), exactly {args.new_tokens} new tokens"
            for name, beams in DECODINGS.items()
        },
        "batch": GOAL_BATCH,
        "loop": f"{args.loop_images} images captioned one at a time",
        "timing": (
            f"batch and loop in turns for {args.repetitions} rounds, medians, per caption; wall clock "
            "(perf_counter after cuda.synchronize) and this process's CPU time (process_time)"
        ),
        "sweep_batch_sizes": args.sweep,
    }
    if not torch.cuda.is_available():
        reason = "no CUDA GPU on this machine; generation speed is measured on a GPU only"
        benchmarking.save(benchmarking.record("generation", recorded, {}, skipped=reason), args.out)
        return
    if args.emulate_t4:
        recorded["emulation"] = t4.emulate().describe()
    figures, goals = {}, []
    for backend in args.backends:
        torch.cuda.reset_peak_memory_stats()
        figures[backend], backend_goals = measure(backend, args)
        goals += backend_goals
        gc.collect()  # the model went out of scope: free it before the next backend loads
        torch.cuda.empty_cache()
    benchmarking.save(benchmarking.record("generation", recorded, figures, goals), args.out)


if __name__ == "__main__":
    main()

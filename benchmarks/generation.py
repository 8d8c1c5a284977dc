"""Generation benchmark (GPU only): captions per second for batches of 1-64 against a one-image loop.

The model is the full-size blip2-opt-2.7b architecture with random weights (`helpers.full_size`), loaded
by `load_blip2` in fp16 on the GPU. Every caption is exactly `--new-tokens` tokens long (min = max new
tokens, greedy decoding), so random weights cost what real ones do. On a machine without a CUDA GPU the
record says it was skipped and why. Goal: batch 32 gives >= 8x the captions per second of the loop.
"""

from __future__ import annotations

import argparse
import gc
import time

import torch

from helpers import benchmarking, full_size
from helpers.generation import GenerationSettings
from helpers.images import sample_image, sample_names
from helpers.loading import BACKENDS, load_blip2

GOAL_SPEEDUP = 8.0
GOAL_BATCH = 32
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


def synchronized_seconds(function) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    function()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(backend: str, settings: GenerationSettings, batch_sizes: list[int], loop_images: int) -> dict:
    model = load_blip2(
        backend=backend,
        device="cuda",
        dtype="float16",
        model_id=str(full_size.checkpoint_path(full_size.GENERATION)),
    )
    photos = [sample_image(name) for name in sample_names()]
    images = [photos[i % len(photos)] for i in range(max(*batch_sizes, loop_images))]
    model.caption(images[:2], settings)  # warm-up: CUDA kernels and allocator
    batched = {}
    for size in batch_sizes:
        seconds = synchronized_seconds(lambda size=size: model.caption(images[:size], settings))
        batched[str(size)] = {"seconds": seconds, "captions_per_second": size / seconds}
        print(f"{backend} batch {size}: {size / seconds:.1f} captions/s")
    loop = synchronized_seconds(lambda: [model.caption([image], settings) for image in images[:loop_images]])
    result = {
        "batched": batched,
        "loop_images": loop_images,
        "loop_seconds": loop,
        "loop_captions_per_second": loop_images / loop,
        "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated(),
    }
    print(f"{backend} one image at a time: {loop_images / loop:.1f} captions/s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench")
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--loop-images", type=int, default=GOAL_BATCH)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    args = parser.parse_args()
    settings = GenerationSettings(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, num_beams=1)
    recorded = {
        "checkpoint": "blip2-opt-2.7b architecture, random fp16 weights (helpers.full_size)",
        "dtype": "float16",
        "decoding": f"greedy, exactly {args.new_tokens} new tokens per caption",
        "batch_sizes": args.batch_sizes,
        "loop": f"{args.loop_images} images captioned one at a time",
    }
    if not torch.cuda.is_available():
        reason = "no CUDA GPU on this machine; generation speed is measured on a GPU only"
        benchmarking.save(benchmarking.record("generation", recorded, {}, skipped=reason), args.out)
        return
    figures, goals = {}, []
    for backend in args.backends:
        torch.cuda.reset_peak_memory_stats()
        figures[backend] = result = measure(backend, settings, args.batch_sizes, args.loop_images)
        gc.collect()
        torch.cuda.empty_cache()
        if str(GOAL_BATCH) in result["batched"]:
            speedup = (
                result["batched"][str(GOAL_BATCH)]["captions_per_second"] / result["loop_captions_per_second"]
            )
            result["speedup_at_goal_batch"] = speedup
            goals.append(
                benchmarking.Goal(
                    f"{backend}: batch {GOAL_BATCH} vs one at a time", speedup, ">=", GOAL_SPEEDUP, "x"
                )
            )
    benchmarking.save(benchmarking.record("generation", recorded, figures, goals), args.out)


if __name__ == "__main__":
    main()

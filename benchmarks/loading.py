"""Loading benchmark: peak resident memory and time of the kit's loader on a full-size blip2-opt-2.7b.

What it loads: the full-size random checkpoint of `helpers.full_size` (hub layout, sharded fp16
safetensors) through each backend's loader, on the CPU, in fp16: the precision Colab's T4 profile loads
before the weights go to the GPU. (On the CPU the kit would choose fp32, which alone doubles the bytes;
`load_blip2` refuses fp16 on the CPU because half-precision compute is slow there, so the backend class
is built directly with that precision: no compute runs here, only loading.) Each backend loads in a fresh
subprocess that reports its own peak resident set size (ru_maxrss). Goal: peak <= 1.2 x the fp16 weight
bytes, which keeps blip2-opt-2.7b within Colab's 12.7 GB of RAM.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import psutil
import torch

from helpers import benchmarking, full_size

GOAL_RATIO = 1.2
BACKENDS = ("hf", "lavis")


def child(backend: str) -> None:
    """Runs in the subprocess: import, note the resident set, load, touch, report peaks and time as JSON."""
    from helpers.precision import Precision

    if backend == "lavis":
        from helpers.backends.lavis import LavisBackend as Backend
    else:
        from helpers.backends.hf import HFBackend as Backend
    generation = str(full_size.checkpoint_path(full_size.GENERATION))
    retrieval = str(full_size.checkpoint_path(full_size.RETRIEVAL))
    precision = Precision(torch.device("cpu"), torch.float16, "fp16 as Colab's T4 profile loads it")
    before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    model = Backend(generation, retrieval, precision)
    seconds = time.perf_counter() - start
    loaded_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    touch_seconds = timed_touch(model.model)
    info = psutil.Process().memory_full_info()
    parameters = {str(p.dtype): 0 for p in model.model.parameters()}
    for parameter in model.model.parameters():
        parameters[str(parameter.dtype)] += parameter.numel()
    print(
        json.dumps(
            {
                "load_seconds": seconds,
                "rss_before_load_bytes": before,
                "peak_rss_after_load_bytes": loaded_peak,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "touch_seconds": touch_seconds,
                "rss_after_load_bytes": info.rss,
                "uss_after_load_bytes": info.uss,
                "parameters_by_dtype": parameters,
            }
        )
    )


def timed_touch(model: torch.nn.Module) -> float:
    """Read one value per 4 KiB page of every weight, as a first forward pass or `.to("cuda")` would.

    Weights loaded from safetensors may stay memory-mapped and become resident only when first read; the
    peak counted after this is the memory the loaded model really needs.
    """
    start = time.perf_counter()
    with torch.inference_mode():
        for tensor in [*model.parameters(), *model.buffers()]:
            step = max(1, 4096 // tensor.element_size())
            tensor.detach().reshape(-1)[::step].sum()
    return time.perf_counter() - start


def measure(backend: str) -> dict:
    """One fresh interpreter per backend, so neither inherits the other's memory or caches."""
    completed = subprocess.run(
        [sys.executable, __file__, "--child", backend], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"loading with backend={backend} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench", help="folder for loading.json")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    folder = full_size.checkpoint_path(full_size.GENERATION)
    full_size.checkpoint_path(full_size.RETRIEVAL)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    weight_bytes = index["metadata"]["total_size"]
    figures: dict = {"fp16_weight_bytes": weight_bytes, "shards": len(set(index["weight_map"].values()))}
    goals = []
    for backend in args.backends:
        result = measure(backend)
        result["peak_over_fp16_bytes"] = result["peak_rss_bytes"] / weight_bytes
        # what loading added on top of the interpreter and its libraries, for comparison
        added = result["peak_rss_bytes"] - result["rss_before_load_bytes"]
        result["added_over_fp16_bytes"] = added / weight_bytes
        figures[backend] = result
        goals.append(
            benchmarking.Goal(
                f"{backend}: peak RSS / fp16 weight bytes", result["peak_over_fp16_bytes"], "<=", GOAL_RATIO
            )
        )
        print(
            f"{backend}: loaded in {result['load_seconds']:.1f} s, peak {result['peak_rss_bytes'] / 2**30:.2f} GiB "
            f"= {result['peak_over_fp16_bytes']:.2f} x the fp16 weights ({weight_bytes / 2**30:.2f} GiB)"
        )
    settings = {
        "checkpoint": "blip2-opt-2.7b architecture, random fp16 weights, hub layout (helpers.full_size)",
        "checkpoint_folder": str(folder),
        "processor": "the offline profile's processor (small tokenizer), saved with the checkpoint",
        "device": "cpu",
        "dtype": "float16 (Colab T4 profile's dtype; the kit's CPU default would be float32)",
        "measure": "ru_maxrss of a fresh subprocess per backend, whole process (imports included), after loading "
        "and reading every weight page once (memory-mapped weights count once they are read)",
    }
    benchmarking.save(benchmarking.record("loading", settings, figures, goals), args.out)


if __name__ == "__main__":
    main()

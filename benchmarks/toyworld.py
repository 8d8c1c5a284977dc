"""Toy-world benchmark: held-out quality of the shipped miniature BLIP-2 (data/toyworld/), per backend.

Scores caption attribute F1, VQA accuracy (the VQA v2 scorer) and zero-shot image->text R@1 over 100
candidate captions through the backend API (`caption`, `ask`, `rank_texts`), so both backends are measured
the same way. The training time is the one `make toyworld` measured and wrote into the manifest.
Goals: caption_f1 >= 0.9, vqa_accuracy >= 0.85, retrieval_r1 >= 0.9, training <= 600 s on the CPU.
"""

from __future__ import annotations

import argparse
import json
import time

from helpers import benchmarking
from helpers.loading import BACKENDS
from helpers.offline import weights_dir
from helpers.toyworld.evaluate import THRESHOLDS, EvalSize, evaluate, load_run

GOAL_TRAIN_SECONDS = 600.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    args = parser.parse_args()
    folder = weights_dir()
    manifest = json.loads((folder / "manifest.json").read_text())
    size = EvalSize()
    figures: dict = {}
    for backend in args.backends:
        start = time.perf_counter()
        figures[backend] = evaluate(load_run(folder, backend), manifest["recipe"]["seed"], size)
        figures[backend]["eval_seconds"] = time.perf_counter() - start
        print(f"{backend}: {figures[backend]}")
    goals = [
        benchmarking.Goal(f"{backend}: {name}", figures[backend][name], ">=", target)
        for backend in args.backends
        for name, target in THRESHOLDS.items()
    ]
    goals.append(benchmarking.Goal("train_seconds", manifest["train_seconds"], "<=", GOAL_TRAIN_SECONDS, "s"))
    settings = {
        "checkpoints": str(folder),
        "split": "test (held out)",
        "eval_size": vars(size),
        "decoding": "greedy (helpers.GREEDY)",
        "train_seconds_from": "data/toyworld/manifest.json, measured by `make toyworld`",
        "trained_with": manifest["made_with"],
    }
    result = benchmarking.record("toyworld", settings, figures, goals)
    first = figures[args.backends[0]]
    result.update({name: first[name] for name in THRESHOLDS}, train_seconds=manifest["train_seconds"])
    benchmarking.save(result, args.out)


if __name__ == "__main__":
    main()

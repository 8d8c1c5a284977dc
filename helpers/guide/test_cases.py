"""The guide's `blip2_test_cases`: a checked run over the sample photos, the paper comparison, and latency,
throughput and memory on the current device."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import torch

from helpers.evaluation.comparison import format_table, load_comparison
from helpers.evaluation.paper_results import PAPER, PAPER_NUMBERS
from helpers.guide.adapter import GuideModel
from helpers.images import sample_image, sample_names

__all__ = ["analyze_model_performance", "compare_with_paper_results", "run_comprehensive_test"]

DEFAULT_RESULTS = Path("results") / "paper_comparison.json"
"""Where notebook 07 saves its comparison table."""

_QUESTION = "What is shown in the photo?"
_INSTRUCTION = "List all the objects you can see in the image."


def run_comprehensive_test(
    model: Any, vis_processors: Any = None, device: Any = None, names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Caption, answer and follow an instruction on the sample photos (all, or `names`); outputs must be text."""
    guide = GuideModel(model, vis_processors, device)
    names = list(names or sample_names())
    results: dict[str, Any] = {"images": {}, "failures": []}
    for name in names:
        image = sample_image(name)
        outputs = {
            "caption": guide.caption(image),
            "answer": guide.ask(image, _QUESTION),
            "instruction": guide.instruct(image, _INSTRUCTION),
        }
        results["images"][name] = outputs
        results["failures"] += [f"{name}: empty {task}" for task, text in outputs.items() if not text.strip()]
        print(f"{name:<22} caption: {outputs['caption']!r}")
        print(f"{'':<22} answer:  {outputs['answer']!r}")
    passed = len(names) * 3 - len(results["failures"])
    print(f"{passed}/{len(names) * 3} outputs are non-empty text")
    for failure in results["failures"]:
        print(f"FAILED {failure}")
    return results


def compare_with_paper_results(results_path: str | Path = DEFAULT_RESULTS) -> list:
    """Show notebook 07's saved run against the paper; without one, say so and show the paper's numbers."""
    path = Path(results_path)
    if path.is_file():
        rows = load_comparison(path)
        print(f"Saved run {path} against {PAPER}:")
        print(format_table(rows))
        return rows
    print(
        f"No saved run at {path}: run notebooks/07_paper_comparison.ipynb to measure this setup. "
        f"The paper's numbers ({PAPER}):"
    )
    model_width = max(len(number.model) for number in PAPER_NUMBERS) + 2
    dataset_width = max(len(number.dataset) for number in PAPER_NUMBERS) + 2
    for number in PAPER_NUMBERS:
        print(
            f"  {number.model:<{model_width}}{number.dataset:<{dataset_width}}{number.metric:<10}"
            f"{number.value:>7}  {number.table}"
        )
    return list(PAPER_NUMBERS)


def analyze_model_performance(
    model: Any, device: Any = None, batch_size: int = 4, repeats: int = 3, vis_processors: Any = None
) -> dict[str, float]:
    """Captioning latency (one image), throughput (a batch) and memory on this device."""
    guide = GuideModel(model, vis_processors, device)
    cuda = torch.cuda.is_available() and str(device or "cuda").startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    image = sample_image(sample_names()[0])
    guide.caption(image)  # warm-up: first calls pay for lazy initialisation
    start = time.perf_counter()
    for _ in range(repeats):
        guide.caption(image)
    report = {"latency_s": (time.perf_counter() - start) / repeats}
    images = [sample_image(name) for name in sample_names()[:batch_size]]
    start = time.perf_counter()
    guide.caption_batch(images)
    report["throughput_images_per_s"] = len(images) / (time.perf_counter() - start)
    if cuda:
        report["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
    report["process_memory_gb"] = psutil.Process().memory_info().rss / 1e9
    report["parameters_gb"] = sum(p.numel() * p.element_size() for p in guide.module.parameters()) / 1e9
    for key, value in report.items():
        print(f"{key:<26}{value:10.3f}")
    return report

"""Benchmark records: one JSON file per benchmark under build/bench/, and a markdown table of them all.

Speed and memory goals are measured by `make bench`, never asserted in tests: a timing depends on the
machine and its load. Each record therefore carries what it needs to be read later on its own: the
machine, the library versions, the settings, every measured figure, and each goal with its verdict.
Rendering: `python -m helpers.benchmarking build/bench` writes build/bench/SUMMARY.md.

A ratio of two timings holds on a shared machine only if both sides meet the same load: `interleaved` runs
the sides in turns (A, B, A, B ...), keeps each side's median, and times both the wall clock and this
process's CPU time, so a ratio is stated on both (`speedup`).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil
import torch

from helpers.atomic import staged_file

SCHEMA = "blip2-kit-bench/1"
SUMMARY_NAME = "SUMMARY.md"
_OPERATORS = {"<=": lambda value, target: value <= target, ">=": lambda value, target: value >= target}
_PACKAGES = ("torch", "transformers", "salesforce-lavis", "accelerate", "safetensors")


@dataclass(frozen=True)
class Goal:
    """One target of a benchmark: `value op target`, e.g. peak/fp16 bytes <= 1.2 or speed-up >= 20."""

    name: str
    value: float
    op: str
    target: float
    unit: str = ""

    def __post_init__(self) -> None:
        if self.op not in _OPERATORS:
            raise ValueError(f"Goal {self.name!r}: op={self.op!r}; use one of {sorted(_OPERATORS)}")

    @property
    def passed(self) -> bool:
        return _OPERATORS[self.op](self.value, self.target)

    @property
    def ratio(self) -> float:
        """value / target: at most 1 passes a `<=` goal, at least 1 passes a `>=` goal."""
        return self.value / self.target

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "passed": self.passed}


@dataclass(frozen=True)
class Timing:
    """One side's seconds in every round: wall clock and process CPU time (all threads), with medians."""

    wall_seconds: tuple[float, ...]
    cpu_seconds: tuple[float, ...]

    @property
    def wall(self) -> float:
        return statistics.median(self.wall_seconds)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu_seconds)

    def scaled(self, factor: float) -> Timing:
        """The same rounds times `factor`, e.g. a per-text cost extrapolated to every candidate."""
        return Timing(
            tuple(s * factor for s in self.wall_seconds), tuple(s * factor for s in self.cpu_seconds)
        )

    def __add__(self, other: Timing) -> Timing:
        """Round by round sum of two sides measured in the same rounds (one cost made of two parts)."""
        if len(self.wall_seconds) != len(other.wall_seconds):
            raise ValueError("only timings of the same rounds add up")
        return Timing(
            tuple(a + b for a, b in zip(self.wall_seconds, other.wall_seconds, strict=True)),
            tuple(a + b for a, b in zip(self.cpu_seconds, other.cpu_seconds, strict=True)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "wall_seconds_median": self.wall,
            "cpu_seconds_median": self.cpu,
            "wall_seconds": list(self.wall_seconds),
            "cpu_seconds": list(self.cpu_seconds),
        }


def interleaved(
    sides: Mapping[str, Callable[[], object]],
    repetitions: int = 5,
    synchronize: Callable[[], None] | None = None,
) -> dict[str, Timing]:
    """Time every side once per round, in turns (A, B, A, B ...), for `repetitions` rounds.

    Load from other jobs then falls on all sides alike instead of on whichever ran at the wrong moment.
    `synchronize` (e.g. torch.cuda.synchronize) runs before each clock reading, so queued GPU work counts.
    Warm the sides up before calling this: every round counts.
    """
    if repetitions < 1:
        raise ValueError(f"repetitions={repetitions}; time each side at least once")
    if not sides:
        raise ValueError("no sides to time")
    wall: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    wait = synchronize or (lambda: None)
    for _ in range(repetitions):
        for name, function in sides.items():
            wait()
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            function()
            wait()
            wall[name].append(time.perf_counter() - wall_start)
            cpu[name].append(time.process_time() - cpu_start)
    return {name: Timing(tuple(wall[name]), tuple(cpu[name])) for name in sides}


def speedup(slow: Timing, fast: Timing) -> dict[str, float]:
    """How many times faster `fast` is, from the medians: on the wall clock and on process CPU time."""
    return {"wall": slow.wall / fast.wall, "cpu": slow.cpu / fast.cpu}


def machine() -> dict[str, Any]:
    """CPU count, RAM and GPU of this machine: a figure means little without them."""
    gpu = None
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        gpu = {"name": properties.name, "memory_bytes": properties.total_memory}
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "ram_bytes": psutil.virtual_memory().total,
        "ram_available_bytes": psutil.virtual_memory().available,
        "gpu": gpu,
        "platform": platform.platform(),
    }


def versions() -> dict[str, str | None]:
    """Python and the libraries whose code the benchmarks time; None for one that is not installed."""
    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for package in _PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def record(
    name: str,
    settings: Mapping[str, Any],
    figures: Mapping[str, Any],
    goals: Sequence[Goal] = (),
    *,
    skipped: str | None = None,
) -> dict[str, Any]:
    """A benchmark's result; `skipped` holds the reason when it could not run here (then no goals)."""
    if skipped is not None and goals:
        raise ValueError(f"benchmark {name!r}: a skipped benchmark has no goals to judge")
    return {
        "schema": SCHEMA,
        "benchmark": name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "settings": dict(settings),
        "figures": dict(figures),
        "goals": [goal.to_dict() for goal in goals],
        "passed": None if skipped is not None else all(goal.passed for goal in goals),
        "skipped": skipped is not None,
        "skip_reason": skipped,
    }


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file beside it (`staged_file`): no reader sees half a file."""
    with staged_file(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def save(result: Mapping[str, Any], folder: str | Path) -> Path:
    """build/bench/<benchmark>.json, written atomically; prints where it went."""
    path = write_atomic(Path(folder) / f"{result['benchmark']}.json", json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def _number(value: float, target: float | None = None) -> str:
    """Three significant digits, more while the value would print as its target (a FAIL must not read
    "1.2 <= 1.2")."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    digits = 3
    while (
        digits < 8
        and target is not None
        and value != target
        and f"{value:.{digits}g}" == f"{target:.{digits}g}"
    ):
        digits += 1
    return f"{value:.{digits}g}"


def summary_rows(result: Mapping[str, Any]) -> list[list[str]]:
    """Table rows of one record: one per goal, or one saying it was skipped or has no goals."""
    name = str(result.get("benchmark", "?"))
    machine_info = result.get("machine") or {}
    gpu = (machine_info.get("gpu") or {}).get("name", "no GPU")
    where = f"{machine_info.get('cpu_count', '?')} CPUs, {gpu}"
    if result.get("skipped"):
        return [[name, "-", str(result.get("skip_reason")), "-", "skipped", where]]
    goals = result.get("goals") or []
    if not goals:
        return [[name, "-", "no goal recorded", "-", "-", where]]
    rows = []
    for goal in goals:
        unit = f" {goal['unit']}" if goal.get("unit") else ""
        rows.append(
            [
                name,
                str(goal["name"]),
                f"{_number(goal['value'], goal['target'])}{unit}",
                f"{goal['op']} {_number(goal['target'])}{unit}",
                "pass" if goal["passed"] else "FAIL",
                where,
            ]
        )
    return rows


def render_summary(results: Sequence[Mapping[str, Any]]) -> str:
    """The markdown table the README's Performance section shows."""
    header = ["Benchmark", "Measure", "Measured", "Goal", "Result", "Machine"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        lines += [
            "| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in summary_rows(result)
        ]
    return "\n".join(lines) + "\n"


def load_results(folder: str | Path) -> list[dict[str, Any]]:
    """Every benchmark JSON in `folder`, by file name; a file that is not valid JSON is an error naming it."""
    results = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            results.append(json.loads(path.read_text()))
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path} is not valid JSON ({error}); rerun the benchmark that writes it"
            ) from None
    return results


def write_summary(folder: str | Path) -> Path:
    results = load_results(folder)
    if not results:
        raise FileNotFoundError(f"no benchmark results (*.json) in {folder}; run `make bench` first")
    return write_atomic(Path(folder) / SUMMARY_NAME, render_summary(results))


if __name__ == "__main__":
    written = write_summary(sys.argv[1] if len(sys.argv) > 1 else "build/bench")
    print(written.read_text(), end="")

"""The GPU check's results: build/gpu-check/report.json and SUMMARY.md, both written atomically.

Each part of the check (notebooks, memory, fine-tuning, generation) becomes one `helpers.benchmarking`
record with its goals, so SUMMARY.md shows the same table as `make bench` (the table the README's
Performance section shows), followed by the notebook table: pass or fail, wall time, torch's and the
driver's peak per notebook and backend.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from helpers import benchmarking
from helpers.gpu_check import memory_job, t4

SCHEMA = "blip2-kit-gpu-check/1"
REPORT_NAME = "report.json"
SUMMARY_NAME = "SUMMARY.md"
GIB = 2**30


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def notebook_record(results: Sequence[Mapping[str, Any]], emulation: Mapping[str, Any] | None) -> dict:
    """Every notebook run: each must run to the end, and the driver's peak must fit a T4's memory."""
    goals = []
    for result in results:
        label = f"{result['notebook']} ({result['backend']})"
        goals.append(
            benchmarking.Goal(f"{label}: ran to the end", float(result["status"] == "pass"), ">=", 1.0)
        )
        if result.get("driver_peak_bytes") is not None:
            goals.append(
                benchmarking.Goal(
                    f"{label}: driver peak",
                    result["driver_peak_bytes"] / GIB,
                    "<=",
                    t4.T4_MEMORY_BYTES / GIB,
                    "GiB",
                )
            )
    settings = {"profile": "t4", "runner": "papermill, one kernel per notebook", "emulation": emulation}
    return benchmarking.record("gpu-check notebooks", settings, {"notebooks": list(results)}, goals)


def memory_record(measured: Mapping[str, Mapping[str, Any]], refusal: Mapping[str, Any] | None) -> dict:
    """Pre-flight prediction against torch's peak, per model and backend, and the Flan-T5-XL refusal."""
    goals = [
        benchmarking.Goal(
            f"{model} ({backend}): pre-flight error (predicted / torch peak - 1, either way)",
            abs(compared["predicted_over_measured"] - 1),
            "<=",
            memory_job.TOLERANCE,
        )
        for backend, result in measured.items()
        for model, compared in result["models"].items()
    ]
    if refusal is not None:
        goals.append(
            benchmarking.Goal(
                "blip2-flan-t5-xl in fp32 refused on a T4", float(refusal["refused"]), ">=", 1.0
            )
        )
    settings = {
        "prediction": "helpers.memory: weight bytes x HEADROOM",
        "measure": "torch.cuda.max_memory_allocated per model",
    }
    return benchmarking.record("gpu-check memory", settings, {**measured, "refusal": refusal}, goals)


def finetune_record(results: Mapping[str, Mapping[str, Any]]) -> dict:
    goals = [
        benchmarking.Goal(
            f"{backend}: 20 fp16 steps (finite loss, scaler steps, checkpoint and reload equal)",
            float(result["passed"]),
            ">=",
            1.0,
        )
        for backend, result in results.items()
    ]
    return benchmarking.record(
        "gpu-check fine-tuning", {"mixed_precision": "fp16 + GradScaler"}, dict(results), goals
    )


def failed_record(name: str, reason: str) -> dict:
    """A part that crashed: its goal fails and the reason is kept."""
    return benchmarking.record(
        name, {}, {"error": reason}, [benchmarking.Goal(f"{name}: ran", 0.0, ">=", 1.0)]
    )


def build_report(
    records: Sequence[Mapping[str, Any]],
    plan: Mapping[str, Any],
    seconds: float,
    emulation: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The whole check: passed only when every record passed and nothing required was left out."""
    left_out = dict(plan.get("left_out", {}))
    required_left_out = list(plan.get("required_left_out", []))
    return {
        "schema": SCHEMA,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": benchmarking.machine(),
        "versions": benchmarking.versions(),
        "emulation": emulation,
        "plan": dict(plan),
        "seconds": seconds,
        "records": list(records),
        "left_out": left_out,
        "required_left_out": required_left_out,
        "passed": bool(records) and all(record.get("passed") for record in records) and not required_left_out,
    }


def notebook_table(results: Sequence[Mapping[str, Any]]) -> str:
    header = "| Notebook | Backend | Result | Wall s | torch peak GiB | driver peak GiB |\n|---|---|---|---|---|---|\n"
    rows = [
        f"| {r['notebook']} | {r['backend']} | {r['status']} | {r['seconds']:.0f} | "
        f"{_gib(r.get('torch_peak_allocated_bytes'))} | {_gib(r.get('driver_peak_bytes'))} |"
        for r in results
    ]
    return header + "\n".join(rows) + "\n"


def render(report: Mapping[str, Any]) -> str:
    """SUMMARY.md: the verdict, the goal table, the notebook table, what was left out and why."""
    gpu = (report["machine"].get("gpu") or {}).get("name", "no GPU")
    verdict = "PASS" if report["passed"] else "FAIL"
    lines = [
        f"# GPU check: {verdict}",
        "",
        f"{gpu}, emulating a free Colab T4 (15 GiB for each process, no bf16); {report['seconds']:.0f} s in all, "
        f"{report['date']}.",
        "",
        benchmarking.render_summary(report["records"]),
    ]
    notebooks = next((r for r in report["records"] if r["benchmark"] == "gpu-check notebooks"), None)
    if notebooks and notebooks["figures"].get("notebooks"):
        lines += [notebook_table(notebooks["figures"]["notebooks"])]
    if report["left_out"]:
        lines += (
            ["Left out:", ""] + [f"- {name}: {reason}" for name, reason in report["left_out"].items()] + [""]
        )
    return "\n".join(lines)


def save(report: Mapping[str, Any], folder: Path) -> tuple[Path, Path]:
    """report.json and SUMMARY.md in `folder`, each through a temporary file and a rename."""
    data = benchmarking.write_atomic(folder / REPORT_NAME, json.dumps(report, indent=2) + "\n")
    summary = benchmarking.write_atomic(folder / SUMMARY_NAME, render(report))
    return data, summary

"""Run the planned jobs in order, each where it belongs, and collect what the report needs.

Builds run here; notebooks run `workers` at a time in their own kernels; memory, fine-tuning and
generation each run alone in a fresh process (so one job's cached memory never inflates another's peak)
while nvidia-smi is sampled. A job that crashes fails its part of the report with its error; a job not
started when the time budget is spent is listed as left out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from helpers import full_size
from helpers.gpu_check import checkpoints, kernel, notebook_job, report
from helpers.gpu_check.driver_memory import DriverPeak, DriverSampler
from helpers.gpu_check.plan import Job, Plan
from helpers.profiles import CHECKPOINT_DIR_ENV_VAR

JOB_TIMEOUT_SECONDS = 600
GENERATION_SCRIPT = notebook_job.REPOSITORY / "benchmarks" / "generation.py"
GENERATION_ARGUMENTS = ("--emulate-t4", "--loop-images", "8", "--repetitions", "3", "--sweep")
"""Batch 32 against 8 images one by one, 3 interleaved rounds, no sweep: the check's share of GPU time."""
NO_DRIVER = {"bytes": None, "method": "not measured: nvidia-smi is not on PATH"}


def sampler() -> AbstractContextManager[DriverPeak | None]:
    return DriverSampler() if shutil.which("nvidia-smi") else nullcontext(None)


def driver_figure(peak: DriverPeak | None, pids: list[int], alone: bool) -> dict[str, Any]:
    return NO_DRIVER if peak is None else peak.summary(pids, alone)


class Runner:
    """One check: its output folder, the checkpoint folder the kernels see, and the deadline."""

    def __init__(self, plan: Plan, out: Path) -> None:
        self.plan = plan
        self.out = out.resolve()  # kernels and jobs get absolute paths, whatever their working folder
        self.checkpoint_dir = self.out / "checkpoints"
        self.start = time.perf_counter()
        self.left_out: dict[str, str] = {}
        self.required_left_out: list[str] = []
        self.emulation: dict[str, Any] | None = None

    def over_budget(self, job: Job) -> bool:
        if time.perf_counter() - self.start <= self.plan.budget_seconds:
            return False
        self.left_out[job.name] = f"not started: the {self.plan.budget_seconds:.0f} s budget was spent"
        if job.required:
            self.required_left_out.append(job.name)
        return True

    def environment(self) -> dict[str, str]:
        python_path = os.pathsep.join(
            filter(None, [str(notebook_job.REPOSITORY), os.environ.get("PYTHONPATH")])
        )
        return {**os.environ, CHECKPOINT_DIR_ENV_VAR: str(self.checkpoint_dir), "PYTHONPATH": python_path}

    def alone(self, job: Job, arguments: list[str], result_file: Path) -> dict[str, Any]:
        """A job in a fresh process with the GPU to itself: its JSON result, seconds and the driver's peak."""
        result_file.parent.mkdir(parents=True, exist_ok=True)
        result_file.unlink(missing_ok=True)
        start = time.perf_counter()
        with sampler() as peak:
            process = subprocess.Popen(
                [sys.executable, *arguments],
                env=self.environment(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                output, _ = process.communicate(timeout=JOB_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                output = f"timed out after {JOB_TIMEOUT_SECONDS} s\n{process.communicate()[0]}"
        seconds = time.perf_counter() - start
        if process.returncode != 0 or not result_file.exists():
            return {
                "error": f"{job.name} failed (exit {process.returncode}):\n{output[-3000:]}",
                "seconds": seconds,
            }
        result = json.loads(result_file.read_text())
        result["seconds"] = seconds
        result["driver_peak"] = driver_figure(peak, [process.pid], alone=True)
        self.emulation = self.emulation or result.get("emulation")
        return result

    def build(self, jobs: list[Job]) -> None:
        for job in jobs:
            if not self.over_budget(job):
                full_size.checkpoint_path(job.target)
        checkpoints.prepare(self.checkpoint_dir)

    def notebooks(self, jobs: list[Job]) -> list[dict[str, Any]]:
        setting = notebook_job.Setting(
            self.out, kernel.write_ipython_dir(self.out / "ipython"), self.checkpoint_dir
        )
        started = [job for job in jobs if not self.over_budget(job)]
        with sampler() as peak, ThreadPoolExecutor(self.plan.workers) as pool:
            results = list(pool.map(lambda job: notebook_job.run(job.target, job.backend, setting), started))
        for result in results:
            pids = [result["kernel_pid"]] if result["kernel_pid"] else []
            figure = driver_figure(peak, pids, alone=self.plan.workers == 1)
            result["driver_peak_bytes"], result["driver_method"] = figure["bytes"], figure["method"]
            self.emulation = self.emulation or result["emulation"]
        return results

    def run(self) -> dict[str, Any]:
        """Every phase in order; returns the report (not yet saved)."""
        by_kind: dict[str, list[Job]] = {}
        for job in self.plan.jobs:
            by_kind.setdefault(job.kind, []).append(job)
        self.build(by_kind.get("build", []))
        notebooks = self.notebooks(by_kind.get("notebook", []))
        records = [report.notebook_record(notebooks, self.emulation)]
        measured = {
            job.backend: self.guarded(job, lambda job=job: self.memory(job, "measure"))
            for job in by_kind.get("memory", [])
        }
        refusal = next(
            (
                self.guarded(job, lambda job=job: self.memory(job, "refusal"))
                for job in by_kind.get("memory-refusal", [])
            ),
            None,
        )
        records.append(
            self.part_record(
                "gpu-check memory",
                {**measured, "refusal": refusal},
                lambda: report.memory_record({k: v for k, v in measured.items() if v}, refusal),
            )
        )
        finetune = {
            job.backend: self.guarded(job, lambda job=job: self.finetune(job))
            for job in by_kind.get("finetune", [])
        }
        records.append(
            self.part_record(
                "gpu-check fine-tuning",
                finetune,
                lambda: report.finetune_record({k: v for k, v in finetune.items() if v}),
            )
        )
        for job in by_kind.get("generation", []):
            records.append(self.generation(job))
        plan = self.plan.to_dict()
        plan["left_out"] = {**plan["left_out"], **self.left_out}
        plan["required_left_out"] = [*plan["required_left_out"], *self.required_left_out]
        return report.build_report(records, plan, time.perf_counter() - self.start, self.emulation)

    def guarded(self, job: Job, function: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """None for a job left out by the budget; otherwise its result, which may hold an "error"."""
        if self.over_budget(job):
            return None
        return function()

    @staticmethod
    def part_record(name: str, results: dict[str, Any], make: Callable[[], dict]) -> dict[str, Any]:
        errors = [f"{key}: {value['error']}" for key, value in results.items() if value and "error" in value]
        return report.failed_record(name, "\n".join(errors)) if errors else make()

    def memory(self, job: Job, check: str) -> dict[str, Any]:
        backend = ["--backend", job.backend] if job.backend else []
        result_file = self.out / "jobs" / f"memory-{check}{'-' + job.backend if job.backend else ''}.json"
        arguments = ["-m", "helpers.gpu_check.memory_job", check, *backend, "--out", str(result_file)]
        return self.alone(job, arguments, result_file)

    def finetune(self, job: Job) -> dict[str, Any]:
        result_file = self.out / "jobs" / f"finetune-{job.backend}.json"
        work = self.out / "finetune" / str(job.backend)
        shutil.rmtree(work, ignore_errors=True)
        arguments = [
            "-m",
            "helpers.gpu_check.finetune_job",
            "--backend",
            str(job.backend),
            "--work",
            str(work),
        ]
        return self.alone(job, [*arguments, "--out", str(result_file)], result_file)

    def generation(self, job: Job) -> dict[str, Any]:
        """benchmarks/generation.py under T4 emulation, its record taken into the report as it is."""
        if self.over_budget(job):
            return report.failed_record("generation", self.left_out[job.name])
        folder = self.out / "bench"
        arguments = [str(GENERATION_SCRIPT), "--out", str(folder), *GENERATION_ARGUMENTS]
        result = self.alone(job, arguments, folder / "generation.json")
        if "error" in result:
            return report.failed_record("generation", result["error"])
        result["figures"]["driver_peak"] = result.pop("driver_peak")
        result["figures"]["seconds"] = result.pop("seconds")
        return result

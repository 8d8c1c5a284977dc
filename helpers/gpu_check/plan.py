"""What the GPU check runs, in which order, and what it leaves out to stay within its time budget.

Jobs come in phases: build the full-size checkpoints that are missing, run the notebooks (several at once:
each kernel is capped at 15 GiB, so a large GPU holds a few), then the jobs that measure one thing alone on
the GPU (memory, fine-tuning, generation speed). Required jobs always run; optional ones join in order while
the estimate stays within the budget. A job whose tool is missing here is listed with the reason, never
dropped silently. The estimates are first guesses for one H200-class GPU; the report records real times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from helpers import full_size

BUDGET_SECONDS = 480.0
"""Eight minutes: the whole check on one modern GPU, builds included."""
WORKERS = 5
"""Notebooks run at once: 5 x 15 GiB fits an 80 GB GPU."""
NOTEBOOKS = (
    "00_setup",
    "01_captioning",
    "02_vqa_and_instructed_generation",
    "03_retrieval_and_features",
    "06_finetuning",
)
BACKENDS = ("hf", "lavis")
FLAN_T5 = "blip2-flan-t5-xl"
"""On a T4 only in 8-bit (bitsandbytes): the check verifies that the pre-flight refuses it in fp32 there."""
NEEDS = {
    "06_finetuning": (
        ("java", "pycocoevalcap"),
        "its validation scores captions with CIDEr: pycocoevalcap, whose PTB tokenizer runs on java",
    )
}
"""Notebooks that need more than the kit's Python packages: (tools, why)."""
ESTIMATES = {
    ("build", full_size.GENERATION): 90.0,
    ("build", full_size.RETRIEVAL): 30.0,
    "notebook": 60.0,
    "memory": 30.0,
    "memory-refusal": 10.0,
    "finetune": 60.0,
    "generation": 120.0,
}
PHASES = ("build", "notebook", "alone")


@dataclass(frozen=True)
class Job:
    """One unit of the check: what it is, its parameters, a time estimate and whether the check needs it."""

    kind: str
    target: str
    backend: str | None = None
    estimate_seconds: float = 0.0
    required: bool = True
    needs: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.kind} {self.target}" + (f" ({self.backend})" if self.backend else "")

    @property
    def phase(self) -> str:
        return self.kind if self.kind in ("build", "notebook") else "alone"


@dataclass
class Plan:
    """The jobs to run in order, those left out with the reason, and the estimate for what runs."""

    jobs: list[Job]
    left_out: list[tuple[Job, str]] = field(default_factory=list)
    budget_seconds: float = BUDGET_SECONDS
    workers: int = WORKERS

    @property
    def estimated_seconds(self) -> float:
        return estimate(self.jobs, self.workers)

    def to_dict(self) -> dict[str, object]:
        return {
            "budget_seconds": self.budget_seconds,
            "workers": self.workers,
            "estimated_seconds": self.estimated_seconds,
            "jobs": [job.name for job in self.jobs],
            "left_out": {job.name: reason for job, reason in self.left_out},
            "required_left_out": [job.name for job, _ in self.left_out if job.required],
        }


def estimate(jobs: Iterable[Job], workers: int) -> float:
    """Builds one after another, notebooks `workers` at a time (longest first, to the least busy worker),
    the measuring jobs alone."""
    jobs = list(jobs)
    busy = [0.0] * workers
    for seconds in sorted((job.estimate_seconds for job in jobs if job.phase == "notebook"), reverse=True):
        busy[busy.index(min(busy))] += seconds
    return sum(job.estimate_seconds for job in jobs if job.phase != "notebook") + max(busy)


def candidate_jobs(built: Iterable[str]) -> list[Job]:
    """Every job the check knows, required first, optional ones in the order they are worth adding."""
    built = set(built)
    jobs = [
        Job("build", variant, estimate_seconds=ESTIMATES[("build", variant)])
        for variant in (full_size.GENERATION, full_size.RETRIEVAL)
        if variant not in built
    ]
    for backend in BACKENDS:
        for notebook in NOTEBOOKS:
            needs = NEEDS[notebook][0] if notebook in NEEDS else ()
            jobs.append(Job("notebook", notebook, backend, ESTIMATES["notebook"], needs=needs))
    jobs += [Job("memory", "blip2-opt-2.7b + blip2-itm-vit-g", b, ESTIMATES["memory"]) for b in BACKENDS]
    jobs.append(Job("memory-refusal", FLAN_T5, None, ESTIMATES["memory-refusal"]))
    jobs.append(Job("generation", "blip2-opt-2.7b, batch 32 vs loop", None, ESTIMATES["generation"]))
    jobs.append(Job("finetune", "blip2-opt-2.7b, 20 fp16 steps", "hf", ESTIMATES["finetune"]))
    jobs.append(
        Job("finetune", "blip2-opt-2.7b, 20 fp16 steps", "lavis", ESTIMATES["finetune"], required=False)
    )
    return jobs


def make_plan(
    built: Iterable[str] = (),
    tools: Iterable[str] = (),
    budget_seconds: float = BUDGET_SECONDS,
    workers: int = WORKERS,
) -> Plan:
    """Required jobs whose tools are here, then optional ones while the estimate fits the budget.

    `built`: full-size variants already on disk (no build job); `tools`: what this machine has among the
    jobs' needs (java, pycocoevalcap).
    """
    if workers < 1:
        raise ValueError(f"workers={workers}: run at least one notebook at a time")
    if budget_seconds <= 0:
        raise ValueError(f"budget_seconds={budget_seconds}: give the check some time")
    tools = set(tools)
    plan = Plan(jobs=[], budget_seconds=budget_seconds, workers=workers)
    for job in candidate_jobs(built):
        missing = [need for need in job.needs if need not in tools]
        if missing:
            plan.left_out.append((job, f"needs {', '.join(missing)}, missing on this machine" + _why(job)))
        elif job.required or estimate([*plan.jobs, job], workers) <= budget_seconds:
            plan.jobs.append(job)
        else:
            plan.left_out.append(
                (job, f"optional, and the estimate would pass the {budget_seconds:.0f} s budget")
            )
    plan.jobs.sort(key=lambda job: PHASES.index(job.phase))
    return plan


def _why(job: Job) -> str:
    return f" ({NEEDS[job.target][1]})" if job.kind == "notebook" and job.target in NEEDS else ""

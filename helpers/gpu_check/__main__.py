"""`python -m helpers.gpu_check`: plan, run and report the GPU check (see the package docstring).

python -m helpers.gpu_check --plan-only     # what would run here, and what is left out and why
python -m helpers.gpu_check                 # run it (a CUDA GPU with at least 15 GiB)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import torch

from helpers import full_size
from helpers.gpu_check import plan as planning
from helpers.gpu_check import report
from helpers.gpu_check.runner import Runner


def available_tools() -> set[str]:
    """Which of the jobs' needs beyond the kit's core this machine has (see plan.NEEDS)."""
    tools = {"java"} if shutil.which("java") else set()
    return tools | ({"pycocoevalcap"} if importlib.util.find_spec("pycocoevalcap") else set())


def built_variants() -> list[str]:
    return [variant for variant in (full_size.GENERATION, full_size.RETRIEVAL) if full_size.is_built(variant)]


def check_kernel() -> None:
    """papermill starts the `python3` kernel; without ipykernel there is none and every notebook would fail."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        raise SystemExit(
            "no `python3` Jupyter kernel: install ipykernel into this Python (pip install ipykernel), "
            f"then `{sys.executable} -m ipykernel install --user --name python3`"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/gpu-check"))
    parser.add_argument("--budget-seconds", type=float, default=planning.BUDGET_SECONDS)
    parser.add_argument("--workers", type=int, default=planning.WORKERS, help="notebooks run at once")
    parser.add_argument("--plan-only", action="store_true", help="print the plan; run nothing")
    args = parser.parse_args(argv)
    plan = planning.make_plan(built_variants(), available_tools(), args.budget_seconds, args.workers)
    print(json.dumps(plan.to_dict(), indent=2))
    if args.plan_only:
        return 0
    if not torch.cuda.is_available():
        print("the GPU check needs a CUDA GPU (15 GiB or more); none is visible here", file=sys.stderr)
        return 2
    check_kernel()
    result = Runner(plan, args.out).run()
    data, summary = report.save(result, args.out)
    print(summary.read_text())
    print(f"wrote {data} and {summary}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

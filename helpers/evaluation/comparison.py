"""This run's results against the paper's numbers: the table notebook 07 prints, saves and reloads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers.backends.base import Blip2Backend
from helpers.evaluation.datasets import write_json_atomic
from helpers.evaluation.paper_results import PAPER, paper_model, paper_number, same_model
from helpers.evaluation.protocols import Result


@dataclass(frozen=True)
class ComparisonRow:
    """One line of the table: this run against the paper's number for the matching (or stand-in) model."""

    dataset: str
    metric: str
    this_run: float
    ci_low: float
    ci_high: float
    n: int
    backend: str
    checkpoint: str
    paper_model: str
    same_model: bool
    paper: float | None
    difference: float | None
    table: str | None


def compare_with_paper(
    results: Sequence[Result], model: Blip2Backend, paper_datasets: dict[str, str]
) -> list[ComparisonRow]:
    """Pair each result with the paper's number; `paper_datasets` maps a run's dataset to the paper's name."""
    rows = []
    for result in results:
        checkpoint = model.caption_model if result.kind == "generation" else model.retrieval_model
        reference = paper_model(checkpoint, result.kind)
        dataset = paper_datasets.get(result.dataset, result.dataset)
        number = paper_number(reference, dataset, result.metric, checkpoint)
        rows.append(
            ComparisonRow(
                dataset=result.dataset,
                metric=result.metric,
                this_run=round(result.value, 2),
                ci_low=round(result.ci_low, 2),
                ci_high=round(result.ci_high, 2),
                n=result.n,
                backend=model.backend_name,
                checkpoint=checkpoint,
                paper_model=reference,
                same_model=number is not None and same_model(checkpoint, number),
                paper=None if number is None else number.value,
                difference=None if number is None else round(result.value - number.value, 2),
                table=None if number is None else number.table,
            )
        )
    return rows


def format_table(rows: Sequence[ComparisonRow]) -> str:
    """A plain-text table (under 110 columns): paper number, this run with its 95% interval and N, the difference.

    Below it, one line per paper model says which rows compare with it and whether it is the model that ran.
    """
    header = (
        f"{'dataset':<33}{'metric':<19}{'paper':>7}{'this run':>9}{'95% CI':>18}{'N':>6}{'diff':>7}  table"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        paper = "-" if row.paper is None else f"{row.paper:.1f}"
        diff = "-" if row.difference is None else f"{row.difference:+.1f}"
        marker = "" if row.paper is None else ("" if row.same_model else " *")
        lines.append(
            f"{row.dataset[:32]:<33}{row.metric[:18]:<19}{paper:>7}{row.this_run:>9.1f}"
            f"{f'[{row.ci_low:.1f}, {row.ci_high:.1f}]':>18}{row.n:>6}{diff:>7}  {row.table or '-'}{marker}"
        )
    compared = dict.fromkeys(
        (row.paper_model, row.table, row.same_model) for row in rows if row.paper is not None
    )
    for model, table, same in compared:
        which = "the model that ran" if same else "* a stand-in: not the weights that ran"
        lines.append(f"{table}: {model}, {which}")
    return "\n".join(lines)


def save_comparison(rows: Sequence[ComparisonRow], path: str | Path, **run: object) -> Path:
    """Save the table as JSON (atomically), with the run's settings and the paper it compares with."""
    return write_json_atomic({"paper": PAPER, "run": run, "rows": [asdict(row) for row in rows]}, path)


def load_comparison(path: str | Path) -> list[ComparisonRow]:
    """Read a table saved by `save_comparison`."""
    return [ComparisonRow(**row) for row in json.loads(Path(path).read_text())["rows"]]

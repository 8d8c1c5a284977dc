"""The workshop pack: its cost table is what the kit computes, and its worked solutions are what the code gives."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from helpers import solutions
from helpers.workshop import NOTEBOOKS, estimate, workshop_table

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "workshop.md").read_text(encoding="utf-8")


def _doc_table() -> str:
    lines = [line for line in DOC.splitlines() if line.startswith("| ") and "offline, 2 CPU cores" in line]
    start = DOC.splitlines().index(lines[0])
    table = []
    for line in DOC.splitlines()[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    return "\n".join(table)


def test_every_notebook_has_a_plan():
    assert [plan.name for plan in NOTEBOOKS] == sorted(
        path.stem for path in (ROOT / "notebooks").glob("*.ipynb")
    )


def test_the_cost_table_is_what_the_kit_computes():
    """The measured column is read from the document; every estimate must be recomputed from the code."""
    table = _doc_table()
    measured = {
        match.group(1): float(match.group(2))
        for match in re.finditer(r"^\| `([\w]+)` \| (\d+) \|", table, re.M)
    }
    assert workshop_table(measured) == table


def test_estimates_follow_the_checkpoint_sizes():
    by_name = {plan.name: estimate(plan) for plan in NOTEBOOKS}
    assert by_name["00_setup"].download_bytes == 4 * 3_744_761_856  # blip2-opt-2.7b, fp32 on the hub
    assert by_name["03_retrieval_and_features"].download_bytes > by_name["00_setup"].download_bytes
    assert by_name["06_finetuning"].peak_gpu_bytes > by_name["00_setup"].peak_gpu_bytes  # training holds more
    assert all(result.peak_gpu_bytes < 15 * 2**30 for result in by_name.values()), "every notebook fits a T4"


def test_solutions_give_the_numbers_the_document_states():
    assert f"**{solutions.nb00_ex2():.1f} GiB**" in DOC
    refused = solutions.nb00_ex3()
    assert set(refused) == {"fp16 on cpu", "fp16 for Flan-T5"} and "overflow" in refused["fp16 for Flan-T5"]
    assert solutions.nb04_ex1() == 32 * 768 and f"**{solutions.nb04_ex1():,}**" in DOC
    assert f"**{solutions.nb04_ex2():,}**" in DOC
    costs = solutions.nb05_ex5()
    assert f"**{costs['blip2']:,}**" in DOC and f"**{costs['with the LLM']:,}**" in DOC
    film = solutions.nb05_ex7()
    assert film["count answers at step 0"] == ["three"] and "**three** to all 8 count questions" in DOC
    assert film["count questions"] == 8 and f"**{film['count right at step 0']}** scenes" in DOC
    [(question, answer, scene)] = film["wrong at the end"]
    assert f'"{question}" about "{scene}": **{answer}**' in DOC
    assert f"**{solutions.nb06_ex4()}**" in DOC
    assert math.isclose(solutions.nb07_ex1(), 0.7071, abs_tol=1e-4) and "**0.71**" in DOC
    assert f"**{solutions.nb08_ex4():.0f}x**" in DOC


def test_the_largest_text_length_is_the_boundary_of_the_memory_plan():
    from helpers.finetune.memory_plan import plan_memory

    tokens = solutions.nb06_ex4()
    assert plan_memory("blip2-opt-2.7b", batch_size=16, text_tokens=tokens).fits()
    assert not plan_memory("blip2-opt-2.7b", batch_size=16, text_tokens=tokens + 1).fits()


@pytest.mark.parametrize(
    "heading", ["## What each notebook costs", "## Learning goals", "## A three-hour", "## Glossary"]
)
def test_the_pack_has_its_parts(heading):
    assert heading in DOC


def test_solution_08_5_the_guide_demo_captions_a_toy_scene_right(offline_model):
    from blip2_advanced_examples import demonstrate_blip2_tasks
    from helpers import toy_samples

    scene = toy_samples(2)[1]
    assert demonstrate_blip2_tasks(offline_model, scene.image)["caption"] == scene.caption


def test_every_notebook_has_goals_and_prerequisites():
    for plan in NOTEBOOKS:
        assert re.search(rf"^\| `{plan.name}` \| [^|]+ \| [^|]+ \|$", DOC, re.M), plan.name

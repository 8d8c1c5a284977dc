"""`python -m helpers.toyworld` (what `make toyworld` runs): retrain the miniature, rewrite data/toyworld/.

Trains the recipe, writes both checkpoints and their manifest atomically, scores them on the held-out split,
then runs the paper's two ablations on the same frozen unimodal models (stage 2 without stage 1; stage 1
without ITG) and writes every score to ablations.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from helpers.benchmarking import write_atomic
from helpers.offline import CHECKOUT_WEIGHTS
from helpers.toyworld.evaluate import ABLATIONS, EvalSize, evaluate, load_run
from helpers.toyworld.pipeline import Recipe, Trained, pretrain_unimodal, save, two_stage


def _score(trained: Trained) -> dict[str, float]:
    """Held-out scores of a run that is not shipped: saved to a temporary folder, loaded by the HF backend."""
    folder = Path(tempfile.mkdtemp(prefix="toyworld-ablation-"))
    try:
        save(trained, folder / "run")
        return evaluate(load_run(folder / "run"), trained.recipe.seed, EvalSize())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CHECKOUT_WEIGHTS, help="folder to (re)write")
    parser.add_argument("--no-ablations", action="store_true", help="train and save the shipped run only")
    args = parser.parse_args()
    recipe = Recipe()
    base = pretrain_unimodal(recipe)
    trained = two_stage(base)
    save(trained, args.out)
    rows = {"BLIP-2 (stage 1 with ITC+ITM+ITG, then stage 2)": evaluate(load_run(args.out), recipe.seed)}
    print(json.dumps(rows, indent=2))
    if not args.no_ablations:
        rows["stage 2 without stage 1"] = _score(two_stage(base, skip_stage1=True))
        rows["stage 1 without ITG (ITC+ITM), then stage 2"] = _score(
            two_stage(base, objectives=("itc", "itm"))
        )
    report = {
        "split": "test (held out)",
        "seed": recipe.seed,
        "train_seconds": json.loads((args.out / "manifest.json").read_text())["train_seconds"],
        "rows": rows,
    }
    write_atomic(args.out / ABLATIONS, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

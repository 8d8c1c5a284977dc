"""`python -m helpers.toyworld` (what `make toyworld` runs): retrain the miniature, rewrite data/toyworld/.

Trains the recipe, writes both checkpoints and their manifest atomically, scores them on the held-out split,
then runs the paper's two ablations on the same frozen unimodal models (stage 2 without stage 1; stage 1
without ITG) and writes every score, with each run's stage-2 loss early and late, to ablations.json.
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

STAGE2_WINDOWS = {"stage2_loss_first_100": slice(0, 100), "stage2_loss_last_100": slice(-100, None)}
"""Stage-2 loss, averaged over the first and the last 100 steps: the paper's Figure 5 compares these curves."""


def _row(trained: Trained, folder: Path) -> dict[str, float]:
    """Held-out scores of a saved run (HF backend) and its stage-2 loss early and late."""
    history = trained.losses["stage 2"]
    windows = {name: sum(history[part]) / len(history[part]) for name, part in STAGE2_WINDOWS.items()}
    return {**evaluate(load_run(folder), trained.recipe.seed, EvalSize()), **windows}


def _ablation(trained: Trained) -> dict[str, float]:
    """`_row` for a run that is not shipped: saved to a temporary folder first."""
    folder = Path(tempfile.mkdtemp(prefix="toyworld-ablation-"))
    try:
        return _row(trained, save(trained, folder / "run"))
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
    rows = {"BLIP-2 (stage 1 with ITC+ITM+ITG, then stage 2)": _row(trained, args.out)}
    print(json.dumps(rows, indent=2))
    if not args.no_ablations:
        rows["stage 2 without stage 1"] = _ablation(two_stage(base, skip_stage1=True))
        rows["stage 1 without ITG (ITC+ITM), then stage 2"] = _ablation(
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

"""`python -m helpers.toyworld` (what `make toyworld` runs): retrain the miniature, rewrite data/toyworld/.

Trains the recipe, writes both checkpoints and their manifest atomically, scores them on the held-out split,
then runs two ablations on the same frozen unimodal models (stage 2 without stage 1, the paper's Figure 5;
stage 1 without ITG) and writes every score, with each run's stage-2 loss early and late, to ablations.json.
Every run is filmed on the probe scenes (`helpers.toyworld.film`): the shipped run's films lie next to its
weights, the ablations' under ablation_films/.

`--film-only` records the films of an existing run without changing it: it retrains only the ViT (the saved
OPT is reused), repeats both stages with recording on, and writes the films only if the repeated stages give
the saved weights bit for bit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import Blip2ForConditionalGeneration, OPTForCausalLM

from helpers.benchmarking import write_atomic
from helpers.offline import CHECKOUT_WEIGHTS
from helpers.toyworld import film
from helpers.toyworld.evaluate import ABLATIONS, THRESHOLDS, EvalSize, evaluate, load_run
from helpers.toyworld.models import Sizes
from helpers.toyworld.pipeline import CAPTION, RETRIEVAL, Recipe, Trained, pretrain_unimodal, save, two_stage

ABLATION_RUNS = {
    "no_stage1": ("stage 2 without stage 1", {"skip_stage1": True}),
    "no_itg": ("stage 1 without ITG (ITC+ITM), then stage 2", {"objectives": ("itc", "itm")}),
}
"""Folder under film.ABLATION_FILMS -> (row of ablations.json, `two_stage` keywords)."""

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


def _save_films(trained: Trained, folder: Path) -> None:
    for stage, recorded in trained.films.items():
        print(recorded.save(folder / film.FILES[stage]))


def _differences(trained: Trained, folder: Path) -> list[str]:
    """Tensors of the trained run that differ from the checkpoints saved in `folder`."""
    different = []
    for kind, model in ((CAPTION, trained.caption), (RETRIEVAL, trained.retrieval)):
        saved = load_file(folder / kind / "model.safetensors")
        state = model.state_dict()
        different += [f"{kind}/{name} (not trained)" for name in saved if name not in state]
        different += [
            f"{kind}/{name}" for name in saved if name in state and not torch.equal(saved[name], state[name])
        ]
    return different


def film_only(out: Path, ablations: bool, size: EvalSize | None = None) -> None:
    """Record the films of the run saved in `out` (and of its ablations) without changing its weights."""
    saved_recipe = json.loads((out / "manifest.json").read_text())["recipe"]
    recipe = Recipe(**{**saved_recipe, "sizes": Sizes(**saved_recipe["sizes"])})
    saved_lm = Blip2ForConditionalGeneration.from_pretrained(out / CAPTION).language_model
    language_model = OPTForCausalLM(saved_lm.config)
    language_model.load_state_dict(saved_lm.state_dict())
    base = pretrain_unimodal(recipe, language_model=language_model.eval())
    probe = film.Probe.of(recipe.seed)
    trained = two_stage(base, probe=probe)
    different = _differences(trained, out)
    if different:
        rerun = save(
            trained, out.with_name(f"{out.name}-rerun")
        )  # keep the work: weights and films, side by side
        scores = evaluate(load_run(rerun), recipe.seed, size or EvalSize())
        raise SystemExit(
            f"the repeated stages differ from {out} in {len(different)} tensors ({different[:3]}...), so their "
            f"films would not show the saved run. The repeated run, with its films, is in {rerun}; held out it "
            f"scores {json.dumps(scores)} (targets {json.dumps(THRESHOLDS)}): replace {out} by it if it meets "
            "them, or retrain everything with `make toyworld`"
        )
    _save_films(trained, out)
    if ablations:
        for folder, (row, options) in ABLATION_RUNS.items():
            _save_films(two_stage(base, probe=probe, run=row, **options), out / film.ABLATION_FILMS / folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CHECKOUT_WEIGHTS, help="folder to (re)write")
    parser.add_argument("--no-ablations", action="store_true", help="train and save the shipped run only")
    parser.add_argument("--film-only", action="store_true", help="film the run saved in --out, unchanged")
    args = parser.parse_args()
    if args.film_only:
        film_only(args.out, ablations=not args.no_ablations)
        return
    recipe = Recipe()
    base = pretrain_unimodal(recipe)
    probe = film.Probe.of(recipe.seed)
    trained = two_stage(base, probe=probe)
    save(trained, args.out)
    rows = {"BLIP-2 (stage 1 with ITC+ITM+ITG, then stage 2)": _row(trained, args.out)}
    print(json.dumps(rows, indent=2))
    if not args.no_ablations:
        for folder, (row, options) in ABLATION_RUNS.items():
            ablation = two_stage(base, probe=probe, run=row, **options)
            rows[row] = _ablation(ablation)
            _save_films(ablation, args.out / film.ABLATION_FILMS / folder)
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

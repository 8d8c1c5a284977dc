"""Regenerate every figure of figures/ (the README's and the notebooks' diagrams): `make figures`.

Each figure is drawn by the same helpers the notebooks call, from counts of the real architectures, and
saved as a PNG without a timestamp or software tag, so an unchanged figure is rewritten byte for byte. The
README's animation (`FILM_GIF`) is drawn from the shipped toy-world run's stage-1 film (data/toyworld/); a GIF
holds no timestamp either, so an unchanged film is also rewritten byte for byte.
Run as `python -m helpers.figures [folder [run folder]]` (the run folder whose film to animate: default, the
shipped one).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib
import torch
from matplotlib.figure import Figure

from helpers import diagrams, film_viz, viz_pretraining
from helpers.atomic import staged_file
from helpers.offline import weights_dir
from helpers.toyworld import film
from helpers.variants import STAGE1_VARIANT, count_variant, meta_model

EXAMPLE_TOKENS = ["[CLS]", "a", "cat", "on", "a", "sofa", "[SEP]", "[PAD]"]
"""The text of the mask figure: one padding token shows that padding is never attended to."""


def _masks() -> Figure:
    text_mask = torch.tensor([[1] * (len(EXAMPLE_TOKENS) - 1) + [0]])
    return viz_pretraining.attention_masks(32, EXAMPLE_TOKENS, text_mask)


FIGURES: dict[str, Callable[[], Figure]] = {
    "architecture.png": lambda: diagrams.architecture(count_variant("blip2-opt-2.7b")),
    "qformer_layers.png": lambda: diagrams.qformer_layers(meta_model(STAGE1_VARIANT).qformer, 32),
    "stage1.png": lambda: diagrams.stage1(count_variant(STAGE1_VARIANT)),
    "stage2.png": lambda: diagrams.stage2(count_variant("blip2-opt-2.7b"), count_variant("blip2-flan-t5-xl")),
    "attention_masks.png": _masks,
}
"""File name -> the call that draws it."""

FILM_GIF = "pretraining_film.gif"
"""The README's animation of stage 1 in the toy world (attention, ITC matrix, embeddings per snapshot)."""


def save_figure(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """Write a PNG atomically (temp file, then rename), with no metadata that changes between runs."""
    with staged_file(path, suffix=".png") as temporary:
        fig.savefig(temporary, dpi=dpi, metadata={"Software": None}, facecolor="white")
    return path


def write_film_gif(path: Path, run: Path | None = None) -> Path:
    """Animate stage 1 of the film recorded in `run` (default: the shipped run, `weights_dir()`) into `path`."""
    stage1 = film.load_film(Path(run if run is not None else weights_dir()) / film.FILES[1])
    return film_viz.animate_stage1(stage1, path)


def write_figures(folder: Path, run: Path | None = None) -> list[Path]:
    """Draw and save every figure of FIGURES into `folder`, then the film's animation (`write_film_gif`)."""
    drawn = [save_figure(draw(), folder / name) for name, draw in FIGURES.items()]
    return [*drawn, write_film_gif(folder / FILM_GIF, run)]


if __name__ == "__main__":
    matplotlib.use("Agg")  # headless: no window, and the same rendering everywhere
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "figures")
    for written in write_figures(target, Path(sys.argv[2]) if len(sys.argv) > 2 else None):
        print(written)

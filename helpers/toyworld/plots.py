"""Figures of the toy world: its scenes with a caption under each."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from helpers.toyworld.world import IMAGE_SIZE, Scene, render
from helpers.viz import _finish


def scene_grid(scenes: Sequence[Scene], captions: Sequence[str] | None = None, columns: int = 4) -> Figure:
    """The scenes' images, each titled by `captions` (default: the true captions), closed so Jupyter shows it once."""
    if not scenes:
        raise ValueError("scenes is empty; pass at least one scene, e.g. world.scenes(0, 'test', 8)")
    titles = list(captions) if captions is not None else [scene.caption() for scene in scenes]
    if len(titles) != len(scenes):
        raise ValueError(f"{len(titles)} captions for {len(scenes)} scenes; give one per scene")
    rows = -(-len(scenes) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3 * columns, 3.4 * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, scene, title in zip(axes.flat, scenes, titles, strict=False):
        ax.axis("on")
        ax.imshow(render(scene))
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():  # the canvas is white: a frame shows where it ends
            spine.set_edgecolor("#777777")
        # The middle of the canvas, so "on the left" and "on the right" can be checked by eye.
        ax.axvline(IMAGE_SIZE / 2 - 0.5, color="#bbbbbb", lw=0.8, ls="--")
        ax.set_title("\n".join(textwrap.wrap(title, 38, max_lines=3, placeholder=" …")), fontsize=9)
    return _finish(fig)

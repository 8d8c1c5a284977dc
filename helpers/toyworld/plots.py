"""Figures of the toy world: its scenes with a caption under each."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from helpers.toyworld.world import Scene, render


def scene_grid(scenes: Sequence[Scene], captions: Sequence[str] | None = None, columns: int = 4) -> Figure:
    """The scenes' images, each titled by `captions` (default: the true captions)."""
    if not scenes:
        raise ValueError("scenes is empty; pass at least one scene, e.g. world.scenes(0, 'test', 8)")
    titles = list(captions) if captions is not None else [scene.caption() for scene in scenes]
    if len(titles) != len(scenes):
        raise ValueError(f"{len(titles)} captions for {len(scenes)} scenes; give one per scene")
    rows = -(-len(scenes) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, scene, title in zip(axes.flat, scenes, titles, strict=False):
        ax.imshow(render(scene))
        ax.add_patch(plt.Rectangle((0, 0), 223, 223, fill=False, color="#999999", lw=1))
        ax.set_title(title, fontsize=9)
    return fig

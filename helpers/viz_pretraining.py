"""Figures of the Q-Former at work: its attention masks, where its queries look, hard negatives, loss curves.

Like `helpers.viz`, each function returns a closed `Figure` (a notebook shows it as a cell's value, a
script saves it) and draws text with mathtext off.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from helpers.anatomy import MASK_KINDS, qformer_attention_mask
from helpers.viz import ImageLike, _as_picture, _clean, _finish

_MASK_TITLES = {
    "itc": "ITC: uni-modal\nqueries and text apart",
    "itm": "ITM: bi-directional\neverything sees everything",
    "itg": "ITG: multi-modal causal\ntext sees queries and its past",
}


def attention_masks(num_queries: int, tokens: Sequence[str], text_mask: torch.Tensor | None = None) -> Figure:
    """The three stage-1 self-attention masks side by side, built by `qformer_attention_mask`.

    Rows attend to columns; white cells are blocked. `tokens` labels the text positions; `text_mask`
    (1, len(tokens)) marks padding (all real tokens when omitted).
    """
    if text_mask is None:
        text_mask = torch.ones(1, len(tokens), dtype=torch.long)
    if text_mask.shape != (1, len(tokens)):
        raise ValueError(
            f"text_mask has shape {tuple(text_mask.shape)}; give (1, {len(tokens)}), one per token"
        )
    labels = [f"q{i}" for i in range(num_queries)] + [_clean(token) for token in tokens]
    size = num_queries + len(tokens)
    fig, axes = plt.subplots(1, 3, figsize=(18, 8))
    fig.subplots_adjust(left=0.07, right=0.99, top=0.84, bottom=0.13, wspace=0.25)
    for ax, kind in zip(axes, MASK_KINDS, strict=True):
        mask = qformer_attention_mask(kind, num_queries, text_mask)[0].numpy()
        ax.imshow(mask, cmap="Greys", vmin=0, vmax=1.4)
        ax.axhline(num_queries - 0.5, color="#e69138", lw=1.5)
        ax.axvline(num_queries - 0.5, color="#e69138", lw=1.5)
        # Every text token is labelled; the queries only every 8th, so that each label stays legible.
        ticks = [*range(0, num_queries, 8), *range(num_queries, size)]
        ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=9)
        ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=9)
        ax.set_title(_MASK_TITLES[kind], fontsize=12)
        ax.set_xlabel("attended (keys)", fontsize=11)
    axes[0].set_ylabel("attending (queries of attention)", fontsize=11)
    fig.suptitle(
        f"Q-Former self-attention masks: {num_queries} learned queries, then the text\n"
        "(grey = may attend; white = blocked; ITG starts the text with [DEC] instead of [CLS])",
        fontsize=13,
    )
    return _finish(fig)


def query_attention_maps(
    image: ImageLike,
    attentions: torch.Tensor,
    queries: Sequence[int] = range(8),
    title: str = "where each query looks",
) -> Figure:
    """Cross-attention of selected queries over the image, one row per cross-attention layer.

    `attentions` is one image's (layers, heads, queries, 1 + patches) probabilities (a backend's
    `cross_attentions(...)[:, i]`); heads are averaged, the ViT's [CLS] column is dropped and each map is
    stretched to its own maximum. The last column averages all queries.
    """
    if attentions.ndim != 4:
        raise ValueError(
            f"attentions must be one image's (layers, heads, queries, tokens), got shape {tuple(attentions.shape)}"
        )
    layers, _, num_queries, tokens = attentions.shape
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        raise ValueError(f"{tokens} image tokens are not [CLS] plus a square grid of patches")
    chosen = list(queries)
    if not chosen or max(chosen) >= num_queries or min(chosen) < 0:
        raise ValueError(f"queries={chosen}: pick indices in 0..{num_queries - 1}")
    maps = attentions.float().mean(dim=1)[..., 1:].reshape(layers, num_queries, grid, grid).cpu().numpy()
    picture = np.asarray(_as_picture(image))
    height, width = picture.shape[:2]
    columns = [*chosen, None]
    fig, axes = plt.subplots(
        layers,
        len(columns),
        figsize=(1.7 * len(columns), 1.8 * layers + 0.6),
        squeeze=False,
        layout="constrained",
    )
    for row in range(layers):
        for col, query in enumerate(columns):
            ax = axes[row, col]
            heat = maps[row].mean(axis=0) if query is None else maps[row, query]
            ax.imshow(picture)
            overlay = ax.imshow(
                heat / heat.max(), cmap="inferno", alpha=0.55, extent=(0, width, height, 0), vmin=0, vmax=1
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("all queries" if query is None else f"query {query}", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"cross-attn {row + 1}", fontsize=9)
    fig.colorbar(overlay, ax=axes, shrink=0.6, label="attention / its map's maximum")
    fig.suptitle(_clean(title))
    return _finish(fig)


def hard_negatives(
    similarity: torch.Tensor, image_labels: Sequence[str], texts: Sequence[str], picked: torch.Tensor
) -> Figure:
    """ITM's hard-negative draw: the probability of each wrong text for each image, and the one drawn.

    `similarity` (B, B) holds ITC logits (cosine / temperature); the probabilities are the softmax of each
    row with the true pair excluded, as `sample_hard_negatives` draws; `picked` (B,) are its draws.
    """
    batch = similarity.shape[0]
    if similarity.shape != (batch, batch) or len(image_labels) != batch or len(texts) != batch:
        raise ValueError("give a square similarity and one image label and one text per row")
    eye = torch.eye(batch, dtype=torch.bool)
    probabilities = similarity.float().masked_fill(eye, float("-inf")).softmax(dim=1).cpu().numpy()
    fig, ax = plt.subplots(figsize=(max(6.5, 1.3 * batch + 3), 0.8 * batch + 2.5), layout="constrained")
    mesh = ax.imshow(probabilities, cmap="magma", vmin=0, vmax=1)
    fig.colorbar(mesh, ax=ax, shrink=0.8, label="P(drawn as hard negative)")
    for row in range(batch):
        ax.text(row, row, "positive", ha="center", va="center", fontsize=8, color="white")
        column = int(picked[row])
        ax.add_patch(plt.Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="#2ca02c", lw=2.5))
    wrapped = [textwrap.fill(_clean(text), 22, max_lines=3, placeholder=" …") for text in texts]
    ax.set_xticks(range(batch), wrapped, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(batch), [_clean(label) for label in image_labels], fontsize=9)
    ax.set_title("ITM hard negatives: softmax of ITC similarity\noff the positive (green box: the one drawn)")
    return _finish(fig)


def loss_curves(history: Mapping[str, Sequence[float]], title: str = "pretraining losses") -> Figure:
    """One panel per objective: its loss at each optimisation step."""
    if not history or any(len(values) == 0 for values in history.values()):
        raise ValueError("history needs at least one objective with at least one recorded loss")
    fig, axes = plt.subplots(
        1, len(history), figsize=(3.3 * len(history), 3), squeeze=False, layout="constrained"
    )
    for ax, (name, values) in zip(axes[0], history.items(), strict=True):
        ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, color="#3b75af")
        ax.set_title(name.upper() if name != "total" else "total")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("loss")
    fig.suptitle(_clean(title))
    return _finish(fig)

"""Figures of the Q-Former at work: its attention masks, where its queries look, hard negatives, loss curves.

Like `helpers.viz`, each function returns a closed `Figure` (a notebook shows it as a cell's value, a
script saves it) and draws text with mathtext off.
"""

from __future__ import annotations

import math
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
    fig, axes = plt.subplots(1, 3, figsize=(15, 6.2))
    fig.subplots_adjust(left=0.06, right=0.99, top=0.83, bottom=0.14, wspace=0.25)
    for ax, kind in zip(axes, MASK_KINDS, strict=True):
        mask = qformer_attention_mask(kind, num_queries, text_mask)[0].numpy()
        ax.imshow(mask, cmap="Greys", vmin=0, vmax=1.4)
        ax.axhline(num_queries - 0.5, color="#e69138", lw=1.5)
        ax.axvline(num_queries - 0.5, color="#e69138", lw=1.5)
        step = max(1, size // 24)
        ax.set_xticks(range(0, size, step), labels[::step], rotation=90, fontsize=7)
        ax.set_yticks(range(0, size, step), labels[::step], fontsize=7)
        ax.set_title(_MASK_TITLES[kind], fontsize=10)
        ax.set_xlabel("attended (keys)")
    axes[0].set_ylabel("attending (queries of attention)")
    fig.suptitle(
        f"Q-Former self-attention masks: {num_queries} learned queries, then the text (grey = may attend;"
        " ITG starts the text with [DEC] instead of [CLS])"
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
            ax.imshow(
                heat / heat.max(), cmap="inferno", alpha=0.55, extent=(0, width, height, 0), vmin=0, vmax=1
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("all queries" if query is None else f"query {query}", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"cross-attn {row + 1}", fontsize=9)
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
    fig, ax = plt.subplots(figsize=(1.3 * batch + 3, 0.8 * batch + 2), layout="constrained")
    mesh = ax.imshow(probabilities, cmap="magma", vmin=0, vmax=1)
    fig.colorbar(mesh, ax=ax, shrink=0.8, label="P(drawn as hard negative)")
    for row in range(batch):
        ax.text(row, row, "positive", ha="center", va="center", fontsize=8, color="white")
        column = int(picked[row])
        ax.add_patch(plt.Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="#2ca02c", lw=2.5))
    ax.set_xticks(range(batch), [_clean(text)[:18] for text in texts], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(batch), [_clean(label) for label in image_labels], fontsize=9)
    ax.set_title("ITM hard negatives: softmax of ITC similarity off the positive (green: drawn)")
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

"""Every matplotlib figure the notebooks show, so notebook cells stay one-line calls.

Each function returns a `matplotlib.figure.Figure` and never calls `plt.show()`: a notebook displays the
figure by leaving it as a cell's last expression, a script saves it with `fig.savefig(...)`. Figures are
created through pyplot (which registers Jupyter's inline renderer) and closed again before they are
returned, so Jupyter shows each one exactly once and long sessions do not pile figures up in pyplot.

Model outputs are shown as they come: a model may write `$` signs or stray control characters, so all text
is drawn with mathtext off and unprintable characters replaced. While the offline model is loaded, every
figure says so in a footer (`helpers.offline.figure_note`).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.patches import Rectangle
from PIL import Image

from helpers import offline
from helpers.backends.base import RankedText
from helpers.images import ImageSource, load_image

ImageLike = ImageSource | np.ndarray

_CAPTION_WIDTH = 46
_LABEL_WIDTH = 32
_ANSWER_WIDTH = 60
_MAX_LINES = 6
_LINE_INCHES = 0.18


def show_captions(
    images: Sequence[ImageLike],
    captions: Sequence[str | Sequence[str]],
    titles: Sequence[str] | None = None,
    ncols: int = 3,
) -> Figure:
    """Images in a grid, each labelled and with its caption(s) wrapped underneath.

    `captions` has one entry per image, a string or a list of strings; a flat list of k strings per image
    (what `model.caption(images, settings)` returns with `num_captions=k`) is grouped image by image.
    """
    loaded = [_as_picture(image) for image in images]
    if not loaded:
        raise ValueError("show_captions needs at least one image")
    grouped = _group_captions(captions, len(loaded))
    labels = _titles(titles, len(loaded))
    ncols = max(1, min(ncols, len(loaded)))
    nrows = math.ceil(len(loaded) / ncols)
    texts = [_caption_block(group) for group in grouped]
    lines = max(text.count("\n") + 1 for text in texts)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.2 * ncols, nrows * (3.6 + 0.22 * lines)), squeeze=False, layout="constrained"
    )
    for index, ax in enumerate(axes.flat):
        if index >= len(loaded):
            ax.remove()
            continue
        _draw_image(ax, loaded[index], labels[index])
        ax.set_xlabel(texts[index], fontsize=9, loc="left", parse_math=False)
    return _finish(fig)


def show_answers(image: ImageLike, qa_pairs: Sequence[tuple[str, str]], title: str = "image") -> Figure:
    """An image beside its questions (or instructions) and the model's answers, for side-by-side reading."""
    pairs = [(str(question), str(answer)) for question, answer in qa_pairs]
    blocks = [
        (_wrap(f"Q: {question}", _ANSWER_WIDTH), _wrap(f"A: {answer}", _ANSWER_WIDTH))
        for question, answer in pairs
    ]
    line_count = sum(q.count("\n") + a.count("\n") + 3 for q, a in blocks)  # +1 blank line between pairs
    height = max(3.5, _LINE_INCHES * line_count + 0.8)
    fig, (image_ax, text_ax) = plt.subplots(
        1, 2, figsize=(11, height), gridspec_kw={"width_ratios": [1, 1.5]}, layout="constrained"
    )
    _draw_image(image_ax, _as_picture(image), title)
    text_ax.axis("off")
    y = 1.0
    step = _LINE_INCHES / (height - 0.3)  # one line of 10-point text, in axes coordinates
    for question, answer in blocks:
        text_ax.text(0, y, question, va="top", fontweight="bold", fontsize=10, parse_math=False)
        y -= step * (question.count("\n") + 1)
        text_ax.text(0, y, answer, va="top", fontsize=10, color="#1f4e79", parse_math=False)
        y -= step * (answer.count("\n") + 2)
    if not blocks:
        text_ax.text(0, 1, "(no questions)", va="top", fontsize=10)
    return _finish(fig)


def similarity_heatmap(
    scores: Any,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """An images x texts score matrix with every value written in its cell and each row's best text boxed.

    `scores` is a torch tensor or anything numpy accepts, shaped (len(row_labels), len(col_labels)).
    Reading it row by row is image-to-text retrieval; column by column, text-to-image retrieval.
    """
    values = _as_matrix(scores)
    if values.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"scores has shape {values.shape} but there are {len(row_labels)} row labels and "
            f"{len(col_labels)} column labels; pass one label per row and per column"
        )
    nrows, ncols = values.shape
    fig, ax = plt.subplots(
        figsize=(max(5.0, 1.6 * ncols + 2.5), max(3.0, 0.7 * nrows + 2.0)), layout="constrained"
    )
    low = float(np.nanmin(values)) if vmin is None else vmin
    high = float(np.nanmax(values)) if vmax is None else vmax
    if high <= low:
        low, high = low - 0.5, high + 0.5
    mesh = ax.imshow(values, cmap="viridis", vmin=low, vmax=high, aspect="auto")
    fig.colorbar(mesh, ax=ax, shrink=0.85)
    for row in range(nrows):
        for col in range(ncols):
            value = values[row, col]
            bright = (value - low) / (high - low) > 0.6
            ax.text(
                col,
                row,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=9,
                color="black" if bright else "white",
                parse_math=False,
            )
        if _stands_out(values[row]):
            best = int(np.nanargmax(values[row]))
            ax.add_patch(
                Rectangle((best - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="#d62728", linewidth=2.5)
            )
    ax.set_xticks(range(ncols), [_wrap(label, 16, 3) for label in col_labels], fontsize=8)
    ax.set_yticks(range(nrows), [_wrap(label, 20, 2) for label in row_labels], fontsize=9)
    for label in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
        label.set_parse_math(False)
    ax.set_xlabel("texts (red box: each image's best text, where one stands out at this precision)")
    ax.set_ylabel("images")
    ax.set_title(_clean(title), parse_math=False)
    return _finish(fig)


def show_ranking(image: ImageLike, ranked: Sequence[RankedText], title: str = "image") -> Figure:
    """An image beside its candidate texts in final order, with ITC and ITM scores as bar charts.

    Texts that ITM re-ranked (ITC's top k) have an ITM bar and a bold label; the rest keep ITC's order and
    say "not re-ranked". Each label also gives the text's rank under ITC alone, so the effect of the
    re-ranking is visible at a glance.
    """
    if not ranked:
        raise ValueError("show_ranking needs at least one RankedText")
    itc_order = sorted(range(len(ranked)), key=lambda i: ranked[i].itc, reverse=True)
    itc_rank = {position: rank + 1 for rank, position in enumerate(itc_order)}
    labels = [
        _wrap(f"{i + 1}. {item.text}", _LABEL_WIDTH, 2) + f"  (ITC #{itc_rank[i]})"
        for i, item in enumerate(ranked)
    ]
    reranked = [item.itm is not None for item in ranked]
    positions = np.arange(len(ranked))
    fig, (image_ax, itc_ax, itm_ax) = plt.subplots(
        1,
        3,
        figsize=(14, max(3.5, 0.5 * len(ranked) + 1.5)),
        gridspec_kw={"width_ratios": [1.1, 1, 1]},
        layout="constrained",
    )
    _draw_image(image_ax, _as_picture(image), title)

    itc_colors = ["#1f77b4" if flag else "#b0b0b0" for flag in reranked]
    itc_ax.barh(positions, [item.itc for item in ranked], color=itc_colors)
    itc_ax.set_yticks(positions, labels, fontsize=8)
    for label, flag in zip(itc_ax.get_yticklabels(), reranked, strict=True):
        label.set_parse_math(False)
        label.set_fontweight("bold" if flag else "normal")
    itc_ax.invert_yaxis()
    itc_ax.axvline(0, color="black", linewidth=0.8)
    itc_ax.set_title("ITC: cosine similarity (all texts)")
    itc_ax.set_xlabel("best query · text [CLS] cosine")

    itm_ax.barh(positions, [item.itm or 0.0 for item in ranked], color="#ff7f0e")
    itm_ax.set_yticks(positions, [""] * len(ranked))
    itm_ax.set_ylim(itc_ax.get_ylim())
    itm_ax.set_xlim(0, 1)
    for position, item in zip(positions, ranked, strict=True):
        note = f"{item.itm:.2f}" if item.itm is not None else "not re-ranked"
        itm_ax.text((item.itm or 0.0) + 0.02, position, note, va="center", fontsize=8, color="#555555")
    top_k = sum(reranked)
    itm_ax.set_title(f"ITM: P(match), ITC's top {top_k} re-ranked")
    itm_ax.set_xlabel("match probability")
    return _finish(fig)


def paper_comparison(rows: Sequence[Any], title: str = "This run against the paper") -> Figure:
    """One bar pair per metric: the paper's number and this run with its bootstrap interval.

    `rows` are `helpers.evaluation.comparison.ComparisonRow`s; metrics the paper does not report show this run alone.
    """
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    positions = np.arange(len(rows))
    runs = np.array([row.this_run for row in rows])
    errors = np.array(
        [[row.this_run - row.ci_low for row in rows], [row.ci_high - row.this_run for row in rows]]
    )
    papers = [np.nan if row.paper is None else row.paper for row in rows]
    ax.barh(positions + 0.2, papers, height=0.4, color="#bbbbbb", label="paper")
    ax.barh(
        positions - 0.2, runs, height=0.4, xerr=errors, color="#3b75af", capsize=3, label="this run (95% CI)"
    )
    ax.set_yticks(positions, [f"{row.dataset} {row.metric} (N={row.n})" for row in rows])
    ax.invert_yaxis()
    ax.set_xlabel("score (paper scale: %, CIDEr x100)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _finish(fig)


# ---- helpers --------------------------------------------------------------------------------------------
def training_curves(history: Sequence[dict[str, Any]], title: str = "Fine-tuning") -> Figure:
    """Training loss per step (and its ITC/ITM parts), learning rate, and validation metrics per epoch.

    `history` is `TrainingResult.history`, or the records of a run's `log.jsonl`.
    """
    steps = [record for record in history if "loss" in record]
    validation = [record for record in history if record.get("split") == "val"]
    panels = 2 if validation else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.6), squeeze=False)
    loss_ax = axes[0][0]
    x = [record["step"] for record in steps]
    for key in ("loss", "itc", "itm"):
        if steps and key in steps[0]:
            loss_ax.plot(
                x, [record[key] for record in steps], marker=".", label="total" if key == "loss" else key
            )
    loss_ax.set_xlabel("optimizer step")
    loss_ax.set_ylabel("training loss")
    loss_ax.set_title(title)
    loss_ax.legend(loc="upper right", fontsize=8)
    lr_ax = loss_ax.twinx()
    lr_ax.plot(x, [record["lr"] for record in steps], color="#999999", linestyle=":", label="learning rate")
    lr_ax.set_ylabel("learning rate", color="#777777")
    if validation:
        metric_ax = axes[0][1]
        metrics = [key for key in validation[0] if key not in ("step", "epoch", "split")]
        epochs = [record["epoch"] + 1 for record in validation]
        for key in metrics:
            metric_ax.plot(epochs, [record[key] for record in validation], marker="o", label=key)
        # Scores are 0 or more; a flat 0 would otherwise get an axis of +-1e-15.
        highest = max((record[key] for record in validation for key in metrics), default=0.0)
        metric_ax.set_ylim(0, max(1.0, 1.1 * highest))
        metric_ax.set_xticks(sorted(set(epochs)))
        metric_ax.set_ylabel("score")
        metric_ax.set_xlabel("epoch")
        metric_ax.set_title("validation")
        metric_ax.legend(fontsize=8)
    fig.tight_layout()
    return _finish(fig)


def _finish(fig: Figure) -> Figure:
    """Mark offline figures, and detach the figure from pyplot so Jupyter displays it once, as the returned value."""
    note = offline.figure_note()
    if note is not None:
        _add_footer(fig, note)
    plt.close(fig)
    return fig


def _add_footer(fig: Figure, text: str, inches: float = 0.3) -> None:
    """Write `text` in a strip added under the figure, whatever its layout."""
    height = fig.get_figheight()
    fig.set_figheight(height + inches)
    style = {"fontsize": 9, "color": "#b00020", "style": "italic", "parse_math": False}
    if isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
        fig.supxlabel(text, **style)  # constrained layout makes room for it
        return
    fig.set_layout_engine("none")
    scale, strip = height / (height + inches), inches / (height + inches)
    for ax in fig.axes:  # the same place as before, above the new strip
        box = ax.get_position()
        ax.set_position((box.x0, box.y0 * scale + strip, box.width, box.height * scale))
    fig.text(0.5, strip / 2, text, ha="center", va="center", **style)


def _stands_out(row: np.ndarray) -> bool:
    """Whether a row's best value beats the runner-up as printed (2 decimals): no box for a tie like 0.00 / 0.00."""
    ordered = np.sort(np.round(row[~np.isnan(row)], 2))
    return len(ordered) == 1 or (len(ordered) > 1 and ordered[-1] > ordered[-2])


def _as_picture(image: ImageLike) -> np.ndarray | Image.Image:
    if isinstance(image, np.ndarray | Image.Image):
        return image
    return load_image(image)


def _as_matrix(scores: Any) -> np.ndarray:
    if hasattr(scores, "detach"):  # a torch tensor, possibly on a GPU or in half precision
        scores = scores.detach().float().cpu().numpy()
    values = np.asarray(scores, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"scores must be a 2-D (images x texts) matrix, got shape {values.shape}")
    return values


def _draw_image(ax: Axes, image: np.ndarray | Image.Image, label: str) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():  # a thin frame: toy scenes are white on white without one
        spine.set_edgecolor("#999999")
    ax.set_title(_clean(label), fontsize=11, parse_math=False)


def _titles(titles: Sequence[str] | None, count: int) -> list[str]:
    if titles is None:
        return [f"image {index + 1}" for index in range(count)]
    if len(titles) != count:
        raise ValueError(f"titles has {len(titles)} entries for {count} images; give one per image")
    return [str(title) for title in titles]


def _group_captions(captions: Sequence[str | Sequence[str]], count: int) -> list[list[str]]:
    if isinstance(captions, str):
        captions = [captions]
    if len(captions) == count:
        return [[entry] if isinstance(entry, str) else [str(text) for text in entry] for entry in captions]
    if captions and all(isinstance(entry, str) for entry in captions) and len(captions) % count == 0:
        per_image = len(captions) // count
        return [list(captions[i * per_image : (i + 1) * per_image]) for i in range(count)]
    raise ValueError(
        f"captions has {len(captions)} entries for {count} images; give one entry (a string or a list of "
        "strings) per image, or k strings per image in image order"
    )


def _caption_block(captions: list[str]) -> str:
    if len(captions) == 1:
        return _wrap(captions[0], _CAPTION_WIDTH)
    return "\n".join(_wrap(f"{n}. {text}", _CAPTION_WIDTH, 3) for n, text in enumerate(captions, 1))


def _clean(text: str) -> str:
    """Printable text only: generated text may hold control characters that fonts cannot draw."""
    return "".join(ch if ch.isprintable() else "\N{REPLACEMENT CHARACTER}" for ch in str(text)) or "(empty)"


def _wrap(text: str, width: int, max_lines: int = _MAX_LINES) -> str:
    return "\n".join(textwrap.wrap(_clean(text), width, max_lines=max_lines, placeholder=" …")) or "(empty)"

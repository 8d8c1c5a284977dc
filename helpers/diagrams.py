"""Block diagrams of BLIP-2: the architecture, the Q-Former's layers and the two pretraining stages.

Drawn with matplotlib boxes and arrows, with every parameter count taken from `helpers.variants` (the real
architectures counted on the meta device), so no number in a figure is typed in by hand. Frozen parts are
blue-grey and labelled "frozen", trained parts orange.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from torch import nn

from helpers.anatomy import qformer_attention_mask
from helpers.variants import VariantCount

FROZEN = "#c9d6e3"
TRAINED = "#f6b26b"
DATA = "#eeeeee"
OBJECTIVE = "#b6d7a8"


def _short(value: int) -> str:
    return f"{value / 1e9:.2f}B" if value >= 1e9 else f"{value / 1e6:.1f}M" if value >= 1e5 else f"{value:,}"


def _canvas(width: float, height: float, title: str) -> tuple[Figure, Axes]:
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=12, fontweight="bold")
    return fig, ax


def _box(ax: Axes, x: float, y: float, w: float, h: float, text: str, color: str, size: int = 9) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec="#444444", lw=1
        )
    )
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, wrap=True)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], text: str = "") -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color="#333333", lw=1.2))
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.12, text, ha="center", fontsize=8)


def _finish(fig: Figure) -> Figure:
    fig.tight_layout()
    plt.close(fig)
    return fig


def architecture(count: VariantCount) -> Figure:
    """BLIP-2 end to end for one variant: frozen image encoder, trained Q-Former and projection, frozen LLM."""
    fig, ax = _canvas(
        12, 3.9, f"BLIP-2 ({count.name}): {_short(count.trainable)} trained of {_short(count.total)}"
    )
    _box(ax, 0.2, 1.2, 1.4, 1.0, "image\n224 x 224", DATA)
    _box(
        ax,
        2.1,
        0.9,
        2.0,
        1.6,
        f"image encoder\nViT-g/14\n{_short(count['image encoder (ViT-g)'])}\nfrozen",
        FROZEN,
    )
    _box(ax, 4.7, 2.5, 2.2, 0.7, f"32 learned queries\n{count['learned queries']:,}", TRAINED, 8)
    _box(ax, 4.7, 0.9, 2.2, 1.4, f"Q-Former\n{_short(count['Q-Former layers'])}\ntrained", TRAINED)
    _box(ax, 7.4, 1.1, 1.3, 1.0, f"linear\nprojection\n{_short(count['projection to the LLM'])}", TRAINED, 8)
    _box(ax, 9.2, 0.9, 1.6, 1.4, f"LLM\n{_short(count['LLM'])}\nfrozen", FROZEN)
    _box(ax, 11.0, 1.3, 0.9, 0.6, "text", DATA)
    _box(ax, 8.75, 2.85, 2.5, 0.65, "text prompt (optional)\n'Question: ... Answer:'", DATA, 8)
    _arrow(ax, (10.0, 2.85), (10.0, 2.3))
    _arrow(ax, (1.6, 1.7), (2.1, 1.7))
    _arrow(ax, (4.1, 1.7), (4.7, 1.7), "patches")
    _arrow(ax, (5.8, 2.5), (5.8, 2.3))
    _arrow(ax, (6.9, 1.6), (7.4, 1.6), "32 x 768")
    _arrow(ax, (8.7, 1.6), (9.2, 1.6))
    _arrow(ax, (10.8, 1.6), (11.0, 1.6))
    ax.text(
        8.05,
        0.7,
        "soft visual prompt:\nplaced before the text prompt",
        ha="center",
        fontsize=8,
        style="italic",
    )
    return _finish(fig)


def qformer_layers(qformer: nn.Module, num_queries: int) -> Figure:
    """Two consecutive Q-Former layers, in the order they run: self-attention, cross-attention, feed-forward.

    `qformer` is a `Blip2QFormerModel` (a meta-device one is enough: only shapes are read). The queries (left
    column) and the text (right column) are two transformers that share each self-attention layer; only the
    queries read the image, through a cross-attention that sits between self-attention and the feed-forward
    block in every other layer. The Q-Former is this pair of layers repeated.
    """
    layers = list(qformer.encoder.layer)
    if not hasattr(layers[0], "intermediate"):
        raise ValueError("this Q-Former has no text side; pass the stage-1 (retrieval) model's Q-Former")
    crossing = [index for index, layer in enumerate(layers) if layer.has_cross_attention]
    if not crossing or len(crossing) == len(layers):
        raise ValueError("expected cross-attention in some layers but not all (every other layer in BLIP-2)")

    def size(*modules: nn.Module) -> str:
        return _short(sum(p.numel() for module in modules for p in module.parameters()))

    cross, plain = layers[crossing[0]], next(layer for layer in layers if not layer.has_cross_attention)
    width = qformer.config.hidden_size
    fig, ax = _canvas(11, 8.6, f"Q-Former: {len(layers)} layers, width {width}, run bottom to top")
    queries, text = (2.4, 3.3), (6.2, 3.3)  # column x and width
    block = 0.6

    def column_box(column: tuple[float, float], y: float, label: str, color: str) -> None:
        _box(ax, column[0], y, column[1], block, label, color, 10)

    def shared_box(y: float, label: str) -> None:
        _box(ax, queries[0], y, text[0] + text[1] - queries[0], block, label, TRAINED, 10)

    def up(column: tuple[float, float], low: float, high: float) -> None:
        x = column[0] + column[1] / 2
        _arrow(ax, (x, low), (x, high))

    column_box(queries, 0.3, f"{num_queries} learned queries ({num_queries} x {width})", TRAINED)
    column_box(text, 0.3, "text tokens ([CLS] or [DEC] first)", DATA)
    rows = [1.35, 2.35, 3.35, 4.75, 5.75]
    shared_box(rows[0], f"self-attention, shared by queries and text ({size(cross.attention)})")
    column_box(queries, rows[1], f"cross-attention to the image ({size(cross.crossattention)})", "#e69138")
    column_box(
        queries,
        rows[2],
        f"feed-forward, queries ({size(cross.intermediate_query, cross.output_query)})",
        TRAINED,
    )
    column_box(text, rows[2], f"feed-forward, text ({size(cross.intermediate, cross.output)})", TRAINED)
    shared_box(rows[3], f"self-attention, shared ({size(plain.attention)})")
    column_box(
        queries,
        rows[4],
        f"feed-forward, queries ({size(plain.intermediate_query, plain.output_query)})",
        TRAINED,
    )
    column_box(text, rows[4], f"feed-forward, text ({size(plain.intermediate, plain.output)})", TRAINED)
    column_box(queries, 6.9, f"query outputs ({num_queries} x {width})", DATA)
    column_box(text, 6.9, "text outputs ([CLS] for ITC)", DATA)
    for low, high in [
        (0.3, rows[0]),
        (rows[0], rows[1]),
        (rows[1], rows[2]),
        (rows[2], rows[3]),
        (rows[3], rows[4]),
        (rows[4], 6.9),
    ]:
        up(queries, low + block, high)
    for low, high in [
        (0.3, rows[0]),
        (rows[0], rows[2]),
        (rows[2], rows[3]),
        (rows[3], rows[4]),
        (rows[4], 6.9),
    ]:
        up(text, low + block, high)
    _box(ax, 0.2, rows[1] - 0.1, 1.6, block + 0.2, "image features\n(frozen ViT)", FROZEN, 9)
    _arrow(ax, (1.8, rows[1] + block / 2), (queries[0], rows[1] + block / 2))
    for label, low, high in (
        (f"even layers\n0, 2, ... {crossing[-1]}", rows[0], rows[2] + block),
        (f"odd layers\n1, 3, ... {len(layers) - 1}", rows[3], rows[4] + block),
    ):
        ax.plot([9.75, 9.85, 9.85, 9.75], [low, low, high, high], color="#555555", lw=1)
        ax.text(10.45, (low + high) / 2, label, ha="center", va="center", fontsize=10)
    ax.text(
        5.5,
        8.05,
        f"the pair repeats {len(layers) // 2} times; queries and text share only the self-attention layers",
        ha="center",
        fontsize=10,
        style="italic",
    )
    return _finish(fig)


def stage1(count: VariantCount, num_queries: int = 6, num_tokens: int = 5) -> Figure:
    """Stage 1: the frozen image encoder feeds the Q-Former, trained with ITC, ITM and ITG at once.

    Each objective is drawn with the self-attention mask it uses (built by `qformer_attention_mask`, with a
    few queries and tokens so that the cells are visible).
    """
    fig = plt.figure(figsize=(12, 5.2))
    ax = fig.add_axes((0, 0, 1, 0.92))
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 5)
    ax.axis("off")
    fig.suptitle(
        f"Stage 1: vision-language representation learning ({_short(count.trainable)} trained, "
        f"{_short(count.frozen)} frozen)",
        fontsize=12,
        fontweight="bold",
    )
    _box(ax, 0.2, 2.0, 1.2, 0.9, "image", DATA)
    _box(ax, 1.8, 1.7, 1.8, 1.5, f"image encoder\n{_short(count['image encoder (ViT-g)'])}\nfrozen", FROZEN)
    qformer = count["Q-Former layers"] + count["Q-Former text embeddings"] + count["learned queries"]
    _box(ax, 4.1, 1.2, 2.4, 2.5, f"Q-Former\nqueries + text\n{_short(qformer)}\ntrained", TRAINED)
    _box(ax, 4.1, 0.3, 2.4, 0.6, "text: 'a cat on a sofa'", DATA, 8)
    _arrow(ax, (1.4, 2.45), (1.8, 2.45))
    _arrow(ax, (3.6, 2.45), (4.1, 2.45))
    _arrow(ax, (5.3, 0.9), (5.3, 1.2))
    heads = {
        "itc": f"ITC: contrastive\nuni-modal mask\nprojections {_short(count['ITC projections'])}",
        "itm": f"ITM: match / no match\nbi-directional mask\nhard negatives\nhead {count['ITM head']:,}",
        "itg": f"ITG: generate the text\nmulti-modal causal mask\nhead {_short(count['ITG head (tied decoder not counted)'])}",
    }
    text_mask = torch.ones(1, num_tokens, dtype=torch.long)
    for index, (kind, label) in enumerate(heads.items()):
        y = 3.5 - 1.45 * index
        _box(ax, 7.1, y, 2.4, 1.2, label, OBJECTIVE, 8)
        _arrow(ax, (6.5, 2.45), (7.1, y + 0.6))
        inset = ax.inset_axes((9.8, y, 1.2, 1.2), transform=ax.transData)
        inset.imshow(
            qformer_attention_mask(kind, num_queries, text_mask)[0].numpy(), cmap="Greys", vmin=0, vmax=1.6
        )
        inset.set_xticks([])
        inset.set_yticks([])
        inset.axhline(num_queries - 0.5, color="#e69138", lw=1)
        inset.axvline(num_queries - 0.5, color="#e69138", lw=1)
    ax.text(10.4, 4.85, "mask: queries | text", ha="center", fontsize=8)
    plt.close(fig)
    return fig


def stage2(decoder_only: VariantCount, encoder_decoder: VariantCount) -> Figure:
    """Stage 2: the projected queries become a soft visual prompt for a frozen LLM, of either kind."""
    fig, axes = plt.subplots(2, 1, figsize=(12, 5.4))
    panels = (
        (axes[0], decoder_only, "decoder-only LLM (OPT)"),
        (axes[1], encoder_decoder, "encoder-decoder LLM (Flan-T5)"),
    )
    for ax, count, label in panels:
        ax.set_xlim(0, 12)
        ax.set_ylim(0, 2.2)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(
            f"{label}, {count.name}: {_short(count.trainable)} trained, {_short(count.frozen)} frozen",
            fontsize=10,
        )
        _box(
            ax,
            0.1,
            0.6,
            1.5,
            1.0,
            f"image encoder\n{_short(count['image encoder (ViT-g)'])}\nfrozen",
            FROZEN,
            8,
        )
        _box(ax, 2.0, 0.6, 1.5, 1.0, f"Q-Former\n{_short(count['Q-Former layers'])}\ntrained", TRAINED, 8)
        _box(ax, 3.9, 0.7, 1.2, 0.8, f"FC\n{_short(count['projection to the LLM'])}", TRAINED, 8)
        _arrow(ax, (1.6, 1.1), (2.0, 1.1))
        _arrow(ax, (3.5, 1.1), (3.9, 1.1))
        _arrow(ax, (5.1, 1.1), (5.5, 1.1), "")
        if count is decoder_only:
            _box(ax, 5.5, 0.7, 1.9, 0.8, "soft visual prompt\n+ text", DATA, 8)
            _box(ax, 7.8, 0.5, 2.2, 1.2, f"LLM decoder\n{_short(count['LLM'])}\nfrozen", FROZEN, 8)
            _box(ax, 10.4, 0.8, 1.5, 0.6, "text", DATA, 8)
            _arrow(ax, (7.4, 1.1), (7.8, 1.1))
            _arrow(ax, (10.0, 1.1), (10.4, 1.1))
        else:
            _box(ax, 5.5, 0.7, 1.8, 0.8, "soft visual prompt\n+ prefix text", DATA, 8)
            _box(
                ax, 7.6, 0.5, 1.6, 1.2, f"LLM encoder\nand decoder\n{_short(count['LLM'])}\nfrozen", FROZEN, 8
            )
            _box(ax, 9.6, 0.8, 2.3, 0.6, "suffix text", DATA, 8)
            _arrow(ax, (7.3, 1.1), (7.6, 1.1))
            _arrow(ax, (9.2, 1.1), (9.6, 1.1))
    return _finish(fig)

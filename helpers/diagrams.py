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
        12, 3.6, f"BLIP-2 ({count.name}): {_short(count.trainable)} trained of {_short(count.total)}"
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
    _arrow(ax, (1.6, 1.7), (2.1, 1.7))
    _arrow(ax, (4.1, 1.7), (4.7, 1.7), "patches")
    _arrow(ax, (5.8, 2.5), (5.8, 2.3))
    _arrow(ax, (6.9, 1.6), (7.4, 1.6), "32 x 768")
    _arrow(ax, (8.7, 1.6), (9.2, 1.6))
    _arrow(ax, (10.8, 1.6), (11.0, 1.6))
    ax.text(8.05, 0.6, "soft visual prompt", ha="center", fontsize=8, style="italic")
    return _finish(fig)


def qformer_layers(qformer: nn.Module, num_queries: int) -> Figure:
    """The Q-Former layer by layer: shared self-attention, cross-attention every other layer, two FFNs.

    `qformer` is a `Blip2QFormerModel` (a meta-device one is enough: only shapes are read). The queries
    (left) and the text (right) are two transformers that share each self-attention layer; only the
    queries read the image, through the cross-attention layers.
    """
    layers = list(qformer.encoder.layer)
    if not hasattr(layers[0], "intermediate"):
        raise ValueError("this Q-Former has no text side; pass the stage-1 (retrieval) model's Q-Former")

    def size(*modules: nn.Module) -> str:
        return _short(sum(p.numel() for module in modules for p in module.parameters()))

    row = 0.62
    height = 1.6 + row * len(layers)
    fig, ax = _canvas(8.5, height, f"Q-Former: {len(layers)} layers, width {qformer.config.hidden_size}")
    _box(ax, 0.3, 0.15, 3.0, 0.45, f"{num_queries} learned queries", TRAINED, 8)
    _box(ax, 4.6, 0.15, 3.0, 0.45, "text tokens ([CLS] / [DEC] ...)", DATA, 8)
    for index, layer in enumerate(layers):
        y = 0.8 + row * index
        _box(
            ax,
            0.3,
            y,
            7.3,
            0.22,
            f"layer {index}: self-attention, shared {size(layer.attention)}",
            TRAINED,
            7,
        )
        if layer.has_cross_attention:
            _box(ax, 0.3, y + 0.27, 1.45, 0.25, f"cross-attn {size(layer.crossattention)}", "#e69138", 6)
        _box(
            ax,
            1.85,
            y + 0.27,
            1.45,
            0.25,
            f"FFN query {size(layer.intermediate_query, layer.output_query)}",
            TRAINED,
            6,
        )
        _box(ax, 4.6, y + 0.27, 3.0, 0.25, f"FFN text {size(layer.intermediate, layer.output)}", TRAINED, 6)
    ax.text(
        0.3,
        height - 0.4,
        "dark orange: cross-attention to the frozen ViT's image features, every other layer (queries only)",
        ha="left",
        fontsize=7,
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

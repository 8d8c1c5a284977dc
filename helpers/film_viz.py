"""The toy world's pretraining film on screen: one frame per figure, a filmstrip, a GIF and a step slider.

Frames come from `helpers.toyworld.film` (the shipped run's films lie next to its weights). Every frame of a
film is drawn in the same axes: the 2-D projection uses one basis (principal axes of the last frame), the
colour scales are fixed, and the loss curves mark the frame's step. `checkpoint_views` draws the same views
(attention, ITC matrix, projection) for a real checkpoint's final state.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.figure import Figure
from PIL import Image
from torch.nn import functional as F

from helpers.anatomy import recorded_cross_attentions
from helpers.atomic import staged_file
from helpers.toyworld import film as films
from helpers.toyworld import world
from helpers.viz import _clean, _finish

COLOURS = {"red": "#d62728", "green": "#2ca02c", "blue": "#1f77b4", "yellow": "#e6b800"}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
ATTENTION_TOP = 0.2
"""Top of the attention colour scale in every frame: uniform attention over 16 patches is 0.0625, and a query
on the objects of a three-object scene gives each of their patches about 0.12."""
ITM_GAP = 0.5
"""Mean P(match) by which ITM must rank true pairs above their hard negatives for `milestones`."""
SMOOTHING = 25
"""Steps in the moving average drawn over each loss curve (the raw curve stays visible, faint)."""


def smooth(values: Sequence[float], window: int = SMOOTHING) -> np.ndarray:
    """Moving average over `window` steps (shorter at the start), as long as `values`."""
    values = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    return (sums[ends] - sums[starts]) / (ends - starts)


def projection_basis(film: films.Film) -> tuple[np.ndarray, np.ndarray]:
    """(mean, 2 principal axes) of the last frame's image and text embeddings: one basis for every frame."""
    points = np.concatenate(_points(film, -1))
    mean = points.mean(0)
    _, _, axes = np.linalg.svd(points - mean, full_matrices=False)
    return mean, axes[:2]


def _points(film: films.Film, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Each probe image's embedding (its query closest to its own caption, the one ITC scores) and each text's."""
    images = film.arrays["image_embeds"][frame].astype(np.float32)  # (scenes, queries, dim)
    texts = film.arrays["text_embeds"][frame].astype(np.float32)
    best = np.einsum("sqd,sd->sq", images, texts).argmax(1)
    return images[np.arange(len(images)), best], texts


def _image_of(film: films.Film, index: int) -> Image.Image:
    """A probe scene of the film, regenerated from its seed (the film stores captions, not pixels)."""
    scene = world.retrieval_set(film.meta["seed"], "val", len(film.meta["probe_captions"]))[index]
    if scene.caption() != film.meta["probe_captions"][index]:
        raise ValueError(
            "the film's probe scenes no longer match the world's; re-record it with `make toyworld`"
        )
    return world.render(scene)


def _loss_panel(ax: plt.Axes, film: films.Film, step: int) -> None:
    for colour, (name, values) in zip(PALETTE, film.losses.items(), strict=False):
        steps = np.arange(1, len(values) + 1)
        ax.plot(steps, values, color=colour, alpha=0.2, lw=0.8)
        ax.plot(steps, smooth(values), color=colour, lw=1.6, label=name.upper() if name != "lm" else "LM")
    ax.axvline(max(step, 1), color="black", lw=1.2, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("step (log scale)")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    ax.set_title(f"losses ({SMOOTHING}-step average); dashed: step {step}", fontsize=9)


def _attention_grid(film: films.Film, frame: int, scene: int) -> np.ndarray:
    """(queries, grid, grid) attention of each query on one probe scene, averaged over cross-attention layers."""
    attention = film.arrays["attention"][frame, :, scene].astype(np.float32).mean(0)
    grid = int(np.sqrt(attention.shape[-1]))
    return attention.reshape(-1, grid, grid)


def stage1_frame(film: films.Film, frame: int, scene: int = 0, colour_by: str = "colour") -> Figure:
    """One stage-1 snapshot: each query's attention, ITC matrix, projection, ITM against hard negatives,
    attribute probes and the losses, with the step marked."""
    frame = _check(film, 1, frame)
    step = film.steps[frame]
    fig = plt.figure(figsize=(15, 8.4), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.35])
    _draw_attention(top, film, frame, scene)
    axes = bottom.subplots(1, 4, width_ratios=[1.1, 1.1, 1, 1.2])
    _draw_itc(axes[0], film, frame)
    _draw_projection(axes[1], film, frame, colour_by, projection_basis(film))
    _draw_itm(axes[2], film, frame)
    _loss_panel(axes[3], film, step)
    fig.suptitle(
        f"{film.meta['run']}: stage 1 at step {step} of {film.steps[-1]}  (frame {frame + 1}/{len(film.steps)})"
    )
    plt.close(fig)
    return fig


def _draw_attention(subfig, film: films.Film, frame: int, scene: int) -> None:
    maps = _attention_grid(film, frame, scene)
    picture = np.asarray(_image_of(film, scene))
    axes = subfig.subplots(1, len(maps) + 1)
    axes[0].imshow(picture)
    axes[0].set_title(textwrap.fill(_clean(film.meta["probe_captions"][scene]), 20), fontsize=8)
    lift = films.object_lift(film, frame)
    for query, (ax, heat) in enumerate(zip(axes[1:], maps, strict=True)):
        ax.imshow(picture)
        ax.imshow(heat, cmap="inferno", alpha=0.6, extent=(0, 224, 224, 0), vmin=0, vmax=ATTENTION_TOP)
        ax.set_title(f"query {query}\nobject lift {lift[query]:.1f}", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    accuracy = film.arrays["probe_accuracy"][frame]
    probes = ", ".join(
        f"{name} {value:.0%}" for name, value in zip(film.meta["attributes"], accuracy, strict=True)
    )
    subfig.suptitle(
        "where each query looks (cross-attention over the 16 patches, both layers averaged); "
        f"linear probes from the queries: {probes}",
        fontsize=9,
    )


def _draw_itc(ax: plt.Axes, film: films.Film, frame: int) -> None:
    itc = film.arrays["itc"][frame].astype(np.float32)
    ax.imshow(itc, cmap="viridis", vmin=-1, vmax=1)
    best = itc.argmax(1)
    ax.scatter(best, np.arange(len(itc)), marker="x", color="white", s=14)
    ax.set_title(
        f"ITC: probe images x their captions\n(x: best caption; top-1 {films.itc_top1(film, frame):.0%})",
        fontsize=9,
    )
    ax.set_xlabel("caption")
    ax.set_ylabel("image")


def _draw_projection(
    ax: plt.Axes, film: films.Film, frame: int, colour_by: str, basis: tuple[np.ndarray, np.ndarray]
) -> None:
    mean, axes = basis
    images, texts = (points @ axes.T - mean @ axes.T for points in _points(film, frame))
    values = [attributes[colour_by] for attributes in film.meta["probe_attributes"]]
    options = list(world.ATTRIBUTES[colour_by])
    colours = [COLOURS.get(value, PALETTE[options.index(value) % len(PALETTE)]) for value in values]
    for (ix, iy), (tx, ty) in zip(images, texts, strict=True):
        ax.plot([ix, tx], [iy, ty], color="#bbbbbb", lw=0.6, zorder=1)
    ax.scatter(images[:, 0], images[:, 1], c=colours, marker="o", s=28, zorder=2)
    ax.scatter(texts[:, 0], texts[:, 1], c=colours, marker="^", s=28, edgecolors="black", lw=0.4, zorder=2)
    ax.set_xlim(-1.1, 1.1)
    ax.set_ylim(-1.1, 1.1)
    ax.set_xticks([])
    ax.set_yticks([])
    handles = [
        plt.Line2D(
            [], [], ls="", marker="s", color=COLOURS.get(value, PALETTE[i % len(PALETTE)]), label=value
        )
        for i, value in enumerate(options)
    ]
    ax.legend(handles=handles, fontsize=7, loc="lower right", title=colour_by, title_fontsize=7)
    ax.set_title(
        "image (o) and caption (^) embeddings\n(one 2-D basis for every frame; grey: true pair)", fontsize=9
    )


def _draw_itm(ax: plt.Axes, film: films.Film, frame: int) -> None:
    positive = film.arrays["itm_positive"][frame].astype(np.float32)
    negative = film.arrays["itm_negative"][frame].astype(np.float32)
    rows = np.arange(len(positive))
    ax.scatter(positive, rows, color="#2ca02c", s=16, label="true caption")
    ax.scatter(negative, rows, color="#d62728", s=16, marker="x", label="hardest wrong caption (ITC)")
    ax.axvline(0.5, color="#888888", lw=0.8)
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("ITM P(match)")
    ax.set_ylabel("probe image")
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="center")
    ax.set_title("ITM: positives vs hard negatives", fontsize=9)


def stage2_frame(film: films.Film, frame: int) -> Figure:
    """One stage-2 snapshot: the greedy answers to the probe questions (right/wrong), the captions, the LM
    tokens nearest each projected query, and the loss with the step marked."""
    frame = _check(film, 2, frame)
    step = film.steps[frame]
    fig, (text_ax, loss_ax) = plt.subplots(
        1, 2, figsize=(15, 6.2), width_ratios=[2.3, 1], layout="constrained"
    )
    text_ax.axis("off")
    lines = "\n".join(_answer_lines(film, frame))
    text_ax.text(0, 1, lines, family="monospace", fontsize=7, va="top", transform=text_ax.transAxes)
    text_ax.set_title(
        f"greedy answers on held-out probe scenes: {films.answer_accuracy(film, frame):.0%} right",
        fontsize=10,
    )
    _loss_panel(loss_ax, film, step)
    fig.suptitle(
        f"{film.meta['run']}: stage 2 at step {step} of {film.steps[-1]}  (frame {frame + 1}/{len(film.steps)})"
    )
    plt.close(fig)
    return fig


def _answer_lines(film: films.Film, frame: int, token_scenes: int = 2) -> list[str]:
    """Per question scene: its truth and caption, its questions with the answers (right or wrong), and for the
    first `token_scenes` the LM tokens nearest each projected query."""
    answers, right = film.arrays["answers"][frame], film.arrays["answer_right"][frame]
    captions, nearest = film.arrays["captions"][frame], film.arrays["nearest_tokens"][frame]
    by_scene: dict[int, list[str]] = {}
    for (scene, question, _, _), answer, correct in zip(film.meta["questions"], answers, right, strict=True):
        mark = "✓" if correct else "✗"
        by_scene.setdefault(scene, []).append(f"{question} {_clean(answer) if answer else '-'} {mark}")
    lines = []
    for scene, asked in sorted(by_scene.items()):
        said = _clean(captions[scene]) if captions[scene] else "-"
        lines.append(f"{film.meta['probe_captions'][scene]}  ->  caption: {said}")
        lines += ["    " + " | ".join(asked[:3]), "    " + " | ".join(asked[3:])]
        if scene < token_scenes:
            words = ("/".join(_token(token) for token in tokens) for tokens in nearest[scene])
            lines.append("    nearest LM tokens: " + "  ".join(f"q{q} {w}" for q, w in enumerate(words)))
    return lines


def _token(token: str) -> str:
    """A vocabulary entry as a learner can read it: a lone byte of a longer character (decoded to U+FFFD)
    becomes <byte>, a newline <newline>."""
    if "\ufffd" in token:
        return "<byte>"
    return "<newline>" if token == "\n" else _clean(token).strip() or "_"


def _check(film: films.Film, stage: int, frame: int) -> int:
    if film.stage != stage:
        raise ValueError(f"this is a stage-{film.stage} film; draw it with stage{film.stage}_frame")
    if not -len(film.steps) <= frame < len(film.steps):
        raise IndexError(f"frame={frame}; the film has {len(film.steps)} frames (0..{len(film.steps) - 1})")
    return frame % len(film.steps)


def pick_frames(film: films.Film, count: int = 6) -> list[int]:
    """`count` frame indices spread over the film, first and last included."""
    return sorted({round(value) for value in np.linspace(0, len(film.steps) - 1, count)})


def filmstrip(stage1: films.Film, stage2: films.Film | None = None, count: int = 6, scene: int = 0) -> Figure:
    """The film as one static figure (for saved and headless copies): a column per chosen frame, rows for
    the attention of every query on one probe scene, the ITC matrix, the projection, ITM and (stage 2) answers."""
    frames = pick_frames(stage1, count)
    rows = 4 + (stage2 is not None)
    fig, axes = plt.subplots(
        rows, len(frames), figsize=(2.6 * len(frames), 2.5 * rows + 0.6), layout="constrained", squeeze=False
    )
    basis = projection_basis(stage1)
    for column, frame in enumerate(frames):
        maps = _attention_grid(stage1, frame, scene)
        lift = films.object_lift(stage1, frame)
        mosaic = np.block([[maps[q] for q in range(half * 4, half * 4 + 4)] for half in range(2)])
        ax = axes[0, column]
        _draw_mosaic(ax, mosaic, stage1, scene)
        ax.set_title(
            f"step {stage1.steps[frame]}\nqueries on objects: {int((lift >= films.LIFT).sum())}/{len(lift)}",
            fontsize=9,
        )
        _draw_itc(axes[1, column], stage1, frame)
        _draw_projection(axes[2, column], stage1, frame, "colour", basis)
        _draw_itm(axes[3, column], stage1, frame)
        for ax in axes[:4, column]:
            ax.title.set_fontsize(7)
        if column:
            for ax in axes[1:4, column]:
                ax.set_ylabel("")
                ax.get_legend() and ax.get_legend().remove()
    axes[0, 0].set_ylabel("8 queries' attention\n(4x4 patches each)", fontsize=8)
    if stage2 is not None:
        for column, frame in enumerate(pick_frames(stage2, len(frames))):
            ax = axes[4, column]
            ax.axis("off")
            written = _clean(stage2.arrays["captions"][frame][scene]) or "-"
            answered = [
                f"{kind}: {answer or '-'} {'✓' if right else '✗'}"
                for (position, _, _, kind), answer, right in zip(
                    stage2.meta["questions"],
                    stage2.arrays["answers"][frame],
                    stage2.arrays["answer_right"][frame],
                    strict=True,
                )
                if position == scene
            ]
            text = "\n".join([textwrap.fill(f"caption: {written}", 34), *answered])
            ax.text(0, 1, text, fontsize=7, va="top", transform=ax.transAxes)
            ax.set_title(
                f"stage 2, step {stage2.steps[frame]}: {films.answer_accuracy(stage2, frame):.0%} right",
                fontsize=8,
            )
    caption = stage1.meta["probe_captions"][scene]
    fig.suptitle(f"{stage1.meta['run']}: the film in {len(frames)} frames (probe scene shown: '{caption}')")

    plt.close(fig)
    return fig


def _draw_mosaic(ax: plt.Axes, mosaic: np.ndarray, film: films.Film, scene: int) -> None:
    """Two rows of four queries' 4x4 attention maps; white squares mark the patches holding the objects."""
    ax.imshow(mosaic, cmap="inferno", vmin=0, vmax=ATTENTION_TOP)
    objects = np.flatnonzero(film.meta["object_patches"][scene])
    for query in range(8):
        top, left = 4 * (query // 4), 4 * (query % 4)
        ax.add_patch(plt.Rectangle((left - 0.5, top - 0.5), 4, 4, fill=False, edgecolor="#888888", lw=1))
        for patch in objects:
            row, col = divmod(int(patch), 4)
            square = plt.Rectangle(
                (left + col - 0.45, top + row - 0.45), 0.9, 0.9, fill=False, edgecolor="white"
            )
            ax.add_patch(square)
    ax.set_xticks([])
    ax.set_yticks([])


def animate_stage1(film: films.Film, path: str | Path, scene: int = 0, fps: int = 3, dpi: int = 80) -> Path:
    """Write an animated GIF (PillowWriter) of stage 1: every query's attention on one probe scene, the ITC
    matrix and the embeddings, one frame per snapshot, the last held for two seconds; atomically. A GIF has
    no timestamp and the frames are drawn by Agg, so the same film gives the same bytes."""
    path = Path(path)
    basis = projection_basis(film)
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.9), layout="constrained")

    def draw(frame: int) -> None:
        for ax in axes:
            ax.clear()
        maps = _attention_grid(film, frame, scene)
        mosaic = np.block([[maps[q] for q in range(half * 4, half * 4 + 4)] for half in range(2)])
        _draw_mosaic(axes[0], mosaic, film, scene)
        axes[0].set_title(
            f"8 queries' attention (4x4 patches each) on\n'{film.meta['probe_captions'][scene]}'\n"
            f"white: the objects' patches; queries on them: {films.concentrated_queries(film, frame)}/8",
            fontsize=8,
        )
        _draw_itc(axes[1], film, frame)
        _draw_projection(axes[2], film, frame, "colour", basis)
        fig.suptitle(
            f"BLIP-2 stage 1 in the toy world: step {film.steps[frame]} of {film.steps[-1]}", fontsize=10
        )

    frames = [*range(len(film.steps)), *[len(film.steps) - 1] * fps * 2]
    try:
        with staged_file(path, suffix=".gif") as temporary:
            FuncAnimation(fig, draw, frames=frames).save(temporary, writer=PillowWriter(fps=fps), dpi=dpi)
    finally:
        plt.close(fig)
    return path


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72, facecolor="white")
    return buffer.getvalue()


class FilmPlayer:
    """A step slider over a run's films: moving it redraws that frame, the loss curves marking its step.

    The logic is in `show` and the `on_*` handlers, which tests call without a browser; the widgets only hold
    state. Only IntSlider, Dropdown, ToggleButtons, Image and Label are used: they behave alike in ipywidgets
    7 (Colab) and 8 (JupyterLab).
    """

    def __init__(self, run_films: Mapping[int, films.Film], scene: int = 0) -> None:
        if not run_films:
            raise ValueError("no films to play; load them with helpers.toyworld.film.load_films(folder)")
        self.films, self.scene = dict(run_films), scene
        first = min(self.films)
        self.stage = widgets.ToggleButtons(
            options=[(f"stage {n}", n) for n in sorted(self.films)], value=first
        )
        self.slider = widgets.IntSlider(
            value=0, min=0, max=len(self.films[first].steps) - 1, description="frame", continuous_update=False
        )
        self.colour_by = widgets.Dropdown(
            options=list(world.ATTRIBUTES), value="colour", description="colour by"
        )
        self.label = widgets.Label(layout=widgets.Layout(min_width="8.5em"))  # "step 1200 of 1200" uncut
        self.image = widgets.Image(format="png")
        self.stage.observe(self.on_stage, names="value")
        self.slider.observe(self.on_frame, names="value")
        self.colour_by.observe(self.on_frame, names="value")
        self.show(self.slider.value)

    @property
    def film(self) -> films.Film:
        return self.films[self.stage.value]

    @property
    def step(self) -> int:
        """The training step of the frame on screen."""
        return self.film.steps[self.slider.value]

    def on_stage(self, change: Mapping | None = None) -> None:
        """Another stage: its first frame (setting the slider redraws only when the value changes)."""
        self.slider.max = len(self.film.steps) - 1
        if self.slider.value == 0:
            self.show(0)
        else:
            self.slider.value = 0

    def on_frame(self, change: Mapping | None = None) -> None:
        self.show(self.slider.value)

    def show(self, frame: int) -> Figure:
        """Draw `frame` of the chosen stage into the image widget and say which step it is."""
        if self.film.stage == 1:
            fig = stage1_frame(self.film, frame, self.scene, self.colour_by.value)
        else:
            fig = stage2_frame(self.film, frame)
        self.image.value = _png(fig)
        self.label.value = f"step {self.film.steps[frame]} of {self.film.steps[-1]}"
        return fig

    def widget(self) -> widgets.Widget:
        controls = widgets.HBox([self.stage, self.slider, self.label, self.colour_by])
        return _PlayerBox([controls, self.image])


class _PlayerBox(widgets.VBox):
    """The player's box, with a readable text form for copies of the notebook that have no live kernel."""

    def __repr__(self) -> str:
        return "[film player: a step slider, live only in Jupyter or Colab; the filmstrip is its static copy]"


def player(run_films: Mapping[int, films.Film], scene: int = 0) -> widgets.Widget:
    """The step slider over a run's films, as one widget: leave it as a cell's last expression to display it."""
    return FilmPlayer(run_films, scene).widget()


@torch.no_grad()
def checkpoint_views(
    setup,
    images: Sequence[Image.Image],
    texts: Sequence[str],
    names: Sequence[str] | None = None,
    image: int = 0,
) -> Figure:
    """The film's stage-1 views on a real checkpoint's final state (any profile): every query's attention on
    one image, the ITC matrix of the images and their captions, and the projection of the query embeddings.

    `setup` is `helpers.pretraining_run.load_stage(1, profile)`: a retrieval checkpoint with its processor;
    `names` label the images (default: image 0, 1, ...).
    """
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    if len(images) != len(texts) or len(images) < 2:
        raise ValueError(
            f"{len(images)} images and {len(texts)} texts: give at least two pairs, one text per image"
        )
    model, processor, device = setup.model, setup.processor, setup.precision.device
    pixels = processor.image_processor(list(images), return_tensors="pt")["pixel_values"].to(
        device, model.dtype
    )
    tokens = processor.tokenizer(
        list(texts), padding=True, truncation=True, max_length=35, return_tensors="pt"
    ).to(device)
    with setup.autocast():
        vision = model.vision_model(pixel_values=pixels).last_hidden_state
        queries = model.query_tokens.expand(len(vision), -1, -1)
        with recorded_cross_attentions(model.qformer) as records:
            output = model.qformer(query_embeds=queries, encoder_hidden_states=vision).last_hidden_state
        image_embeds = F.normalize(
            model.vision_projection(output.to(model.vision_projection.weight.dtype)), dim=-1
        )
        text = model.qformer(
            query_embeds=model.embeddings(input_ids=tokens["input_ids"]),
            query_length=0,
            attention_mask=tokens["attention_mask"],
        ).last_hidden_state
        text_embeds = F.normalize(
            model.text_projection(text[:, 0].to(model.text_projection.weight.dtype)), dim=-1
        )
    attention = (
        torch.stack(records).float().mean(2)[:, image, :, 1:].mean(0).cpu().numpy()
    )  # (queries, patches)
    image_embeds, text_embeds = image_embeds.float().cpu().numpy(), text_embeds.float().cpu().numpy()
    itc = np.einsum("iqd,td->itq", image_embeds, text_embeds).max(-1)
    count, grid = attention.shape[0], int(np.sqrt(attention.shape[1]))
    columns = 8
    rows = -(-count // columns)
    fig = plt.figure(figsize=(15, 2 * rows + 4.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2 * rows, 4.5])
    picture = np.asarray(images[image].convert("RGB"))
    height, width = picture.shape[:2]
    for index, ax in enumerate(top.subplots(rows, columns, squeeze=False).flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if index < count:
            ax.imshow(picture)
            heat = attention[index].reshape(grid, grid)
            ax.imshow(
                heat / heat.max(), cmap="inferno", alpha=0.55, extent=(0, width, height, 0), vmin=0, vmax=1
            )
            ax.set_title(f"query {index}", fontsize=7)
        else:
            ax.axis("off")
    top.suptitle(
        f"where each of the {count} queries looks in '{_clean(texts[image])}' (layers and heads averaged)",
        fontsize=10,
    )
    left, right = bottom.subplots(1, 2)
    mesh = left.imshow(itc, cmap="viridis")
    fig.colorbar(mesh, ax=left, shrink=0.8, label="cosine of the best query")
    left.set_xticks(range(len(texts)), [_clean(t)[:22] for t in texts], rotation=30, ha="right", fontsize=7)
    left.set_yticks(range(len(texts)), [_clean(name) for name in names], fontsize=8)
    left.set_title("ITC: images x captions", fontsize=9)
    points = np.concatenate([image_embeds.reshape(-1, image_embeds.shape[-1]), text_embeds])
    mean = points.mean(0)
    axes = np.linalg.svd(points - mean, full_matrices=False)[2][:2]
    flat = (points - mean) @ axes.T
    queries_2d, texts_2d = flat[: -len(texts)].reshape(len(texts), count, 2), flat[-len(texts) :]
    for i in range(len(texts)):
        colour = PALETTE[i % len(PALETTE)]
        right.scatter(
            queries_2d[i, :, 0],
            queries_2d[i, :, 1],
            color=colour,
            s=10,
            alpha=0.7,
            label=f"{_clean(names[i])}: queries",
        )
        right.scatter(*texts_2d[i], color=colour, marker="^", s=70, edgecolors="black", label="its caption")
    right.legend(fontsize=6, ncol=2)
    right.set_xticks([])
    right.set_yticks([])
    right.set_title("projected query (o) and caption (^) embeddings, 2-D principal axes", fontsize=9)
    return _finish(fig)


def film_table(run_films: Mapping[int, films.Film]) -> str:
    """The film's numbers per frame, as text under 110 columns: stage 1's ITC top-1, queries on the objects,
    ITM P(match) of positives and hard negatives and the attribute probes; stage 2's share of right answers."""
    lines = []
    if 1 in run_films:
        stage1 = run_films[1]
        names = "  ".join(f"{name:>6}" for name in stage1.meta["attributes"])
        lines.append(f"stage 1   step  ITC top-1  on objects  ITM true  ITM hard   probes: {names}")
        for frame, step in enumerate(stage1.steps):
            probes = "  ".join(f"{value:>6.0%}" for value in stage1.arrays["probe_accuracy"][frame])
            positive = stage1.arrays["itm_positive"][frame].astype(np.float32).mean()
            negative = stage1.arrays["itm_negative"][frame].astype(np.float32).mean()
            lines.append(
                f"{'':8}{step:>6}  {films.itc_top1(stage1, frame):>9.0%}  "
                f"{films.concentrated_queries(stage1, frame):>8}/8  {positive:>8.2f}  {negative:>8.2f}"
                f"{'':11}{probes}"
            )
    if 2 in run_films:
        stage2 = run_films[2]
        lines.append("stage 2   step  answers right   caption of the first probe scene")
        for frame, step in enumerate(stage2.steps):
            caption = _clean(stage2.arrays["captions"][frame][0]) or "-"
            lines.append(f"{'':8}{step:>6}  {films.answer_accuracy(stage2, frame):>13.0%}   {caption[:50]}")
    return "\n".join(lines)


def ends_table(run_films: Mapping[int, films.Film]) -> str:
    """The film's first and last frames side by side, as the Markdown table notebook 05 quotes (its test
    checks the quote against the shipped film): what training changed, and what the frozen models gave."""
    stage1, stage2 = run_films[1], run_films[2]

    def lifts(frame: int) -> str:
        lift = films.object_lift(stage1, frame)
        return f"{films.concentrated_queries(stage1, frame)} of {len(lift)} (lifts {lift.min():.1f}-{lift.max():.1f})"

    def itm(frame: int) -> str:
        true, hard = (
            stage1.arrays[name][frame].astype(np.float32).mean() for name in ("itm_positive", "itm_negative")
        )
        return f"{true:.2f} / {hard:.2f}"

    def probes(frame: int) -> str:
        accuracy = stage1.arrays["probe_accuracy"][frame]
        return "100% each" if accuracy.min() == 1 else ", ".join(f"{value:.0%}" for value in accuracy)

    ends = (0, -1)
    rows = [
        (
            f"on the {len(stage1.meta['probe_captions'])} probe scenes",
            *(f"step {stage1.steps[f]:,}" for f in ends),
        ),
        ("---", "---", "---"),
        ("ITC top-1", *(f"{films.itc_top1(stage1, f):.0%}" for f in ends)),
        (f"queries on the objects (lift >= {films.LIFT})", *(lifts(f) for f in ends)),
        ("ITM P(match): true pair / hardest wrong caption", *(itm(f) for f in ends)),
        (f"linear probes: {', '.join(stage1.meta['attributes'])}", *(probes(f) for f in ends)),
        (
            f"stage 2: probe answers right ({len(stage2.meta['questions'])} questions)",
            *(f"{films.answer_accuracy(stage2, f):.0%}" for f in ends),
        ),
    ]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def compare_losses(runs: Mapping[str, Mapping[str, Sequence[float]]], window: int = SMOOTHING) -> Figure:
    """Every run's pretraining losses overlaid, one axis per loss (stage 1's ITC, ITM, ITG; stage 2's LM),
    smoothed over `window` steps. `runs` maps a run's name to its curves (`Trained.curves()`); only the
    stages' curves are drawn, and the runs share each axis so that they compare directly."""
    panels: dict[str, dict[str, Sequence[float]]] = {}
    for run, curves in runs.items():
        for name, values in curves.items():
            if name.startswith("stage") and len(values):
                panels.setdefault(name, {})[run] = values
    if not panels:
        raise ValueError("no stage losses to compare; pass {run name: trained.curves()}")
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.6 * len(panels), 3.3), squeeze=False, layout="constrained"
    )
    colours = {run: PALETTE[i % len(PALETTE)] for i, run in enumerate(runs)}
    order = ["stage 1 itc", "stage 1 itm", "stage 1 itg", "stage 2"]
    ranked = sorted(panels.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))
    for ax, (title, curves) in zip(axes[0], ranked, strict=True):
        for run, values in curves.items():
            steps = np.arange(1, len(values) + 1)
            ax.plot(steps, smooth(values, window), color=colours[run], lw=1.5, label=run)
        ax.set_title(title.replace("stage 2", "stage 2 LM").upper().replace("STAGE", "stage"), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"loss ({window}-step moving average)")
    handles = [plt.Line2D([], [], color=colour, label=run) for run, colour in colours.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(runs), fontsize=9)
    fig.suptitle("the same losses in every run (a run without stage 1 has no stage-1 curves)")
    plt.close(fig)
    return fig


def runs_table(runs: Mapping[str, Mapping[int, films.Film]]) -> str:
    """The runs side by side in the film's views, as text under 110 columns: stage 1 at its last frame (ITC
    top-1, queries on the objects, ITM P(match) of hard negatives, mean probe accuracy), then the share of
    right stage-2 answers at seven of its frames."""
    reference = next((run[2] for run in runs.values() if 2 in run), None)
    if reference is None:
        raise ValueError("no stage-2 film among the runs; pass {run name: films} as load_films returns")
    width = max(len(name) for name in [*runs, "stage 1, last step"])
    lines = [f"{'stage 1, last step':<{width}}  ITC top-1  on objects  ITM hard  probes"]
    for name, run in runs.items():
        if 1 in run:
            stage1 = run[1]
            hard = stage1.arrays["itm_negative"][-1].astype(np.float32).mean()
            probes = stage1.arrays["probe_accuracy"][-1].mean()
            lines.append(
                f"{name:<{width}}  {films.itc_top1(stage1):>9.0%}  {films.concentrated_queries(stage1):>8}/8"
                f"  {hard:>8.2f}  {probes:>6.0%}"
            )
        else:
            lines.append(f"{name:<{width}}  (no stage 1)")
    picked = pick_frames(reference, 7)
    steps = "".join(f"{reference.steps[frame]:>7}" for frame in picked)
    lines.append(f"{'stage 2, answers right at step':<{width}}{steps}")
    for name, run in runs.items():
        if 2 in run:
            shares = "".join(f"{films.answer_accuracy(run[2], frame):>7.0%}" for frame in picked)
            lines.append(f"{name:<{width}}{shares}")
    return "\n".join(lines)


def milestones(run_films: Mapping[int, films.Film]) -> list[str]:
    """The first step at which each change of the film is seen: ITC ranking the right caption first, queries
    turning to the objects, ITM telling hard negatives apart, probes reaching 100%, answers turning right (in
    all and per kind of question). Step 0 is before training: what the frozen models give for free."""
    found = []

    def first(film: films.Film, reached, what: str) -> None:
        step = next((film.steps[f] for f in range(len(film.steps)) if reached(f)), None)
        when = {None: "not within the run", 0: "from the start (step 0)"}.get(step, f"step {step}")
        found.append(f"{what}: {when}")

    if 1 in run_films:
        stage1 = run_films[1]
        half = len(films.object_lift(stage1)) // 2
        first(stage1, lambda f: films.itc_top1(stage1, f) >= 0.5, "ITC ranks half the probe captions first")
        first(stage1, lambda f: films.itc_top1(stage1, f) == 1, "ITC ranks every probe caption first")
        first(
            stage1, lambda f: films.concentrated_queries(stage1, f) >= 1, "a first query turns to the objects"
        )
        first(
            stage1, lambda f: films.concentrated_queries(stage1, f) >= half, f"{half} queries on the objects"
        )
        true, hard = (stage1.arrays[name].astype(np.float32) for name in ("itm_positive", "itm_negative"))
        gap = true - hard
        first(
            stage1,
            lambda f: gap[f].mean() >= ITM_GAP,
            f"ITM puts true pairs {ITM_GAP} above their hard negatives (mean P(match))",
        )
        for index, name in enumerate(stage1.meta["attributes"]):
            first(
                stage1, lambda f, i=index: stage1.arrays["probe_accuracy"][f][i] == 1, f"{name} probe at 100%"
            )
    if 2 in run_films:
        stage2 = run_films[2]
        first(stage2, lambda f: films.answer_accuracy(stage2, f) >= 0.75, "3 in 4 probe answers right")
        first(stage2, lambda f: films.answer_accuracy(stage2, f) >= 0.9, "9 in 10 probe answers right")
        kinds = np.array([kind for *_, kind in stage2.meta["questions"]])
        for kind in dict.fromkeys(kinds):
            right = stage2.arrays["answer_right"][:, kinds == kind]
            first(stage2, lambda f, r=right: bool(r[f].all()), f"every {kind} question right")
    return found

"""The notebooks' figures: right number of panels, every value written, any model output drawable."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from helpers import RankedText, offline, viz


def _images(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), (40 * i, 100, 200)) for i in range(count)]


def _render(fig: Figure) -> None:
    """Draw the figure for real: layout and text rendering errors only show up here."""
    fig.savefig(io.BytesIO(), format="png")


def test_show_captions_draws_one_labelled_axis_per_image_with_its_caption():
    fig = viz.show_captions(_images(4), ["a cat", "a dog", "a cup", "a rocket"], titles=list("abcd"), ncols=3)
    _render(fig)
    assert isinstance(fig, Figure)
    with_images = [ax for ax in fig.axes if ax.images]
    assert len(with_images) == len(fig.axes) == 4  # the unused fifth and sixth cells are removed
    assert [ax.get_title() for ax in with_images] == list("abcd")
    assert [ax.get_xlabel() for ax in with_images] == ["a cat", "a dog", "a cup", "a rocket"]


def test_show_captions_numbers_several_captions_per_image_nested_or_flat():
    nested = viz.show_captions(_images(2), [["one", "two"], ["three", "four"]])
    flat = viz.show_captions(_images(2), ["one", "two", "three", "four"])
    for fig in (nested, flat):
        labels = [ax.get_xlabel() for ax in fig.axes]
        assert labels == ["1. one\n2. two", "1. three\n2. four"]
        assert [ax.get_title() for ax in fig.axes] == ["image 1", "image 2"]


def test_show_captions_wraps_long_and_garbled_captions_and_still_renders():
    garbled = "$x_1$ " + "K" * 120 + " \x0b\x18 <s> " + "word " * 40
    fig = viz.show_captions(_images(1), [garbled])
    _render(fig)
    label = fig.axes[0].get_xlabel()
    assert "\n" in label and "\x0b" not in label
    assert max(len(line) for line in label.splitlines()) <= 46


def test_show_captions_rejects_a_caption_count_that_does_not_fit():
    with pytest.raises(ValueError, match="captions has 3 entries for 2 images"):
        viz.show_captions(_images(2), ["a", "b", "c"])


def test_show_answers_puts_every_question_and_answer_beside_the_image():
    pairs = [("What is shown in the photo?", "a cat"), ("What color is the bus?", "red")]
    fig = viz.show_answers(_images(1)[0], pairs, title="cat")
    _render(fig)
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 1 and image_axes[0].get_title() == "cat"
    texts = [text.get_text() for ax in fig.axes for text in ax.texts]
    assert texts == ["Q: What is shown in the photo?", "A: a cat", "Q: What color is the bus?", "A: red"]


@pytest.mark.parametrize("as_tensor", [True, False], ids=["torch", "numpy"])
def test_similarity_heatmap_writes_every_value_and_boxes_each_rows_best(as_tensor):
    values = np.array([[0.9, 0.1, 0.2], [0.3, 0.8, -0.4]])
    scores = torch.tensor(values, dtype=torch.float16) if as_tensor else values
    fig = viz.similarity_heatmap(scores, ["cat", "rocket"], ["a cat", "a rocket", "coffee"], "ITC")
    _render(fig)
    ax = fig.axes[0]
    written = [text.get_text() for text in ax.texts]
    assert len(written) == 6
    assert written == ["0.90", "0.10", "0.20", "0.30", "0.80", "-0.40"]
    boxes = [(patch.get_x(), patch.get_y()) for patch in ax.patches]
    assert boxes == [(-0.5, -0.5), (0.5, 0.5)]  # column 0 for row 0, column 1 for row 1
    assert ax.get_title() == "ITC"
    assert [label.get_text() for label in ax.get_yticklabels()] == ["cat", "rocket"]


def test_similarity_heatmap_checks_the_labels_against_the_shape():
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        viz.similarity_heatmap(np.zeros((2, 3)), ["a", "b"], ["x", "y"], "ITM")


def test_show_ranking_marks_the_re_ranked_texts():
    ranked = [
        RankedText("a cat on a couch", 2, 0.31, 0.93),
        RankedText("a tabby cat", 0, 0.35, 0.60),
        RankedText("a rocket", 1, 0.10, None),
    ]
    fig = viz.show_ranking(_images(1)[0], ranked, title="cat")
    _render(fig)
    image_ax, itc_ax, itm_ax = fig.axes
    assert image_ax.images and image_ax.get_title() == "cat"
    labels = [label.get_text() for label in itc_ax.get_yticklabels()]
    assert labels == ["1. a cat on a couch  (ITC #2)", "2. a tabby cat  (ITC #1)", "3. a rocket  (ITC #3)"]
    weights = [label.get_fontweight() for label in itc_ax.get_yticklabels()]
    assert weights == ["bold", "bold", "normal"]
    assert [bar.get_width() for bar in itc_ax.patches] == pytest.approx([0.31, 0.35, 0.10])
    assert [text.get_text() for text in itm_ax.texts] == ["0.93", "0.60", "not re-ranked"]
    assert "top 2" in itm_ax.get_title()


def test_figures_are_not_left_open_in_pyplot():
    before = len(plt.get_fignums())
    viz.show_captions(_images(2), ["a", "b"])
    viz.similarity_heatmap(np.eye(2), ["a", "b"], ["x", "y"], "t")
    assert len(plt.get_fignums()) == before


def test_a_tie_at_the_printed_precision_gets_no_best_box():
    scores = np.array([[1e-7, 3e-6, 2e-7], [0.9, 0.1, 0.2]])  # row 0 prints 0.00 0.00 0.00
    ax = viz.similarity_heatmap(scores, ["photo", "scene"], ["x", "y", "z"], "ITM").axes[0]
    assert [(patch.get_x(), patch.get_y()) for patch in ax.patches] == [(-0.5, 0.5)]


def test_figures_say_so_while_the_offline_model_is_loaded(monkeypatch):
    monkeypatch.setattr(offline, "_loaded", True)
    for fig in (
        viz.show_captions(_images(2), ["a", "b"]),
        viz.training_curves([{"step": 1, "loss": 2.0, "lr": 1e-5}]),
    ):
        _render(fig)
        footers = [text.get_text() for text in fig.texts] + [fig.get_supxlabel()]
        assert offline.FIGURE_NOTE in footers
    monkeypatch.setattr(offline, "_loaded", False)
    fig = viz.show_captions(_images(2), ["a", "b"])
    assert offline.FIGURE_NOTE not in [text.get_text() for text in fig.texts] + [fig.get_supxlabel()]


def test_a_zero_metric_gets_an_axis_from_zero_not_a_1e_15_range():
    history = [
        {"step": 1, "loss": 2.0, "lr": 1e-5},
        {"step": 1, "epoch": 0, "split": "val", "BLEU-4": 0.0, "CIDEr": 0.0},
        {"step": 2, "epoch": 1, "split": "val", "BLEU-4": 0.0, "CIDEr": 0.0},
    ]
    metric_ax = viz.training_curves(history).axes[1]
    assert metric_ax.get_ylim() == (0.0, 1.0)


def test_scene_grid_is_closed_framed_and_wraps_long_titles():
    from helpers.toyworld import world
    from helpers.toyworld.plots import scene_grid

    before = len(plt.get_fignums())
    fig = scene_grid(
        world.scenes(0, "test", 2), ["two small small small small small small small small small", "x"]
    )
    assert len(plt.get_fignums()) == before, "returned open, Jupyter would show it twice"
    ax = fig.axes[0]
    assert ax.spines["left"].get_visible() and "\n" in ax.get_title()

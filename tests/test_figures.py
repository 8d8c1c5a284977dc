"""The pretraining figures and diagrams draw what they are given, refuse bad input, and save byte-stably."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from helpers import diagrams, viz_pretraining
from helpers.figures import FIGURES, FILM_GIF, save_figure
from helpers.offline import weights_dir
from helpers.toyworld import film
from helpers.variants import STAGE1_VARIANT, count_variant, meta_model

ROOT = Path(__file__).resolve().parents[1]


def _texts(fig: Figure) -> str:
    return " ".join(text.get_text() for ax in fig.axes for text in ax.texts) + " ".join(
        ax.get_title() for ax in fig.axes
    )


def test_diagrams_show_counts_from_the_real_architectures() -> None:
    opt, t5 = count_variant("blip2-opt-2.7b"), count_variant("blip2-flan-t5-xl")
    assert "3.74B" in _texts(diagrams.architecture(opt))
    stage2 = _texts(diagrams.stage2(opt, t5))
    assert "107.1M trained" in stage2 and "106.7M trained" in stage2
    assert "185.7M" in _texts(diagrams.stage1(count_variant(STAGE1_VARIANT)))


def _box_heights(fig: Figure, start: str) -> list[float]:
    """The heights (y) at which the diagram writes labels starting with `start`, bottom first."""
    return sorted(
        text.get_position()[1] for ax in fig.axes for text in ax.texts if text.get_text().startswith(start)
    )


def test_qformer_layers_draws_cross_attention_between_self_attention_and_feed_forward() -> None:
    qformer = meta_model(STAGE1_VARIANT).qformer
    fig = diagrams.qformer_layers(qformer, 32)
    labels = _texts(fig)
    assert "12 layers" in labels and "repeats 6 times" in labels and "0, 2, ... 10" in labels
    # In sequence, bottom to top: shared self-attention, cross-attention (queries only), then the feed-forward.
    self_attention, cross, feed_forward = (
        _box_heights(fig, "self-attention"),
        _box_heights(fig, "cross-attention"),
        _box_heights(fig, "feed-forward, queries"),
    )
    assert len(cross) == 1 and self_attention[0] < cross[0] < feed_forward[0] < self_attention[1]
    assert min(text.get_fontsize() for ax in fig.axes for text in ax.texts) >= 9
    with pytest.raises(ValueError, match="text side"):
        diagrams.qformer_layers(meta_model("blip2-opt-2.7b").qformer, 32)


def test_architecture_shows_the_text_prompt_going_into_the_llm() -> None:
    labels = _texts(diagrams.architecture(count_variant("blip2-opt-2.7b")))
    assert "text prompt" in labels and "soft visual prompt" in labels


def test_mask_figure_draws_the_kits_masks() -> None:
    fig = viz_pretraining.attention_masks(2, ["[CLS]", "cat", "[PAD]"], torch.tensor([[1, 1, 0]]))
    itg = fig.axes[2].images[0].get_array()
    assert np.array_equal(
        itg, [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]
    )
    with pytest.raises(ValueError, match="one per token"):
        viz_pretraining.attention_masks(2, ["[CLS]", "cat"], torch.tensor([[1, 1, 0]]))


def test_mask_figure_labels_every_token_and_every_8th_query_legibly() -> None:
    fig = viz_pretraining.attention_masks(32, ["[CLS]", "a", "cat", "[SEP]"])
    labels = [label for label in fig.axes[0].get_yticklabels()]
    assert [label.get_text() for label in labels] == ["q0", "q8", "q16", "q24", "[CLS]", "a", "cat", "[SEP]"]
    assert min(label.get_fontsize() for label in labels) >= 9


def test_query_attention_maps_shape_checks() -> None:
    attentions = torch.rand(2, 4, 8, 1 + 7 * 7).softmax(dim=-1)
    fig = viz_pretraining.query_attention_maps(
        np.zeros((56, 56, 3), dtype=np.uint8), attentions, queries=[0, 3]
    )
    assert len([ax for ax in fig.axes if ax.images]) == 2 * 3  # two layers, two queries and their mean
    assert len(fig.axes) == 2 * 3 + 1, "one colour bar for the shared 0..1 scale"
    with pytest.raises(ValueError, match="square grid"):
        viz_pretraining.query_attention_maps(np.zeros((8, 8, 3)), attentions[..., :-1])
    with pytest.raises(ValueError, match=r"0\.\.7"):
        viz_pretraining.query_attention_maps(np.zeros((8, 8, 3)), attentions, queries=[8])


def test_hard_negative_figure_and_loss_curves() -> None:
    similarity = torch.tensor([[5.0, 1.0, 0.0], [0.0, 5.0, 2.0], [1.0, 1.0, 5.0]])
    fig = viz_pretraining.hard_negatives(
        similarity, ["a", "b", "c"], ["x", "y", "z"], torch.tensor([1, 2, 0])
    )
    probabilities = fig.axes[0].images[0].get_array()
    assert np.allclose(np.diag(probabilities), 0) and np.allclose(probabilities.sum(axis=1), 1)
    long = viz_pretraining.hard_negatives(
        similarity, ["a", "b", "c"], ["a close-up of a tabby cat", "y", "z"], torch.tensor([1, 2, 0])
    )
    assert " ".join(long.axes[0].get_xticklabels()[0].get_text().split()) == "a close-up of a tabby cat"
    curves = viz_pretraining.loss_curves({"itc": [2.0, 1.5], "itm": [0.7, 0.6]})
    assert [ax.get_title() for ax in curves.axes] == ["ITC", "ITM"]
    with pytest.raises(ValueError, match="at least one"):
        viz_pretraining.loss_curves({"itc": []})


def test_saved_pngs_are_byte_stable_and_committed(tmp_path: Path) -> None:
    fig = viz_pretraining.loss_curves({"lm": [3.0, 2.0, 1.5]})
    first = save_figure(fig, tmp_path / "a.png").read_bytes()
    second = save_figure(fig, tmp_path / "b.png").read_bytes()
    assert first == second and first.startswith(b"\x89PNG")
    for name in FIGURES:
        assert (ROOT / "figures" / name).is_file(), f"figures/{name} is missing: run `make figures`"


def test_the_readme_animation_is_drawn_from_the_shipped_film_and_small() -> None:
    gif = ROOT / "figures" / FILM_GIF
    assert gif.is_file(), f"figures/{FILM_GIF} is missing: run `make figures`"
    assert gif.stat().st_size < 2_000_000, "the README loads it on every visit"
    with Image.open(gif) as animation:
        steps = film.load_film(weights_dir() / film.FILES[1]).steps
        assert animation.n_frames == len(steps), "drawn from another film: run `make figures`"
    assert f"figures/{FILM_GIF}" in (ROOT / "README.md").read_text()

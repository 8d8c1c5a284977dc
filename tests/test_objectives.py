"""The stage-1 and stage-2 loss formulas on hand-made tensors whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from helpers.objectives import itc_loss, itm_loss, lm_loss, sample_hard_negatives


def _two_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    # image 0's queries point along x and y, image 1's both along y; text 0 is x, text 1 is y.
    image = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    return image, text


def test_itc_similarity_is_the_best_query_over_temperature() -> None:
    image, text = _two_pairs()
    _, similarity = itc_loss(image, text, temperature=0.5, label_smoothing=0.0)
    # image 0 reaches text 1 through its second query: a mean over queries would give 0.5, not 1.
    assert torch.allclose(similarity, torch.tensor([[1.0, 1.0], [0.0, 1.0]]) / 0.5)


def test_itc_loss_is_the_mean_of_both_directions() -> None:
    image, text = _two_pairs()
    loss, _ = itc_loss(image, text, temperature=1.0, label_smoothing=0.0)
    # rows: CE([1,1], 0) = log 2 and CE([0,1], 1) = log(1 + 1/e); columns give the same two values.
    expected = (math.log(2) + math.log(1 + math.exp(-1))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_itc_label_smoothing_changes_the_loss_and_the_temperature_learns() -> None:
    image, text = _two_pairs()
    temperature = torch.tensor(0.07, requires_grad=True)
    smoothed, _ = itc_loss(image, text, temperature)
    plain, _ = itc_loss(image, text, temperature, label_smoothing=0.0)
    assert smoothed.item() != pytest.approx(plain.item())
    smoothed.backward()
    assert temperature.grad is not None and temperature.grad.abs().item() > 0


def test_itc_rejects_mismatched_shapes_and_bad_temperature() -> None:
    image, text = _two_pairs()
    with pytest.raises(ValueError, match="share the batch"):
        itc_loss(image, text[:1])
    with pytest.raises(ValueError, match="queries"):
        itc_loss(image[:, 0], text)
    with pytest.raises(ValueError, match="positive"):
        itc_loss(image, text, temperature=0.0)


def test_hard_negatives_never_pick_the_positive_and_follow_softmax() -> None:
    similarity = torch.tensor([[5.0, 2.0, 0.0], [1.0, 5.0, 1.0], [0.0, 3.0, 5.0]])
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_hard_negatives(similarity, generator)[0] for _ in range(4000)])
    assert not (draws == torch.arange(3)).any()
    # image 0: texts 1 and 2 with probabilities softmax([2, 0]) = (0.881, 0.119).
    share = (draws[:, 0] == 1).float().mean().item()
    assert share == pytest.approx(torch.softmax(torch.tensor([2.0, 0.0]), 0)[0].item(), abs=0.03)


def test_hard_negative_images_come_from_the_columns() -> None:
    # text 0's most similar wrong image is image 2 (column 0), by a margin that makes the draw certain.
    similarity = torch.tensor([[0.0, 0.0, 0.0], [-50.0, 0.0, 0.0], [50.0, 0.0, 0.0]])
    negative_text, negative_image = sample_hard_negatives(similarity, torch.Generator().manual_seed(1))
    assert negative_image[0].item() == 2
    assert negative_text.tolist() != [0, 1, 2]


def test_hard_negatives_are_reproducible_and_respect_ids() -> None:
    similarity = torch.randn(6, 6, generator=torch.Generator().manual_seed(3))
    first = sample_hard_negatives(similarity, torch.Generator().manual_seed(7))
    second = sample_hard_negatives(similarity, torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    ids = torch.tensor([0, 0, 1, 1, 2, 2])  # pairs (0, 1), (2, 3), (4, 5) show the same image
    for seed in range(20):
        negative_text, negative_image = sample_hard_negatives(
            similarity, torch.Generator().manual_seed(seed), ids=ids
        )
        assert (ids[negative_text] != ids).all() and (ids[negative_image] != ids).all()


def test_hard_negatives_need_a_negative() -> None:
    with pytest.raises(ValueError, match="no negative"):
        sample_hard_negatives(torch.zeros(1, 1))
    with pytest.raises(ValueError, match="no negative"):
        sample_hard_negatives(torch.zeros(2, 2), ids=torch.tensor([4, 4]))
    with pytest.raises(ValueError, match="square"):
        sample_hard_negatives(torch.zeros(2, 3))


def test_itm_loss_is_cross_entropy_on_two_classes() -> None:
    logits = torch.tensor([[0.0, 3.0], [2.0, -1.0], [0.5, 0.5]])
    labels = torch.tensor([1, 0, 0])
    assert itm_loss(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels).item())
    with pytest.raises(ValueError, match="logits"):
        itm_loss(torch.zeros(3, 3), labels)


def _one_hot_logits(tokens: list[int], vocab: int, scale: float = 20.0) -> torch.Tensor:
    return F.one_hot(torch.tensor([tokens]), vocab).float() * scale


def test_lm_loss_shifts_by_one_and_ignores_minus_100() -> None:
    labels = torch.tensor([[-100, 3, 1, 2]])
    predicts_next = _one_hot_logits([3, 1, 2, 0], vocab=5)  # the logit at t names label t+1
    assert lm_loss(predicts_next, labels).item() < 1e-6
    assert lm_loss(predicts_next, labels, shift=False).item() > 5
    aligned = _one_hot_logits([0, 3, 1, 2], vocab=5)
    assert lm_loss(aligned, labels, shift=False).item() < 1e-6


def test_lm_loss_label_smoothing_and_errors() -> None:
    labels = torch.tensor([[0, 3, 1]])
    logits = _one_hot_logits([3, 1, 0], vocab=5)
    assert lm_loss(logits, labels, label_smoothing=0.1).item() > lm_loss(logits, labels).item()
    with pytest.raises(ValueError, match="no target"):
        lm_loss(logits, torch.tensor([[0, -100, -100]]))
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        lm_loss(logits[0], labels)

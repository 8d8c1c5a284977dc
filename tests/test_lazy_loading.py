"""Each model loads on first use, and `close()` really frees it: on a T4 two full BLIP-2s do not fit together."""

from __future__ import annotations

import gc
import weakref

import pytest

from helpers import load_blip2, toy_samples
from helpers.loading import BACKENDS


@pytest.fixture(scope="module")
def toy():
    return toy_samples(1)[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_captioning_never_loads_the_retrieval_model(backend, toy, capsys):
    model = load_blip2("offline", backend=backend)
    assert model.loaded_models() == [], "loading the object loads no weights yet"
    assert model.caption(toy.image) == [toy.caption]
    assert model.loaded_models() == ["generation"]
    assert "loading the generation model (first use)" in capsys.readouterr().out


@pytest.mark.parametrize("backend", BACKENDS)
def test_retrieval_never_loads_the_language_model(backend, toy):
    model = load_blip2("offline", backend=backend, verbose=False)
    best = model.rank_texts(toy.image, [toy.caption, "three large blue squares on the right"])[0]
    model.extract_features(toy.image, mode="image")
    assert best.text == toy.caption and model.loaded_models() == ["retrieval"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_close_frees_both_models_and_refuses_later_use(backend, toy):
    model = load_blip2("offline", backend=backend, verbose=False)
    model.caption(toy.image)
    model.itc_scores(toy.image, toy.caption)
    generation = weakref.ref(model.model)
    model.close()
    gc.collect()
    assert model.loaded_models() == [] and generation() is None, "something still holds the closed model"
    with pytest.raises(RuntimeError, match="closed to free memory"):
        model.caption(toy.image)


def test_a_model_loaded_inside_inference_mode_can_still_be_trained(toy):
    model = load_blip2("offline", verbose=False)
    model.caption(toy.image)  # the first use happens inside generate's inference mode
    loss = model.lm_loss([toy.image], [""], [toy.caption])
    loss.backward()
    assert any(p.grad is not None for p in model.model.qformer.parameters())

"""The nine released checkpoints in miniature, in the layouts users download, loaded by both backends.

`helpers.released_formats` writes the hub repositories with the released key names (never by the code under
test's `save_pretrained`) and LAVIS's downloads (`eva_vit_g.pth`, the BLIP-2 `.pth` files, the hub models
LAVIS builds on). The HF backend reads the repositories with `from_pretrained`; the LAVIS backend runs
`load_model_and_preprocess` on the hub ids, with only the download locations (and ViT-g's hard-coded sizes)
replaced. Every load is key-accounted: these tests pin the expected sets and show a renamed or dropped key fails.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import GREEDY, load_blip2
from helpers.backends import convert, lavis_compat
from helpers.backends.key_accounting import CheckpointKeyError
from helpers.backends.lavis import LavisBackend, load_lavis
from helpers.backends.lavis_sources import accounted_loading
from helpers.checkpoints import CHECKPOINTS
from helpers.precision import choose_precision
from helpers.released_formats import (
    ReleasedFixtures,
    build_released_fixtures,
    image_size_of,
    language_model_of,
    lavis_downloads_from,
    lavis_file_name,
    vit_is_frozen,
)

FLAN_T5 = "Salesforce/blip2-flan-t5-xl"
ITM = "Salesforce/blip2-itm-vit-g"
QUESTION = "what is shown in the photo?"
PROMPTS = ["Question: what is shown? Short answer:"] * 3
TARGETS = ["a cat", "a rocket", "two dogs"]
TEXTS = ["a cat on a couch", "a rocket", "two dogs playing in the grass"]
GENERATION = [c.hf_id for c in CHECKPOINTS if language_model_of(c) is not None]
RETRIEVAL = [c.hf_id for c in CHECKPOINTS if language_model_of(c) is None]
CPU = choose_precision("cpu")


@pytest.fixture(scope="session")
def released(tmp_path_factory) -> ReleasedFixtures:
    return build_released_fixtures(tmp_path_factory.mktemp("released"))


def _hf(released: ReleasedFixtures, hf_id: str, **kwargs):
    """The HF backend on a released repository; a retrieval one is lent a generation repository's tokenizer."""
    if hf_id in RETRIEVAL:
        kwargs["retrieval_id"], hf_id = str(released.hf[hf_id]), GENERATION[0]
    return load_blip2("offline", backend="hf", model_id=str(released.hf[hf_id]), verbose=False, **kwargs)


def _by_file(reports) -> dict[str, object]:
    return {report.checkpoint.rsplit("/", 1)[-1]: report for report in reports}


# ---- deliverable 1 and 2: every released format loads in both backends, with exactly the expected keys -----
@pytest.mark.parametrize("checkpoint", CHECKPOINTS, ids=lambda c: c.hf_id)
def test_fixture_layouts_follow_lavis_own_model_configs(checkpoint):
    """File names, ViT freezing, image size and language model as each model type's yaml states them."""
    lavis_compat.apply()
    from lavis.common.registry import registry
    from omegaconf import OmegaConf

    model_class = registry.get_model_class(checkpoint.lavis_name)
    model = OmegaConf.load(model_class.default_config_path(checkpoint.lavis_model_type)).model
    url = model.finetuned if model.load_finetuned else model.pretrained
    assert url.rsplit("/", 1)[-1] == lavis_file_name(checkpoint)
    assert model.get("freeze_vit", True) == vit_is_frozen(checkpoint)
    assert model.image_size == image_size_of(checkpoint)
    assert model.get("opt_model", model.get("t5_model")) == language_model_of(checkpoint)


@pytest.mark.parametrize("hf_id", [c.hf_id for c in CHECKPOINTS])
def test_lavis_downloads_load_through_lavis_with_the_expected_keys(released, hf_id):
    checkpoint = next(c for c in CHECKPOINTS if c.hf_id == hf_id)
    with lavis_downloads_from(released), accounted_loading() as reports:
        model = load_lavis(hf_id, CPU)[0]
    files = _by_file(reports)
    pth = next(name for name in files if name.startswith("blip2_"))
    language = {"opt": "opt_model.", "t5": "t5_model."}.get(
        language_model_of(checkpoint) and ("t5" if "t5" in hf_id else "opt"), ""
    )
    frozen = ("visual_encoder.",) if vit_is_frozen(checkpoint) else ()
    frozen += (language,) if language else ()
    expected_missing = {k for k in model.state_dict() if frozen and k.startswith(frozen)}
    assert set(files[pth].missing) == expected_missing and not files[pth].unexpected
    assert files["eva_vit_g.pth"].missing == files["eva_vit_g.pth"].unexpected == ()
    if language:  # the LLM's own hub weights: nothing missing, nothing unexpected
        name = language_model_of(checkpoint)
        assert files[str(released.hf[name]).rsplit("/", 1)[-1]].missing == ()
    # The LAVIS files carry the very tensors of the hub repository, under the conversion script's names.
    hub = load_file(released.hf[hf_id] / "model.safetensors")
    from_lavis = convert.lavis_to_hf(model.state_dict(), "t5" if "t5" in hf_id else "opt")
    assert all(torch.equal(from_lavis[key], hub[key]) for key in hub), hf_id


@pytest.mark.parametrize("hf_id", [c.hf_id for c in CHECKPOINTS])
def test_hub_repositories_load_in_both_backends_from_their_folders(released, hf_id):
    hf = _hf(released, hf_id)
    hf_model = hf.retrieval if hf_id in RETRIEVAL else hf.model
    hub = load_file(released.hf[hf_id] / "model.safetensors")
    state = hf_model.state_dict()
    assert all(torch.equal(state[key], hub[key]) for key in hub)
    lavis_model = load_lavis(str(released.hf[hf_id]), CPU)[0]  # the folder route: converted on the fly
    from_lavis = convert.lavis_to_hf(lavis_model.state_dict(), "t5" if "t5" in hf_id else "opt")
    assert all(torch.equal(from_lavis[key], hub[key]) for key in hub)


@pytest.mark.parametrize("hf_id", GENERATION)
def test_both_backends_answer_alike_on_each_released_generation_checkpoint(released, hf_id, samples):
    hf = _hf(released, hf_id)
    with lavis_downloads_from(released):
        lavis = LavisBackend(hf_id, ITM, CPU)
        answers, loss = (
            lavis.ask(samples, QUESTION, settings=GREEDY),
            lavis.lm_loss(samples, PROMPTS, TARGETS),
        )
    assert hf.ask(samples, QUESTION, settings=GREEDY) == answers
    # Two known differences (README, "Parity"): LAVIS's ln_vision eps is 1e-5 (HF: 1e-6) and LAVIS runs
    # Flan-T5's feed-forward with exact GELU (HF: gelu_new); greedy answers are identical all the same.
    assert torch.allclose(hf.lm_loss(samples, PROMPTS, TARGETS), loss, atol=5e-4)


@pytest.mark.parametrize("hf_id", RETRIEVAL)
def test_both_backends_score_alike_on_each_released_retrieval_checkpoint(released, hf_id, samples):
    hf = _hf(released, hf_id)
    with lavis_downloads_from(released):
        scores = LavisBackend(GENERATION[0], hf_id, CPU).match(samples, TEXTS)
    expected = hf.match(samples, TEXTS)
    assert torch.allclose(expected.itc, scores.itc, atol=1e-4)
    assert torch.allclose(expected.itm, scores.itm, atol=1e-4)


def _rewritten_pth(released: ReleasedFixtures, name: str, tmp_path, change) -> ReleasedFixtures:
    state = torch.load(released.lavis_files[name], weights_only=True)
    change(state.get("model", state))
    torch.save(state, tmp_path / name)
    return ReleasedFixtures(released.hf, {**released.lavis_files, name: tmp_path / name})


@pytest.mark.parametrize(
    ("file", "change", "named"),
    [
        (
            "blip2_pretrained_opt2.7b.pth",
            lambda s: s.__setitem__(
                "Qformer.bert.encoder.layer.0.attention.self.querry.weight",
                s.pop("Qformer.bert.encoder.layer.0.attention.self.query.weight"),
            ),
            "querry",
        ),
        ("blip2_pretrained_opt2.7b.pth", lambda s: s.pop("opt_proj.weight"), "opt_proj.weight"),
        (
            "eva_vit_g.pth",
            lambda s: s.__setitem__("blocks.0.norm_1.weight", s.pop("blocks.0.norm1.weight")),
            "blocks.0.norm1.weight",
        ),
    ],
)
def test_a_renamed_or_dropped_key_in_a_lavis_download_fails_naming_it(
    released, tmp_path, file, change, named
):
    broken = _rewritten_pth(released, file, tmp_path, change)
    with lavis_downloads_from(broken), pytest.raises(CheckpointKeyError, match=named) as error:
        load_lavis("Salesforce/blip2-opt-2.7b", CPU)
    assert file.split(".pth")[0] in str(error.value)


def test_eva_clip_parts_lavis_does_not_build_are_the_only_tolerated_extras(released, tmp_path):
    def add_last_block_and_head(state):
        state["blocks.2.norm1.weight"] = state["blocks.0.norm1.weight"].clone()  # ViT-g's dropped last layer
        state["head.weight"] = torch.zeros(1)

    with lavis_downloads_from(_rewritten_pth(released, "eva_vit_g.pth", tmp_path, add_last_block_and_head)):
        load_lavis("Salesforce/blip2-opt-2.7b", CPU)

    def add_a_stranger(state):
        state["blocks.0.attn.k_bias"] = torch.zeros(1)

    stranger = _rewritten_pth(released, "eva_vit_g.pth", tmp_path, add_a_stranger)
    with lavis_downloads_from(stranger), pytest.raises(CheckpointKeyError, match=r"blocks\.0\.attn\.k_bias"):
        load_lavis("Salesforce/blip2-opt-2.7b", CPU)


@pytest.mark.parametrize("hf_id", [FLAN_T5, ITM])
def test_a_renamed_key_in_a_hub_repository_fails_in_both_backends(released, tmp_path, hf_id):
    folder = tmp_path / "renamed"
    folder.mkdir()
    for file in released.hf[hf_id].iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    weights = load_file(folder / "model.safetensors")
    weights["qformer.layer_norm.weight"] = weights.pop("qformer.layernorm.weight")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    renamed = ReleasedFixtures({**released.hf, hf_id: folder}, released.lavis_files)
    hf = _hf(renamed, hf_id)
    for load in (
        lambda: hf.retrieval if hf_id in RETRIEVAL else hf.model,
        lambda: load_lavis(str(folder), CPU),
    ):
        with pytest.raises(CheckpointKeyError, match=r"qformer\.layer_norm\.weight|Qformer") as error:
            load()
        assert str(folder) in str(error.value)


# ---- deliverable 3: Flan-T5's untied head, on load and on save, in both backends --------------------------
@pytest.fixture(scope="module")
def flan_t5(released):
    return {
        backend: _hf(released, FLAN_T5)
        if backend == "hf"
        else load_blip2("offline", backend="lavis", model_id=str(released.hf[FLAN_T5]), verbose=False)
        for backend in ("hf", "lavis")
    }


def test_released_flan_t5_head_is_untied(released):
    weights = load_file(released.hf[FLAN_T5] / "model.safetensors")
    assert not torch.equal(weights["language_model.lm_head.weight"], weights["language_model.shared.weight"])


def test_untied_flan_t5_head_gives_the_same_answers_and_loss_in_both_backends(flan_t5, samples):
    hf, lavis = flan_t5["hf"], flan_t5["lavis"]
    assert type(lavis.model).__name__ == "Blip2T5"
    assert hf.ask(samples, QUESTION, settings=GREEDY) == lavis.ask(samples, QUESTION, settings=GREEDY)
    hf_loss, lavis_loss = hf.lm_loss(samples, PROMPTS, TARGETS), lavis.lm_loss(samples, PROMPTS, TARGETS)
    assert torch.allclose(hf_loss, lavis_loss, atol=1e-4), (hf_loss, lavis_loss)


@pytest.mark.parametrize("saver", ["lavis", "hf"])
def test_a_save_keeps_the_untied_head_and_reloads_in_both_backends(
    flan_t5, released, samples, tmp_path, saver
):
    folder = flan_t5[saver].save_pretrained("caption", tmp_path / "saved")
    saved = load_file(folder / "model.safetensors")
    original = load_file(released.hf[FLAN_T5] / "model.safetensors")
    assert torch.equal(saved["language_model.lm_head.weight"], original["language_model.lm_head.weight"])
    # Declared untied, as google/flan-t5-xl's config does: transformers 4 would otherwise tie and rescale.
    assert json.loads((folder / "config.json").read_text())["text_config"]["tie_word_embeddings"] is False
    expected = flan_t5["hf"].ask(samples, QUESTION, settings=GREEDY)
    expected_loss = flan_t5["hf"].lm_loss(samples, PROMPTS, TARGETS)
    for backend in ("hf", "lavis"):
        reloaded = load_blip2("offline", backend=backend, model_id=str(folder), verbose=False)
        assert reloaded.ask(samples, QUESTION, settings=GREEDY) == expected, backend
        assert torch.allclose(reloaded.lm_loss(samples, PROMPTS, TARGETS), expected_loss, atol=1e-4), backend

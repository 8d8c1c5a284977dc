"""The demo inputs follow the profile, and the offline model is described from its own files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import offline, sample_names
from helpers.demos import caption_report, demo_inputs, near_misses, table_row
from helpers.profiles import PROFILES
from helpers.toyworld import world


def test_offline_demos_use_the_toy_world_and_keep_the_photos_for_one_cell():
    demo = demo_inputs("offline", count=4)
    assert demo.world == "toy world" and len(demo.images) == 4
    assert all(picture.true_caption for picture in demo.images)
    assert [picture.label for picture in demo.other] == sample_names()[:4]
    assert demo.candidates[0] == demo.image.text
    for prompt, picture in zip(demo.prompts, demo.images, strict=False):
        assert picture.text.startswith(prompt), "a prompt is the start of the picture's own caption"
    colour = demo.questions[-1].split()[3]  # "is there a <colour> <shape>?": a colour the scene does not have
    assert demo.questions[-1].startswith("is there a") and colour not in demo.image.text


def test_real_profiles_keep_the_photos_and_the_guides_questions():
    demo = demo_inputs("t4", image="rocket", count=6)
    assert demo.world == "photos" and demo.image.label == "rocket"
    assert [picture.label for picture in demo.images] == sample_names()
    assert "What color is the bus?" in demo.questions and demo.candidates[0] == demo.image.text
    assert all(picture.true_caption for picture in demo.other), "toy scenes, checkable against their captions"


@pytest.mark.parametrize(("image", "count"), [("dog", 3), ("cat", 1), ("cat", 7)])
def test_bad_demo_parameters_are_refused_with_the_fix(image, count):
    with pytest.raises(ValueError, match=r"image=|count="):
        demo_inputs("offline", image=image, count=count)


def test_near_misses_differ_from_the_caption_in_one_attribute():
    scene = world.make_scene(0, "test", 3)
    truth = scene.caption().split()
    misses = near_misses(scene)
    assert len(set(misses)) == 5 and scene.caption() not in misses
    for miss in misses[1:]:  # size, colour, shape, side: one word each, in place
        assert sum(a != b for a, b in zip(miss.split(), truth, strict=True)) == 1
    count_changed = misses[0].split()
    assert count_changed[0] != truth[0] and count_changed[1:3] == truth[1:3], (
        "the count, and the noun's number"
    )


def test_reports_check_toy_captions_and_fit_110_columns():
    demo = demo_inputs("offline", count=2)
    report = caption_report(demo.images, [demo.images[0].text, "three large large large"])
    assert report.splitlines()[0].startswith("right") and report.splitlines()[1].startswith("differs")
    row = table_row("at least 20 tokens", "large " * 60)
    assert max(len(line) for line in row.splitlines()) <= 110 and row.count("large") == 60


def test_the_offline_model_is_described_from_its_shipped_config():
    model = offline.describe()
    config = json.loads((offline.checkpoint_path(offline.CAPTION) / "config.json").read_text())
    assert model.num_queries == config["num_query_tokens"] == 8
    assert (model.patch_size, model.grid) == (56, 4)
    assert model.summary() in PROFILES["offline"].description
    assert "random" not in model.explain() and "data/toyworld/" in model.explain()
    assert len(f"stage 1 | profile 'offline': {model.summary()} (requested)") <= 110


def test_missing_weights_are_said_in_the_profile_line_not_raised(monkeypatch, tmp_path):
    monkeypatch.setattr(offline, "weights_dir", lambda: tmp_path)
    assert "missing" in offline.profile_description() and "make toyworld" in offline.profile_description()


def test_the_readme_describes_the_offline_model_as_its_configs_do():
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())
    assert offline.describe().summary() in readme, "README's sentence on the offline model is stale"


def test_load_messages_show_the_kits_own_folders_short():
    assert offline.shown_path(offline.CHECKOUT_WEIGHTS / "caption") == "data/toyworld/caption"
    assert offline.shown_path(offline.INSTALLED_WEIGHTS / "retrieval") == "helpers/toyworld/weights/retrieval"
    assert offline.shown_path("/tmp/run") == "/tmp/run"
    assert offline.shown_path("Salesforce/blip2-opt-2.7b") == "Salesforce/blip2-opt-2.7b"

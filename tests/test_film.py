"""The pretraining film: recording leaves training unchanged, the format round-trips and is validated, the
slider's handlers redraw the chosen frame, and the shipped film shows what notebook 05 says it shows."""

from __future__ import annotations

import glob
import itertools
import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import film_viz
from helpers.offline import weights_dir
from helpers.toyworld import film, world
from helpers.toyworld.__main__ import ABLATION_RUNS
from helpers.toyworld.pipeline import Recipe, pretrain_unimodal, two_stage

ROOT = Path(__file__).resolve().parent.parent
TINY = Recipe(
    train_scenes=24,
    text_scenes=24,
    vision_steps=2,
    vision_batch=4,
    lm_steps=2,
    lm_batch=4,
    stage1_steps=3,
    stage1_batch=4,
    stage2_steps=3,
    stage2_batch=4,
)


@pytest.fixture(scope="module")
def tiny_runs():
    """The same tiny recipe trained twice from the same unimodal models: filmed, and not."""
    base = pretrain_unimodal(TINY)
    return two_stage(base, probe=film.Probe.of(TINY.seed)), two_stage(base)


@pytest.fixture(scope="module")
def shipped() -> dict[int, film.Film]:
    return film.load_films(weights_dir())


def test_frames_are_log_spaced_from_before_the_first_step_to_the_last() -> None:
    steps = film.frame_steps(1200)
    assert steps[0] == 0 and steps[-1] == 1200
    assert 15 <= len(steps) <= film.FRAMES
    assert all(b > a for a, b in itertools.pairwise(steps))
    assert steps[5] - steps[4] < steps[-1] - steps[-2], "early frames must be closer together than late ones"
    assert film.frame_steps(3) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="steps=0"):
        film.frame_steps(0)


def test_recording_does_not_change_the_trained_weights(tiny_runs) -> None:
    filmed, plain = tiny_runs
    for recorded, reference in ((filmed.caption, plain.caption), (filmed.retrieval, plain.retrieval)):
        for (name, value), (_, expected) in zip(
            recorded.state_dict().items(), reference.state_dict().items(), strict=True
        ):
            assert torch.equal(value, expected), name
    assert filmed.losses == plain.losses


def test_a_filmed_run_saves_its_tokenizer_as_an_unfilmed_run_does(tmp_path) -> None:
    """A padded tokenizer call in a stage-2 snapshot once left padding switched on (to the left) in the run's
    tokenizer, and `save_pretrained` wrote it into the shipped tokenizer.json, changing how it pads on load."""
    filmed = two_stage(pretrain_unimodal(TINY), probe=film.Probe.of(TINY.seed))
    filmed.caption_processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text())["padding"] is None


def test_a_recorded_film_round_trips_through_its_file(tiny_runs, tmp_path) -> None:
    filmed, _ = tiny_runs
    assert set(filmed.films) == {1, 2}
    stage1 = filmed.films[1]
    assert stage1.steps == film.frame_steps(TINY.stage1_steps)
    probes = len(stage1.meta["probe_captions"])
    assert stage1.arrays["attention"].shape[1:] == (2, probes, 8, 16)  # 2 cross-attention layers, 4x4 patches
    assert stage1.arrays["itc"].shape[1:] == (probes, probes)
    assert set(stage1.losses) == {"itc", "itm", "itg"} and len(stage1.losses["itc"]) == TINY.stage1_steps
    path = stage1.save(tmp_path / film.FILES[1])
    loaded = film.load_film(path)
    assert loaded.meta == stage1.meta
    for name, array in stage1.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[name], array)
    stage2 = film.load_film(filmed.films[2].save(tmp_path / film.FILES[2]))
    assert stage2.arrays["answers"].dtype.kind == "U"
    assert len(stage2.arrays["answers"][0]) == len(stage2.meta["questions"])
    assert not list(tmp_path.glob(".*")), "a temporary file was left behind"


def test_a_broken_film_is_refused_with_the_file_and_the_fix(tiny_runs, tmp_path) -> None:
    filmed, _ = tiny_runs
    path = filmed.films[1].save(tmp_path / "film.npz")
    with np.load(path) as stored:
        contents = {name: stored[name] for name in stored.files}
    del contents["itc"]
    contents["attention"] = contents["attention"][:2]
    broken = tmp_path / "broken.npz"
    np.savez(broken, **contents)
    with pytest.raises(ValueError, match=r"broken\.npz.*'attention'.*'itc' is missing.*make toyworld"):
        film.load_film(broken)
    with pytest.raises(FileNotFoundError, match="make toyworld"):
        film.load_film(tmp_path / "missing.npz")


def test_object_lift_is_one_for_uniform_attention_and_grows_on_the_objects(tiny_runs) -> None:
    stage1 = tiny_runs[0].films[1]
    uniform = film.Film(stage1.meta, {**stage1.arrays}, stage1.losses)
    uniform.arrays["attention"] = np.full_like(stage1.arrays["attention"], 1 / 17)
    np.testing.assert_allclose(film.object_lift(uniform), 1.0, rtol=1e-3)
    focused = np.array(stage1.meta["object_patches"], dtype=np.float16)[None, None, :, None, :]
    uniform.arrays["attention"] = np.broadcast_to(focused, stage1.arrays["attention"].shape).copy()
    assert film.concentrated_queries(uniform) == 8
    scene = world.retrieval_set(0, "val", 1)[0]
    patches = film.object_patches(scene)
    assert patches.sum() == world.COUNTS.index(scene.count) + 1


def test_the_slider_redraws_the_chosen_frame_of_the_chosen_stage(tiny_runs) -> None:
    player = film_viz.FilmPlayer(tiny_runs[0].films)
    first = player.image.value
    assert player.stage.value == 1 and player.step == 0 and player.label.value == "step 0 of 3"
    player.slider.value = player.slider.max  # what dragging the slider does
    assert player.step == 3 and player.label.value == "step 3 of 3"
    assert player.image.value != first and bytes(player.image.value).startswith(b"\x89PNG")
    player.colour_by.value = "side"
    player.stage.value = 2
    assert player.slider.value == 0 and player.slider.max == len(tiny_runs[0].films[2].steps) - 1
    assert player.label.value == "step 0 of 3"
    assert "film player" in repr(player.widget()), "a saved copy must show a readable placeholder"


def test_the_frames_draw_every_view(tiny_runs) -> None:
    films = tiny_runs[0].films
    fig = film_viz.stage1_frame(films[1], -1)
    titles = " ".join(ax.get_title() for ax in fig.get_axes())
    assert "ITC" in titles and "ITM" in titles and "query 7" in titles and "step 3" in titles
    lines = film_viz._answer_lines(films[2], -1)
    assert [film_viz._token(t) for t in ("\ufffd", "\n", " two", " ")] == ["<byte>", "<newline>", "two", "_"]
    assert len(lines) == film.QUESTION_SCENES * 3 + 2
    strip = film_viz.filmstrip(films[1], films[2], count=3)
    assert len(strip.get_axes()) == 5 * 3
    with pytest.raises(ValueError, match="stage-2 film"):
        film_viz.stage1_frame(films[2], 0)


def test_the_package_data_carries_every_film_where_make_toyworld_writes_it(tmp_path) -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    written = [
        *film.FILES.values(),
        *(f"{film.ABLATION_FILMS}/no_itg/{name}" for name in film.FILES.values()),
    ]
    for relative in written:  # the same layout in a scratch folder, matched the way setuptools globs it
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).touch()
    carried = {
        Path(path).relative_to(tmp_path).as_posix()
        for pattern in globs["helpers.toyworld.weights"]
        for path in glob.glob(str(tmp_path / pattern))
    }
    assert set(written) <= carried


def test_the_shipped_film_shows_stage_1_aligning_and_the_queries_specialising(shipped) -> None:
    stage1 = shipped[1]
    assert stage1.steps[0] == 0 and stage1.steps[-1] == 1200
    assert film.itc_top1(stage1, -1) > film.itc_top1(stage1, 0)
    first, last = stage1.arrays["probe_accuracy"][0], stage1.arrays["probe_accuracy"][-1]
    # The frozen ViT already states shape and size plainly: at 100% from the start they cannot rise.
    assert all(end >= start for start, end in zip(first, last, strict=True))
    assert all(end > start for start, end in zip(first, last, strict=True) if start < 1)
    assert film.concentrated_queries(stage1, -1) >= 4
    assert film.concentrated_queries(stage1, 0) < 4
    hard = stage1.arrays["itm_negative"][-1].astype(float).mean()
    assert stage1.arrays["itm_positive"][-1].astype(float).mean() > 0.9 > 0.1 > hard


def test_the_shipped_film_shows_stage_2_answers_turning_right(shipped) -> None:
    stage2 = shipped[2]
    assert film.answer_accuracy(stage2, -1) > 0.8 > film.answer_accuracy(stage2, 0)


QUOTED_MILESTONES = (
    "ITC ranks half the probe captions first",
    "ITC ranks every probe caption first",
    "4 queries on the objects",
    "ITM puts true pairs",
    "count probe at 100%",
    "9 in 10 probe answers right",
)
"""The milestones notebook 05's phase-by-phase account names by their step."""


def test_notebook_05_describes_the_shipped_film_with_its_own_numbers(shipped) -> None:
    notebook = json.loads((ROOT / "notebooks" / "05_two_stage_pretraining.ipynb").read_text())
    markdown = "\n".join(
        "".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown"
    )
    assert film_viz.ends_table(shipped) in markdown, (
        "stale table: paste film_viz.ends_table(films) into notebook 05"
    )
    quoted = [line for line in film_viz.milestones(shipped) if line.startswith(QUOTED_MILESTONES)]
    assert len(quoted) == len(QUOTED_MILESTONES)
    for line in quoted:
        step = line.rsplit("step ", 1)[1]
        assert re.search(rf"\b{step}\b", markdown), f"notebook 05 does not name the step of '{line}'"


def test_the_stage1_animation_holds_every_snapshot_and_is_byte_stable(tiny_runs, tmp_path) -> None:
    stage1 = tiny_runs[0].films[1]
    first = film_viz.animate_stage1(stage1, tmp_path / "new folder" / "film.gif")
    second = film_viz.animate_stage1(stage1, tmp_path / "again.gif")
    assert first.read_bytes() == second.read_bytes(), "an unchanged film must give the same GIF"
    with Image.open(first) as gif:
        assert gif.format == "GIF" and gif.n_frames == len(stage1.steps) and gif.info["loop"] == 0
        gif.seek(gif.n_frames - 1)
        assert gif.info["duration"] > 5 * 1000 // 3, "the last frame is held so the end state can be read"
    assert not list(tmp_path.glob(".*")) and not list((tmp_path / "new folder").glob(".*"))


def test_stage_2_frames_answer_from_the_image_as_the_backend_does() -> None:
    """The film's greedy answers on the shipped checkpoint are the HF backend's (a prompt without the image
    tokens once let the LM answer blind: 6% right at every frame)."""
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    from helpers import GREEDY
    from helpers.toyworld import data
    from helpers.toyworld.evaluate import load_run

    folder = weights_dir() / "caption"
    model = Blip2ForConditionalGeneration.from_pretrained(folder).eval()
    processor = Blip2Processor.from_pretrained(folder)
    probe = film.Probe.of(0)
    with torch.no_grad():
        frame = film.stage2_snapshot(
            model, processor, probe, data.PixelNormaliser(processor.image_processor)(probe.pixels)
        )
    images = [world.render(probe.scenes[position]) for position, _ in probe.questions]
    expected = load_run(backend="hf").ask(images, [qa.question for _, qa in probe.questions], settings=GREEDY)
    assert list(frame["answers"]) == expected
    assert frame["answer_right"].mean() > 0.8


def test_runs_compare_in_the_same_views(tiny_runs) -> None:
    filmed = tiny_runs[0].films
    runs = {"BLIP-2": filmed, "stage 2 without stage 1": {2: filmed[2]}}
    table = film_viz.runs_table(runs)
    assert "(no stage 1)" in table and max(len(line) for line in table.splitlines()) <= 110
    assert max(len(line) for line in film_viz.film_table(filmed).splitlines()) <= 110
    curves = {"BLIP-2": tiny_runs[0].curves(), "no stage 1": {"stage 2": tiny_runs[1].losses["stage 2"]}}
    fig = film_viz.compare_losses(curves, window=2)
    titles = {ax.get_title() for ax in fig.get_axes()}
    assert titles == {"stage 1 ITC", "stage 1 ITM", "stage 1 ITG", "stage 2 LM"}
    np.testing.assert_allclose(film_viz.smooth([1, 3, 5, 7], window=2), [1, 2, 4, 6])


def test_a_checkpoint_shows_the_same_views_in_its_final_state() -> None:
    from helpers.images import sample_image, sample_names
    from helpers.pretraining_run import load_stage

    setup = load_stage(1, "offline", "cpu")
    names = sample_names()[:3]
    fig = film_viz.checkpoint_views(setup, [sample_image(n) for n in names], ["a", "b c", "d"], names)
    titles = [ax.get_title() for ax in fig.get_axes()]
    queries = setup.model.config.num_query_tokens
    assert sum(title.startswith("query ") for title in titles) == queries
    assert "ITC: images x captions" in titles
    with pytest.raises(ValueError, match="one text per image"):
        film_viz.checkpoint_views(setup, [sample_image(names[0])], ["a", "b"])


def test_film_only_films_a_saved_run_and_refuses_one_it_cannot_repeat(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    from helpers.toyworld.__main__ import film_only
    from helpers.toyworld.evaluate import EvalSize
    from helpers.toyworld.pipeline import save

    folder = save(two_stage(pretrain_unimodal(TINY)), tmp_path / "run")
    film_only(folder, ablations=False)
    assert film.load_films(folder)[1].steps == film.frame_steps(TINY.stage1_steps)
    weights = folder / "retrieval" / "model.safetensors"
    tensors = load_file(weights)
    name = next(name for name in tensors if name.startswith("qformer."))
    tensors[name] = tensors[name] + 1
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(SystemExit, match=r"differ from.*run-rerun"):
        film_only(folder, ablations=False, size=EvalSize(captions=2, questions_from=1, retrieval_queries=2))
    assert film.load_films(tmp_path / "run-rerun")[2].steps == film.frame_steps(TINY.stage2_steps)


def test_a_run_and_its_ablations_load_by_name_with_their_whole_curves(tiny_runs, tmp_path) -> None:
    filmed, _ = tiny_runs
    for stage, recorded in filmed.films.items():
        recorded.save(tmp_path / film.FILES[stage])
    stage2 = filmed.films[2]
    for folder, (name, _) in reversed(ABLATION_RUNS.items()):  # alphabetically, no_itg would come first
        ablation = film.Film({**stage2.meta, "run": name}, stage2.arrays, stage2.losses)
        ablation.save(tmp_path / film.ABLATION_FILMS / folder / film.FILES[2])
    runs = film.load_runs(tmp_path)
    assert list(runs) == ["BLIP-2", *(name for name, _ in ABLATION_RUNS.values())]
    assert all(set(runs[name]) == {2} for name, _ in ABLATION_RUNS.values())
    curves = film.curves(runs["BLIP-2"])
    stages = {name: values for name, values in filmed.curves().items() if name.startswith("stage")}
    assert set(curves) == {"stage 1 itc", "stage 1 itm", "stage 1 itg", "stage 2"}
    assert curves == {name: pytest.approx(values) for name, values in stages.items()}
    (tmp_path / film.ABLATION_FILMS / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no film.*make toyworld"):
        film.load_runs(tmp_path)


def test_milestones_name_the_first_step_of_each_change(tiny_runs) -> None:
    lines = film_viz.milestones(tiny_runs[0].films)
    assert any(line.startswith("ITC ranks every probe caption first: ") for line in lines)
    assert all(
        line.endswith(("not within the run", "(step 0)", *(f"step {s}" for s in range(1, 4))))
        for line in lines
    )

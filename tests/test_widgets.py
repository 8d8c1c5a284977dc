"""The VQA demo's logic, driven through its handlers with a fake model: no browser, no checkpoint."""

from __future__ import annotations

import datetime
import io

import ipywidgets
import numpy as np
import pytest
from PIL import Image

from helpers import GenerationSettings, sample_image, sample_names
from helpers.widgets import VQADemo, uploaded_bytes, vqa_demo


class FakeModel:
    """Answers "answer 1", "answer 2", ... and records every call to `ask`."""

    vqa_template = "Question: {} Answer:"

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[dict] = []
        self.fail = fail

    def ask(self, images, questions, context=(), settings=None):
        self.calls.append(
            {"images": images, "questions": questions, "context": context, "settings": settings}
        )
        if self.fail is not None:
            raise self.fail
        return [f"answer {len(self.calls)}"] * len(images)


def _png(color: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


# ---- uploaded_bytes --------------------------------------------------------------------------------
def test_uploaded_bytes_reads_the_ipywidgets_7_dict():
    value = {
        "photo.png": {"metadata": {"name": "photo.png", "type": "image/png", "size": 3}, "content": b"abc"}
    }
    assert uploaded_bytes(value) == b"abc"


def test_uploaded_bytes_reads_the_ipywidgets_8_tuple_of_memoryviews():
    value = ({"name": "photo.png", "type": "image/png", "size": 3, "content": memoryview(b"xyz")},)
    content = uploaded_bytes(value)
    assert content == b"xyz" and isinstance(content, bytes)


def test_uploaded_bytes_takes_the_latest_of_several_files():
    v7 = {"a.png": {"metadata": {}, "content": b"first"}, "b.png": {"metadata": {}, "content": b"second"}}
    v8 = [
        {"name": "a.png", "content": memoryview(b"first")},
        {"name": "b.png", "content": memoryview(b"second")},
    ]
    assert uploaded_bytes(v7) == uploaded_bytes(v8) == b"second"


@pytest.mark.parametrize("empty", [None, {}, (), []])
def test_uploaded_bytes_is_none_before_any_upload(empty):
    assert uploaded_bytes(empty) is None


def test_uploaded_bytes_rejects_an_unknown_shape():
    with pytest.raises(TypeError):
        uploaded_bytes(({"name": "no content here"},))


# ---- the demo --------------------------------------------------------------------------------------
def test_vqa_demo_returns_a_widget():
    assert isinstance(vqa_demo(FakeModel()), ipywidgets.Widget)


def test_ask_sends_the_chosen_sample_question_and_slider_settings():
    model = FakeModel()
    demo = VQADemo(model)
    demo.sample.value = sample_names()[0]
    demo.question.value = "  What color is the bus?  "
    demo.max_new_tokens.value = 12
    demo.num_beams.value = 3
    demo.on_ask()

    (call,) = model.calls
    assert _same_pixels(call["images"][0], sample_image(sample_names()[0]))
    assert call["questions"] == "What color is the bus?"
    assert call["context"] == ()
    assert call["settings"] == GenerationSettings(max_new_tokens=12, num_beams=3)
    assert "answer 1" in demo.answer.value and "What color is the bus?" in demo.answer.value


def test_sampling_checkbox_turns_on_nucleus_sampling_with_the_sliders_values():
    demo = VQADemo(FakeModel())
    assert demo.temperature.disabled and demo.top_p.disabled
    demo.sampling.value = True
    demo.temperature.value = 0.7
    demo.top_p.value = 0.5
    settings = demo.settings()
    assert not demo.temperature.disabled
    assert settings.use_nucleus_sampling and settings.temperature == 0.7 and settings.top_p == 0.5


def test_keep_conversation_passes_earlier_turns_and_clear_forgets_them():
    model = FakeModel()
    demo = VQADemo(model)
    demo.keep.value = True
    demo.question.value = "What is shown in the photo?"
    demo.on_ask()
    demo.question.value = "What color is it?"
    demo.on_ask()
    assert list(model.calls[0]["context"]) == []
    assert list(model.calls[1]["context"]) == [("What is shown in the photo?", "answer 1")]
    assert "answer 1" in demo.answer.value and "answer 2" in demo.answer.value  # the whole transcript
    assert "Question: What is shown in the photo? Answer: answer 1." in demo.answer.value  # the prompt

    demo.on_clear()
    demo.on_ask()
    assert list(model.calls[2]["context"]) == []


def test_without_keep_conversation_every_question_stands_alone():
    model = FakeModel()
    demo = VQADemo(model)
    demo.on_ask()
    demo.on_ask()
    assert [list(call["context"]) for call in model.calls] == [[], []]
    assert demo.history == []


def _v7_value(name: str, content: bytes) -> dict:
    return {name: {"metadata": {"name": name, "type": "image/png", "size": len(content)}, "content": content}}


def _v8_value(name: str, content: bytes) -> tuple:
    entry = {"name": name, "type": "image/png", "size": len(content), "content": memoryview(content)}
    return (entry | {"last_modified": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)},)


SHAPES = pytest.mark.parametrize("shape", [_v7_value, _v8_value], ids=["ipywidgets7", "ipywidgets8"])


@SHAPES
def test_an_upload_replaces_the_sample_and_a_new_sample_replaces_the_upload(shape):
    model = FakeModel()
    demo = VQADemo(model)
    demo.on_upload({"new": shape("red.png", _png())})
    assert demo.current_image().size == (8, 6)
    assert "red.png" in demo.source.value
    demo.on_ask()
    assert model.calls[-1]["images"][0].getpixel((0, 0)) == (255, 0, 0)

    demo.sample.value = next(name for name in sample_names() if name != demo.sample.value)
    assert _same_pixels(demo.current_image(), sample_image(demo.sample.value))


def test_the_upload_widget_is_wired_to_the_handler_on_the_installed_ipywidgets():
    demo = VQADemo(FakeModel())
    installed = _v7_value if ipywidgets.__version__.startswith("7.") else _v8_value
    demo.upload.set_trait("value", installed("blue.png", _png((0, 0, 255))))  # read-only in ipywidgets 7
    assert demo.current_image().getpixel((0, 0)) == (0, 0, 255)


@SHAPES
def test_a_bad_upload_shows_a_message_and_keeps_the_current_image(shape):
    demo = VQADemo(FakeModel())
    before = demo.current_image()
    demo.on_upload({"new": shape("notes.txt", b"hello")})  # must not raise
    assert "Could not use the uploaded file" in demo.answer.value
    assert "not an image format" in demo.answer.value
    assert _same_pixels(demo.current_image(), before)


def test_an_empty_question_shows_a_message_and_does_not_call_the_model():
    model = FakeModel()
    demo = VQADemo(model)
    demo.question.value = "   "
    demo.on_ask()
    assert model.calls == []
    assert "Type a question" in demo.answer.value


def test_a_model_error_is_shown_in_place_and_the_button_comes_back():
    demo = VQADemo(FakeModel(fail=RuntimeError("CUDA out of memory")))
    demo.on_ask()
    assert "RuntimeError: CUDA out of memory" in demo.answer.value
    assert not demo.ask.disabled


def test_answers_are_escaped_as_html():
    class Shouting(FakeModel):
        def ask(self, images, questions, context=(), settings=None):
            super().ask(images, questions, context, settings)
            return ["<script>alert(1)</script>"]

    demo = VQADemo(Shouting())
    demo.on_ask()
    assert "<script>" not in demo.answer.value and "&lt;script&gt;" in demo.answer.value


def test_the_demo_asks_about_the_pictures_it_is_given():
    model = FakeModel()
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    demo = VQADemo(model, pictures={"scene 1": red, "scene 2": blue}, question="what color is it?")
    assert list(demo.sample.options) == ["scene 1", "scene 2"] and demo.question.value == "what color is it?"
    demo.sample.value = "scene 2"
    assert demo.current_image() is blue
    with pytest.raises(ValueError, match="not one of the pictures"):
        VQADemo(model, sample="cat", pictures={"scene 1": red})


def test_a_headless_copy_saves_a_readable_line_not_the_widget_tree():
    text = repr(vqa_demo(FakeModel()))
    assert text.startswith("[VQA demo") and "children" not in text and "PNG" not in text


def test_labels_are_as_wide_as_their_text():
    demo = VQADemo(FakeModel())
    assert demo.temperature.style.description_width == "initial"
    assert demo.clear.layout.width == "max-content"

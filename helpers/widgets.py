"""Interactive ipywidgets demos for workshops; they run on ipywidgets 7 (Colab) and 8 (Jupyter).

The widgets only collect input and show results. The logic lives in plain methods (`VQADemo.on_ask`,
`current_image`, `settings`) that tests call directly, without a browser or a kernel.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as widgets
from PIL import Image

from helpers.generation import GenerationSettings
from helpers.images import ImageLoadError, load_image, sample_image, sample_names
from helpers.prompts import VQA_TEMPLATE, Turn, vqa_prompt

_DEFAULTS = GenerationSettings()
_PREVIEW_PIXELS = 256
_WIDE = {"width": "95%"}
_LABEL = {"description_width": "initial"}
"""Labels as wide as their text: the default width cuts "temperature" to "temperat…"."""
_BUTTON = {"width": "max-content"}
"""A button as wide as its label: the default width cuts "Clear conversation"."""


def uploaded_bytes(value: Any) -> bytes | None:
    """The content of the most recent file in a `FileUpload.value`, or None when nothing was uploaded.

    ipywidgets 7 stores `{name: {"metadata": {...}, "content": bytes}}`; ipywidgets 8 stores a tuple of
    `{"name": ..., "content": memoryview, ...}`. Both end up as plain bytes here.
    """
    uploaded = _uploaded_file(value)
    return None if uploaded is None else uploaded[1]


def _uploaded_file(value: Any) -> tuple[str, bytes] | None:
    """(name, content) of the last uploaded file, for either ipywidgets version."""
    if not value:
        return None
    if isinstance(value, Mapping):  # ipywidgets 7: name -> {"metadata": ..., "content": ...}
        name, entry = list(value.items())[-1]
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):  # ipywidgets 8
        entry = value[-1]
        name = entry.get("name", "upload") if isinstance(entry, Mapping) else "upload"
    else:
        raise TypeError(f"unrecognised FileUpload value of type {type(value).__name__}")
    if not isinstance(entry, Mapping) or "content" not in entry:
        raise TypeError("unrecognised FileUpload value: an uploaded file has no 'content'")
    return str(name), bytes(entry["content"])


class VQADemo:
    """Ask BLIP-2 questions about a sample photo or your own, optionally as a conversation.

    With "keep conversation" on, earlier (question, answer) turns are passed as `context=`, which puts them
    in front of the new question in LAVIS's format; changing the image starts a new conversation.
    """

    def __init__(
        self,
        model: Any,
        sample: str | None = None,
        pictures: Mapping[str, Image.Image] | None = None,
        question: str = "What is shown in the photo?",
    ) -> None:
        """`pictures` (name -> image) replaces the bundled photos, e.g. toy scenes for the offline model."""
        self.model = model
        self.history: list[Turn] = []
        self._uploaded: Image.Image | None = None
        self._uploaded_name = ""
        self._pictures = dict(pictures) if pictures is not None else None
        if self._pictures is not None and not self._pictures:
            raise ValueError(
                "pictures is empty; pass at least one name -> image, or None for the bundled photos"
            )
        names = list(self._pictures) if self._pictures is not None else sample_names()
        if sample is not None and sample not in names:
            raise ValueError(f"sample={sample!r} is not one of the pictures {names}")
        first = sample if sample is not None else ("cat" if "cat" in names else names[0])

        self.sample = widgets.Dropdown(options=names, value=first, description="Picture", style=_LABEL)
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="Your image")
        self.source = widgets.HTML()
        self.preview = widgets.Image(format="png", layout={"width": f"{_PREVIEW_PIXELS}px"})
        self.question = widgets.Text(
            value=question,
            placeholder="Ask a question about the image",
            description="Question",
            layout=_WIDE,
            style=_LABEL,
        )
        self.keep = widgets.Checkbox(value=False, description="keep conversation", indent=False)
        self.clear = widgets.Button(description="Clear conversation", icon="eraser", layout=_BUTTON)
        self.max_new_tokens = widgets.IntSlider(
            value=_DEFAULTS.max_new_tokens, min=1, max=100, description="max tokens", style=_LABEL
        )
        self.num_beams = widgets.IntSlider(
            value=_DEFAULTS.num_beams, min=1, max=10, description="beams", style=_LABEL
        )
        self.sampling = widgets.Checkbox(value=False, description="sample (nucleus)", indent=False)
        self.temperature = widgets.FloatSlider(
            value=_DEFAULTS.temperature, min=0.1, max=2.0, step=0.05, description="temperature", style=_LABEL
        )
        self.top_p = widgets.FloatSlider(
            value=_DEFAULTS.top_p, min=0.05, max=1.0, step=0.05, description="top p", style=_LABEL
        )
        self.ask = widgets.Button(description="Ask", button_style="primary", icon="question")
        self.answer = widgets.HTML(layout=_WIDE)

        self.sample.observe(self.on_sample, names="value")
        self.upload.observe(self.on_upload, names="value")
        self.sampling.observe(self.on_sampling, names="value")
        self.keep.observe(self.on_keep, names="value")
        self.ask.on_click(self.on_ask)
        self.clear.on_click(self.on_clear)
        self.on_sampling()
        self._show_image()

        controls = widgets.VBox(
            [
                widgets.HBox([self.sample, self.upload]),
                self.source,
                widgets.HBox([self.question, self.ask]),
                widgets.HBox([self.keep, self.clear]),
                widgets.HTML("<b>Decoding</b>"),
                widgets.HBox([self.max_new_tokens, self.num_beams]),
                widgets.HBox([self.sampling, self.temperature, self.top_p]),
            ],
            layout={"flex": "1"},
        )
        self.widget = _DemoBox([widgets.HBox([self.preview, controls]), self.answer])

    # ---- state ----------------------------------------------------------------------------------
    def current_image(self) -> Image.Image:
        """The uploaded image if there is one, else the chosen sample."""
        if self._uploaded is not None:
            return self._uploaded
        if self._pictures is not None:
            return self._pictures[self.sample.value]
        return sample_image(self.sample.value)

    def settings(self) -> GenerationSettings:
        """Decoding settings from the sliders; temperature and top p only matter when sampling."""
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens.value,
            num_beams=self.num_beams.value,
            use_nucleus_sampling=self.sampling.value,
            temperature=self.temperature.value,
            top_p=self.top_p.value,
        )

    # ---- handlers -------------------------------------------------------------------------------
    def on_ask(self, button: Any = None) -> None:
        """Answer the question about the current image; problems are shown in the answer area."""
        question = self.question.value.strip()
        if not question:
            self._show_error("Type a question first, e.g. 'What is shown in the photo?'")
            return
        context = tuple(self.history) if self.keep.value else ()
        self.ask.disabled = True
        self.answer.value = "<i>Generating…</i>"
        try:
            answer = self.model.ask(
                [self.current_image()], question, context=context, settings=self.settings()
            )[0]
        except Exception as exc:  # a demo reports every failure (bad settings, out of memory) in place
            self._show_error(f"{type(exc).__name__}: {exc}")
            return
        finally:
            self.ask.disabled = False
        if self.keep.value:
            self.history.append((question, answer))
        self._show_answer(question, answer, context)

    def on_clear(self, button: Any = None) -> None:
        """Forget earlier turns: the next question is asked without context."""
        self.history.clear()
        self.answer.value = "<i>Conversation cleared.</i>"

    def on_sample(self, change: Any = None) -> None:
        """A sample was picked: it replaces any upload, and a new conversation starts."""
        self._uploaded = None
        self.history.clear()
        self._show_image()

    def on_upload(self, change: Mapping[str, Any] | None = None) -> None:
        """A file was uploaded: use it if it is an image, else say why not and keep the current image.

        `change` is the observer's change (its "new" is the upload's value); without it, `upload.value`.
        """
        value = self.upload.value if change is None else change["new"]
        try:
            uploaded = _uploaded_file(value)
            if uploaded is None:
                return
            name, content = uploaded
            image = load_image(content)
        except (ImageLoadError, TypeError) as exc:
            self._show_error(f"Could not use the uploaded file: {exc}")
            return
        self._uploaded, self._uploaded_name = image, name
        self.history.clear()
        self._show_image()

    def on_sampling(self, change: Any = None) -> None:
        """Temperature and top p are only used when sampling, so grey them out otherwise."""
        self.temperature.disabled = self.top_p.disabled = not self.sampling.value

    def on_keep(self, change: Any = None) -> None:
        """Turning the conversation off forgets it, so turning it on again starts afresh."""
        if not self.keep.value:
            self.history.clear()

    # ---- display --------------------------------------------------------------------------------
    def _show_image(self) -> None:
        image = self.current_image()
        if self._uploaded is not None:
            self.source.value = f"Using your upload <code>{html.escape(self._uploaded_name)}</code>."
        else:
            self.source.value = f"Using the picture <code>{html.escape(self.sample.value)}</code>."
        thumbnail = image.copy()
        thumbnail.thumbnail((_PREVIEW_PIXELS, _PREVIEW_PIXELS))
        buffer = io.BytesIO()
        thumbnail.save(buffer, format="PNG")
        self.preview.value = buffer.getvalue()

    def _show_answer(self, question: str, answer: str, context: Sequence[Turn]) -> None:
        template = getattr(self.model, "vqa_template", VQA_TEMPLATE)
        turns = [*self.history] if self.keep.value else [(question, answer)]
        transcript = "".join(
            f"<p><b>Q:</b> {html.escape(q)}<br><b>A:</b> {html.escape(a)}</p>" for q, a in turns
        )
        prompt = html.escape(vqa_prompt(question, context, template))
        self.answer.value = (
            f"{transcript}<p style='color:#666;font-size:85%'>prompt the language model saw after the "
            f"image's query embeddings: <code>{prompt}</code></p>"
        )

    def _show_error(self, message: str) -> None:
        self.answer.value = f"<p style='color:#b00020'><b>⚠</b> {html.escape(message)}</p>"


class _DemoBox(widgets.VBox):
    """The demo's outer box, with a readable text form for copies of the notebook that have no live kernel.

    A headless run (papermill, nbviewer, GitHub) keeps only the widget's text form, which would otherwise be
    the whole widget tree with the preview's PNG bytes.
    """

    def __repr__(self) -> str:
        return "[VQA demo: interactive widgets, shown only when the notebook runs in Jupyter or Colab]"


def vqa_demo(
    model: Any,
    sample: str | None = None,
    pictures: Mapping[str, Image.Image] | None = None,
    question: str = "What is shown in the photo?",
) -> widgets.Widget:
    """The VQA demo as one widget: leave it as a cell's last expression to display it."""
    return VQADemo(model, sample, pictures, question).widget

"""The film of the toy world's pretraining: snapshots of both stages on fixed held-out probe scenes.

At about 20 log-spaced step counts per stage (0 = before the first step), a `Recorder` measures, on the same
probe scenes every time: stage 1's cross-attention of each query over the patches, the ITC similarities of
probe images and their captions, the projected query and text embeddings, the ITM probabilities of the true
pairs and of ITC-mined hard negatives, and linear-probe accuracies of each attribute read from the queries;
stage 2's greedy answers to fixed questions and the language tokens nearest each projected query. A snapshot
runs under `torch.no_grad` in eval mode and draws no random numbers, so recording never changes the training.

A film is one compressed `.npz` per stage (`FILES`), next to the weights in data/toyworld/; `load_film` reads
and validates one.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from transformers import Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval, Blip2Processor

from helpers.anatomy import recorded_cross_attentions
from helpers.atomic import staged_file
from helpers.evaluation.vqa_scoring import vqa_scores
from helpers.offline import weights_dir
from helpers.prompts import VQA_TEMPLATE
from helpers.toyworld import data, world

FRAMES = 20
"""Snapshots per stage, log-spaced so the fast early changes get as many frames as the slow late ones."""
PROBE_SCENES = 24
"""Held-out validation scenes with pairwise distinct captions: the ITC matrix has one right text per image."""
PROBE_FIT_SCENES = 256
PROBE_EVAL_SCENES = 128
"""The linear probes are fitted on training scenes' query outputs and scored on other validation scenes."""
PROBE_RIDGE = 1.0
"""Ridge penalty of the linear probes (closed form: no random numbers, the same fit every time)."""
QUESTION_SCENES = 8
"""Probe scenes whose six questions (one per kind) stage-2 snapshots answer and whose captions they write."""
NEAREST = 3
"""Language tokens listed per projected query."""
ANSWER_TOKENS = 4
CAPTION_TOKENS = 12
LIFT = 1.5
"""A query is concentrated on the objects when its object lift (`object_lift`) is at least this: each patch
holding a shape gets at least 1.5 times the attention of an empty patch (uniform attention gives 1)."""

FILES = {1: "film_stage1.npz", 2: "film_stage2.npz"}
"""The film of each stage, written next to the checkpoints."""
FORMAT = 1
ABLATION_FILMS = "ablation_films"
"""Subfolder of a run's folder with one folder of films per ablation (`python -m helpers.toyworld`)."""
ABLATION_FOLDERS = ("no_stage1", "no_itg")
"""The ablations' folders, in the order `python -m helpers.toyworld` trains them and ablations.json lists them."""

STAGE1_ARRAYS = {
    "attention": 5,  # (frames, cross-attention layers, probe scenes, queries, patches)
    "itc": 3,  # (frames, scenes, scenes): cosine of the best query with each caption
    "image_embeds": 4,  # (frames, scenes, queries, projection)
    "text_embeds": 3,  # (frames, scenes, projection)
    "itm_positive": 2,  # (frames, scenes): P(match) of the true pair
    "itm_negative": 2,  # (frames, scenes): P(match) of the image with its hardest wrong caption by ITC
    "hard_negative": 2,  # (frames, scenes): index of that caption
    "probe_accuracy": 2,  # (frames, attributes)
}
STAGE2_ARRAYS = {
    "answers": 2,  # (frames, questions)
    "answer_right": 2,  # (frames, questions)
    "captions": 2,  # (frames, question scenes)
    "nearest_tokens": 4,  # (frames, question scenes, queries, NEAREST)
}
ARRAYS = {1: STAGE1_ARRAYS, 2: STAGE2_ARRAYS}


def frame_steps(steps: int, frames: int = FRAMES) -> list[int]:
    """0 (before training) and up to `frames - 1` distinct log-spaced step counts ending at `steps`."""
    if steps < 1 or frames < 2:
        raise ValueError(f"steps={steps}, frames={frames}: a film needs at least one step and two frames")
    spaced = np.rint(np.geomspace(1, steps, num=frames - 1)).astype(int).tolist()
    return [0, *sorted(set(spaced))]


@dataclass(frozen=True)
class Probe:
    """The fixed held-out scenes every snapshot measures, rendered once."""

    seed: int
    scenes: list[world.Scene]
    fit_scenes: list[world.Scene]
    eval_scenes: list[world.Scene]
    pixels: torch.Tensor = field(repr=False)  # uint8 (scenes + fit + eval, 3, 224, 224)

    @classmethod
    def of(cls, seed: int = 0, count: int = PROBE_SCENES) -> Probe:
        scenes = world.retrieval_set(seed, "val", count)
        fit = world.scenes(seed, "train", PROBE_FIT_SCENES)
        # retrieval_set draws from the start of the split; the probe's scoring scenes come after them
        evaluation = world.scenes(seed, "val", PROBE_EVAL_SCENES, start=10_000)
        return cls(seed, scenes, fit, evaluation, data.render_uint8([*scenes, *fit, *evaluation]))

    @property
    def questions(self) -> list[tuple[int, world.QA]]:
        """One question of each kind about each of the first QUESTION_SCENES scenes, as (scene, QA)."""
        return world.split_questions(self.seed, "val", self.scenes[:QUESTION_SCENES])


def attribute_labels(scenes: Sequence[world.Scene]) -> dict[str, np.ndarray]:
    """Each attribute's value index per scene."""
    return {
        name: np.array([values.index(getattr(scene, name)) for scene in scenes])
        for name, values in world.ATTRIBUTES.items()
    }


def object_patches(scene: world.Scene, grid: int = world.GRID) -> np.ndarray:
    """(grid * grid,) bool: the patches (row-major, as the ViT orders them) that hold a shape's centre."""
    cell = world.IMAGE_SIZE // grid
    mask = np.zeros(grid * grid, dtype=bool)
    for x, y in scene.centres:
        mask[(y // cell) * grid + x // cell] = True
    return mask


def ridge_probe_accuracy(
    fit: torch.Tensor, fit_labels: np.ndarray, test: torch.Tensor, test_labels: np.ndarray, classes: int
) -> float:
    """Accuracy on `test` of a one-vs-rest ridge classifier fitted on standardised `fit` features."""
    mean, std = fit.mean(0), fit.std(0) + 1e-6
    x, z = (fit - mean) / std, (test - mean) / std
    targets = F.one_hot(torch.as_tensor(fit_labels), classes).to(x.dtype)
    gram = x @ x.T + PROBE_RIDGE * torch.eye(len(x), dtype=x.dtype)
    weights = x.T @ torch.linalg.solve(gram, targets)  # dual form: fewer scenes than features
    return float(((z @ weights).argmax(1).numpy() == test_labels).mean())


class Recorder:
    """Snapshots of one stage's model at `frame_steps(steps)`; hand `on_start`/`on_step` to `stages.stageN`."""

    def __init__(
        self,
        stage: int,
        model: Blip2ForImageTextRetrieval | Blip2ForConditionalGeneration,
        processor: Blip2Processor,
        probe: Probe,
        steps: int,
        frames: int = FRAMES,
    ) -> None:
        if stage not in ARRAYS:
            raise ValueError(f"stage={stage}; the film records stage 1 or 2")
        self.stage, self.model, self.processor, self.probe = stage, model, processor, probe
        self.steps = frame_steps(steps, frames)
        self.frames: list[dict[str, np.ndarray]] = []
        self.pixels = data.PixelNormaliser(processor.image_processor)(probe.pixels)

    def on_start(self) -> None:
        self._snapshot()

    def on_step(self, step: int, _loss: object = None) -> None:
        if step + 1 in self.steps:
            self._snapshot()

    @torch.no_grad()
    def _snapshot(self) -> None:
        training = self.model.training
        self.model.eval()
        try:
            measure = stage1_snapshot if self.stage == 1 else stage2_snapshot
            self.frames.append(measure(self.model, self.processor, self.probe, self.pixels))
        finally:
            self.model.train(training)

    def film(self, losses: Mapping[str, Sequence[float]], run: str) -> Film:
        """The recorded frames as a film, with the stage's loss history (one list per objective)."""
        if len(self.frames) != len(self.steps):
            raise RuntimeError(
                f"{len(self.frames)} snapshots for {len(self.steps)} frame steps: did training stop early?"
            )
        arrays = {name: np.stack([frame[name] for frame in self.frames]) for name in ARRAYS[self.stage]}
        meta = {
            "format": FORMAT,
            "stage": self.stage,
            "run": run,
            "seed": self.probe.seed,
            "steps": self.steps,
            "attributes": list(world.ATTRIBUTES),
            "probe_captions": [scene.caption() for scene in self.probe.scenes],
            "probe_attributes": [scene.attributes for scene in self.probe.scenes],
            "object_patches": [object_patches(scene).tolist() for scene in self.probe.scenes],
            "questions": [
                [position, qa.question, qa.answer, qa.kind] for position, qa in self.probe.questions
            ],
        }
        return Film(meta, arrays, {name: np.asarray(values, np.float32) for name, values in losses.items()})


def stage1_snapshot(
    model: Blip2ForImageTextRetrieval, processor: Blip2Processor, probe: Probe, pixels: torch.Tensor
) -> dict[str, np.ndarray]:
    """Attention, ITC, embeddings, ITM against hard negatives and attribute probes of a stage-1 model."""
    count = len(probe.scenes)
    vision = model.vision_model(pixel_values=pixels).last_hidden_state
    queries = model.query_tokens.expand(len(vision), -1, -1)
    with recorded_cross_attentions(model.qformer) as records:
        query_output = model.qformer(query_embeds=queries, encoder_hidden_states=vision).last_hidden_state
    attention = torch.stack(records)[:, :count].mean(2)[..., 1:]  # heads averaged, [CLS] column dropped
    image_embeds = F.normalize(model.vision_projection(query_output[:count]), dim=-1)
    tokens = processor.tokenizer(
        [scene.caption() for scene in probe.scenes], padding=True, return_tensors="pt"
    )
    text_hidden = model.qformer(
        query_embeds=model.embeddings(input_ids=tokens["input_ids"]),
        query_length=0,
        attention_mask=tokens["attention_mask"],
    ).last_hidden_state
    text_embeds = F.normalize(model.text_projection(text_hidden[:, 0]), dim=-1)
    itc = torch.einsum("iqd,td->itq", image_embeds, text_embeds).amax(-1)
    hard = itc.masked_fill(torch.eye(count, dtype=torch.bool), -2).argmax(1)
    positive = _itm_match(model, vision[:count], tokens, torch.arange(count))
    negative = _itm_match(model, vision[:count], tokens, hard)
    features = query_output.flatten(1)
    fit = slice(count, count + len(probe.fit_scenes))
    scored = slice(fit.stop, None)
    fit_labels, eval_labels = attribute_labels(probe.fit_scenes), attribute_labels(probe.eval_scenes)
    accuracy = [
        ridge_probe_accuracy(
            features[fit], fit_labels[name], features[scored], eval_labels[name], len(values)
        )
        for name, values in world.ATTRIBUTES.items()
    ]
    return {
        "attention": attention.numpy().astype(np.float16),
        "itc": itc.numpy().astype(np.float16),
        "image_embeds": image_embeds.numpy().astype(np.float16),
        "text_embeds": text_embeds.numpy().astype(np.float16),
        "itm_positive": positive.numpy().astype(np.float16),
        "itm_negative": negative.numpy().astype(np.float16),
        "hard_negative": hard.numpy().astype(np.int16),
        "probe_accuracy": np.array(accuracy, np.float32),
    }


def _itm_match(
    model: Blip2ForImageTextRetrieval,
    vision: torch.Tensor,
    tokens: Mapping[str, torch.Tensor],
    texts: torch.Tensor,
) -> torch.Tensor:
    """P(match) of each image with text `texts[i]`, the queries reading image and text together (ITM)."""
    queries = model.query_tokens.expand(len(vision), -1, -1)
    query_mask = torch.ones(queries.shape[:-1], dtype=torch.long)
    hidden = model.qformer(
        query_embeds=model.embeddings(input_ids=tokens["input_ids"][texts], query_embeds=queries),
        query_length=queries.shape[1],
        attention_mask=torch.cat([query_mask, tokens["attention_mask"][texts]], dim=1),
        encoder_hidden_states=vision,
    ).last_hidden_state
    return model.itm_head(hidden[:, : queries.shape[1]]).mean(1).softmax(-1)[:, 1]


def stage2_snapshot(
    model: Blip2ForConditionalGeneration, processor: Blip2Processor, probe: Probe, pixels: torch.Tensor
) -> dict[str, np.ndarray]:
    """Greedy answers and captions of the question scenes, and the LM tokens nearest each projected query."""
    questions = probe.questions
    shown = pixels[:QUESTION_SCENES]
    answers = _greedy(
        model,
        processor,
        shown[[position for position, _ in questions]],
        [VQA_TEMPLATE.format(qa.question) for _, qa in questions],
        ANSWER_TOKENS,
    )
    right = np.array(vqa_scores(answers, [qa.answers for _, qa in questions], scoring="lenient")) == 1.0
    captions = _greedy(model, processor, shown, [""] * len(shown), CAPTION_TOKENS)
    vision = model.vision_model(pixel_values=shown).last_hidden_state
    queries = model.query_tokens.expand(len(vision), -1, -1)
    query_output = model.qformer(query_embeds=queries, encoder_hidden_states=vision).last_hidden_state
    projected = F.normalize(model.language_projection(query_output), dim=-1)
    vocabulary = F.normalize(model.get_input_embeddings().weight, dim=-1)
    nearest = (projected @ vocabulary.T).topk(NEAREST, dim=-1).indices
    words = processor.tokenizer.convert_ids_to_tokens(nearest.flatten().tolist())
    readable = [processor.tokenizer.convert_tokens_to_string([word]) for word in words]
    return {
        "answers": np.array(answers, dtype=str),
        "answer_right": right,
        "captions": np.array(captions, dtype=str),
        "nearest_tokens": np.array(readable, dtype=str).reshape(tuple(nearest.shape)),
    }


def _greedy(
    model: Blip2ForConditionalGeneration,
    processor: Blip2Processor,
    pixels: torch.Tensor,
    prompts: list[str],
    max_new_tokens: int,
) -> list[str]:
    """Greedy continuations of `prompts` after each image's visual prompt, laid out as the HF backend's
    `processor(images=..., text=...)` lays them out: the image tokens the queries replace, then the left-padded
    text. Without the image tokens `generate` would place the queries nowhere and the LM would answer blind.
    The prompts are padded by `tokenizer.pad`, not by the tokenizer call: a padded call leaves padding switched
    on in the fast tokenizer, and `save_pretrained` would then ship it in tokenizer.json."""
    tokenizer = processor.tokenizer
    unpadded = processor(text=prompts)
    text = tokenizer.pad(
        {name: unpadded[name] for name in ("input_ids", "attention_mask")},
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    image_tokens = torch.full((len(prompts), model.config.num_query_tokens), model.config.image_token_id)
    input_ids = torch.cat([image_tokens, text["input_ids"]], dim=1)
    output = model.generate(
        pixel_values=pixels,
        input_ids=input_ids,
        attention_mask=torch.cat([torch.ones_like(image_tokens), text["attention_mask"]], dim=1),
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
    )[:, input_ids.shape[1] :]
    return [text.strip() for text in tokenizer.batch_decode(output, skip_special_tokens=True)]


@dataclass
class Film:
    """One stage's snapshots (`arrays`, frames first), what they were measured on (`meta`) and its losses."""

    meta: dict
    arrays: dict[str, np.ndarray]
    losses: dict[str, np.ndarray]

    @property
    def stage(self) -> int:
        return int(self.meta["stage"])

    @property
    def steps(self) -> list[int]:
        return list(self.meta["steps"])

    def validate(self, source: str = "film") -> Film:
        """Raise ValueError naming `source` and what is wrong unless every array fits the meta."""
        problems = []
        if self.meta.get("format") != FORMAT:
            problems.append(f"format {self.meta.get('format')!r}, this kit reads format {FORMAT}")
        if self.meta.get("stage") not in ARRAYS:
            raise ValueError(f"{source}: stage {self.meta.get('stage')!r} is neither 1 nor 2")
        steps = self.meta.get("steps", [])
        if len(steps) < 2 or steps[0] != 0 or any(b <= a for a, b in itertools.pairwise(steps)):
            problems.append(f"steps {steps} must start at 0 and increase")
        for name, ndim in ARRAYS[self.stage].items():
            array = self.arrays.get(name)
            if array is None:
                problems.append(f"array {name!r} is missing")
            elif array.ndim != ndim or array.shape[0] != len(steps):
                problems.append(
                    f"array {name!r} has shape {array.shape}, expected {ndim} axes, {len(steps)} frames"
                )
        if not self.losses or any(len(values) < steps[-1] for values in self.losses.values()):
            problems.append(
                f"losses {sorted(self.losses)} must each hold at least the film's {steps[-1]} steps"
            )
        if problems:
            raise ValueError(f"{source}: " + "; ".join(problems) + "; re-record it with `make toyworld`")
        return self

    def save(self, path: str | Path) -> Path:
        """Write the film as one compressed .npz, atomically (temporary file, then rename)."""
        path = Path(path)
        self.validate(str(path))
        contents = {"meta": np.array(json.dumps(self.meta)), **self.arrays}
        contents.update({f"loss/{name}": values for name, values in self.losses.items()})
        with staged_file(path) as temporary, temporary.open("wb") as stream:
            np.savez_compressed(stream, **contents)  # to a stream: no ".npz" appended to the temporary name
        return path


def load_film(path: str | Path) -> Film:
    """Read and validate a film written by `Film.save` (no pickles: strings are stored as unicode arrays)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no film; `make toyworld` records one next to the weights")
    with np.load(path, allow_pickle=False) as stored:
        if "meta" not in stored:
            raise ValueError(
                f"{path}: not a toy-world film (no 'meta' entry); re-record it with `make toyworld`"
            )
        meta = json.loads(str(stored["meta"]))
        arrays = {
            name: stored[name] for name in stored.files if name != "meta" and not name.startswith("loss/")
        }
        losses = {name[5:]: stored[name] for name in stored.files if name.startswith("loss/")}
    return Film(meta, arrays, losses).validate(str(path))


def load_films(folder: str | Path) -> dict[int, Film]:
    """Every stage's film in a run's folder (data/toyworld/ for the shipped run)."""
    return {stage: load_film(Path(folder) / name) for stage, name in FILES.items()}


def load_runs(folder: str | Path | None = None) -> dict[str, dict[int, Film]]:
    """The films of a run and of its ablations (under ABLATION_FILMS), keyed by each run's name: the shipped
    run's when `folder` is None. A run without stage 1 has only a stage-2 film; a folder with no film fails."""
    folder = weights_dir() if folder is None else Path(folder)
    main = load_films(folder)
    runs = {main[2].meta["run"]: main}
    ablations = folder / ABLATION_FILMS
    folders = sorted(ablations.iterdir(), key=_ablation_rank) if ablations.is_dir() else []
    for run_folder in folders:
        found = {stage: run_folder / name for stage, name in FILES.items() if (run_folder / name).is_file()}
        if not found:
            raise FileNotFoundError(
                f"{run_folder}: no film in this ablation's folder; re-record with `make toyworld`"
            )
        films = {stage: load_film(path) for stage, path in found.items()}
        runs[next(iter(films.values())).meta["run"]] = films
    return runs


def _ablation_rank(folder: Path) -> tuple[int, str]:
    known = folder.name in ABLATION_FOLDERS
    return (ABLATION_FOLDERS.index(folder.name) if known else len(ABLATION_FOLDERS), folder.name)


def curves(run_films: Mapping[int, Film]) -> dict[str, list[float]]:
    """A filmed run's whole loss histories, named as `Trained.curves()` names them ("stage 1 itc", ...,
    "stage 2"): the shipped run's curves travel in its films."""
    named = {}
    for stage, recorded in sorted(run_films.items()):
        for name, values in recorded.losses.items():
            named[f"stage {stage}" if name == "lm" else f"stage {stage} {name}"] = values.tolist()
    return named


def stage_losses(losses: Mapping[str, Sequence], phase: str) -> dict[str, list[float]]:
    """One phase's loss history as {objective: values}: stage 1's per-step dicts split, stage 2's as "lm"."""
    history = losses.get(phase, [])
    if history and isinstance(history[0], Mapping):
        return {name: [step[name] for step in history] for name in history[0] if name != "total"}
    return {"lm": [float(value) for value in history]}


def object_lift(film: Film, frame: int = -1) -> np.ndarray:
    """Each query's attention per object patch divided by its attention per empty patch, averaged over the
    probe scenes, in the cross-attention layer where that ratio is highest (uniform attention: 1)."""
    if film.stage != 1:
        raise ValueError("attention is recorded in stage 1's film; pass films[1]")
    attention = film.arrays["attention"][frame].astype(np.float32)  # (layers, scenes, queries, patches)
    objects = np.array(film.meta["object_patches"], dtype=bool)[None, :, None, :]
    on = np.where(objects, attention, 0).sum(-1) / objects.sum(-1)
    off = np.maximum(
        np.where(objects, 0, attention).sum(-1) / (~objects).sum(-1), 1e-6
    )  # all on objects: huge
    return (on / off).mean(1).max(0)


def concentrated_queries(film: Film, frame: int = -1) -> int:
    """How many queries are concentrated on the objects (object lift >= LIFT) at a frame."""
    return int((object_lift(film, frame) >= LIFT).sum())


def itc_top1(film: Film, frame: int = -1) -> float:
    """Share of probe images whose own caption has the highest ITC similarity."""
    itc = film.arrays["itc"][frame].astype(np.float32)
    return float((itc.argmax(1) == np.arange(len(itc))).mean())


def answer_accuracy(film: Film, frame: int = -1) -> float:
    """Share of the probe questions the LM answered right at a frame."""
    return float(film.arrays["answer_right"][frame].mean())


def record_hooks(recorder: Recorder | None, on_step: Callable) -> dict[str, Callable]:
    """The `on_start`/`on_step` keywords of `stages.stageN`: the progress bar, plus the recorder if any."""
    if recorder is None:
        return {"on_step": on_step}

    def both(step: int, loss: object) -> None:
        on_step(step, loss)
        recorder.on_step(step, loss)

    return {"on_start": recorder.on_start, "on_step": both}

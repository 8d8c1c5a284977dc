"""The whole miniature recipe in one call: world, tokenizers, unimodal models, stage 1, stage 2, checkpoints."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import transformers
from tqdm.auto import tqdm
from transformers import (
    Blip2ForConditionalGeneration,
    Blip2ForImageTextRetrieval,
    Blip2Processor,
    Blip2VisionModel,
    OPTForCausalLM,
)

from helpers.atomic import staged_folder
from helpers.environment import live_progress
from helpers.pretraining import STAGE1_OBJECTIVES
from helpers.toyworld import data, film, models, sequences, stages, tokenizers, unimodal, world

CAPTION = "caption"
RETRIEVAL = "retrieval"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights; `make toyworld` uses the defaults."""

    seed: int = 0
    train_scenes: int = 2000
    text_scenes: int = 10000
    extra_yes_no: int = 3
    sizes: models.Sizes = field(default_factory=models.Sizes)
    vision_steps: int = 500
    vision_batch: int = 32
    lm_steps: int = 2500
    lm_batch: int = 64
    stage1_steps: int = 1200
    stage1_batch: int = 32
    stage2_steps: int = 1200
    stage2_batch: int = 32

    def __post_init__(self) -> None:
        if self.text_scenes < self.train_scenes:
            raise ValueError(
                f"text_scenes={self.text_scenes} < train_scenes={self.train_scenes}: the LM reads the text of "
                "every rendered scene and more; raise text_scenes"
            )

    def reduced(self) -> Recipe:
        """A run small enough for CI and a notebook: same recipe, fewer scenes and steps (weights not shipped)."""
        return replace(
            self,
            train_scenes=200,
            text_scenes=400,
            vision_steps=20,
            vision_batch=16,
            lm_steps=30,
            lm_batch=16,
            stage1_steps=15,
            stage1_batch=16,
            stage2_steps=20,
            stage2_batch=16,
        )


@dataclass
class Trained:
    """The two checkpoints' models and processors, the loss histories and the seconds each phase took."""

    recipe: Recipe
    retrieval: Blip2ForImageTextRetrieval
    retrieval_processor: Blip2Processor
    caption: Blip2ForConditionalGeneration
    caption_processor: Blip2Processor
    losses: dict[str, list] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    films: dict[int, film.Film] = field(default_factory=dict)

    def curves(self) -> dict[str, list[float]]:
        """Every loss history by name, stage 1 split into its objectives: what `loss_curves` plots."""
        curves: dict[str, list[float]] = {}
        for phase, history in self.losses.items():
            if history and isinstance(history[0], dict):
                for name in history[0]:
                    if name != "total":
                        curves[f"{phase} {name}"] = [step[name] for step in history]
            else:
                curves[phase] = list(history)
        return curves


class _Phase:
    """A progress bar and a loss history for one training phase, and its wall time."""

    def __init__(self, trained_losses: dict[str, list], seconds: dict[str, float], name: str, steps: int):
        self.name, self.history, self.seconds = name, trained_losses.setdefault(name, []), seconds
        self.bar = tqdm(total=steps, desc=name, leave=True, disable=not live_progress())
        self.start = time.perf_counter()

    def __call__(self, step: int, loss: float | dict[str, float]) -> None:
        self.history.append(loss)
        shown = loss if isinstance(loss, dict) else {"loss": loss}
        self.bar.set_postfix({key: f"{value:.3f}" for key, value in shown.items()}, refresh=False)
        self.bar.update()

    def close(self) -> None:
        self.bar.close()
        self.seconds[self.name] = time.perf_counter() - self.start


@dataclass
class Unimodal:
    """The world's training data and the frozen models both stages start from (shared by the ablations)."""

    recipe: Recipe
    scenes: list[world.Scene]
    examples: list[list[sequences.Example]]
    pixels: stages.Pixels
    caption_processor: Blip2Processor
    retrieval_processor: Blip2Processor
    vision: Blip2VisionModel
    language_model: OPTForCausalLM
    losses: dict[str, list] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def pretrain_unimodal(recipe: Recipe, language_model: OPTForCausalLM | None = None) -> Unimodal:
    """Render the training split, learn both tokenizers, pretrain the ViT and the OPT on their own.

    A given `language_model` (a saved run's frozen OPT) is used instead of pretraining one: the ViT comes
    first and draws the same random numbers either way, so a saved run's stages can be repeated exactly.
    """
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    sizes = recipe.sizes
    losses: dict[str, list] = {}
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    text = scene_examples(recipe, recipe.text_scenes)
    scenes = [scene for scene, _ in text[: recipe.train_scenes]]  # the rendered ones come first
    lines = world.world_text(recipe.seed, recipe.train_scenes)
    caption_processor = models.caption_processor(tokenizers.opt_tokenizer(lines), sizes)
    retrieval_processor = models.retrieval_processor(tokenizers.bert_tokenizer(lines), sizes)
    pixels_uint8 = data.render_uint8(scenes)
    normalise = data.PixelNormaliser(caption_processor.image_processor)

    def pixels(indices: torch.Tensor) -> torch.Tensor:
        return normalise(pixels_uint8[indices])

    seconds["world"] = time.perf_counter() - start

    phase = _Phase(losses, seconds, "vision", recipe.vision_steps)
    vision, _ = unimodal.train_vision(
        sizes,
        pixels,
        unimodal.attribute_labels(scenes),
        unimodal.patch_labels(scenes),
        steps=recipe.vision_steps,
        batch_size=recipe.vision_batch,
        generator=generator,
        on_step=phase,
    )
    phase.close()

    if language_model is None:
        phase = _Phase(losses, seconds, "language model", recipe.lm_steps)  # tokenizing the corpus included
        documents = [
            document
            for scene, examples in text
            for document in sequences.text_documents(
                caption_processor.tokenizer, scene, examples, sizes.num_query_tokens
            )
        ]
        language_model = unimodal.train_language_model(
            sizes,
            caption_processor.tokenizer,
            documents,
            steps=recipe.lm_steps,
            batch_size=recipe.lm_batch,
            generator=generator,
            on_step=phase,
        )
        phase.close()
    return Unimodal(
        recipe,
        scenes,
        [examples for _, examples in text[: recipe.train_scenes]],
        pixels,
        caption_processor,
        retrieval_processor,
        vision,
        language_model,
        losses,
        seconds,
    )


def two_stage(
    base: Unimodal,
    *,
    objectives: Collection[str] = STAGE1_OBJECTIVES,
    skip_stage1: bool = False,
    probe: film.Probe | None = None,
    run: str = "BLIP-2",
    frames: int = film.FRAMES,
) -> Trained:
    """Stage 1 then stage 2 on the frozen unimodal models; `skip_stage1`/`objectives` give the ablations.

    With a `probe`, each stage is filmed on its scenes in up to `frames` snapshots (`film.Recorder`, `run`
    names the film); recording draws no random numbers, so the trained weights are the same without it.
    """
    recipe, sizes = base.recipe, base.recipe.sizes
    torch.manual_seed(recipe.seed + 1)
    generator = torch.Generator().manual_seed(recipe.seed + 1)
    losses = {name: list(history) for name, history in base.losses.items()}
    seconds = dict(base.seconds)
    retrieval = models.retrieval_model(sizes, base.retrieval_processor.tokenizer)
    recorders: dict[int, film.Recorder] = {}
    if not skip_stage1:
        bert = base.retrieval_processor.tokenizer
        tokens = bert([scene.caption() for scene in base.scenes], padding=True, return_tensors="pt")
        group_of = {
            caption: group for group, caption in enumerate(sorted({s.caption() for s in base.scenes}))
        }
        groups = torch.tensor([group_of[scene.caption()] for scene in base.scenes])
        phase = _Phase(losses, seconds, "stage 1", recipe.stage1_steps)
        if probe is not None:
            recorders[1] = film.Recorder(
                1, retrieval, base.retrieval_processor, probe, recipe.stage1_steps, frames
            )
        stages.stage1(
            retrieval,
            base.vision,
            base.pixels,
            tokens,
            groups,
            dec_token_id=bert.bos_token_id,
            steps=recipe.stage1_steps,
            batch_size=recipe.stage1_batch,
            generator=generator,
            objectives=objectives,
            **film.record_hooks(recorders.get(1), phase),
        )
        phase.close()

    tokenizer = base.caption_processor.tokenizer
    image_token = tokenizer.convert_tokens_to_ids(base.caption_processor.image_token.content)
    examples = [
        (index, sequences.visual_example(tokenizer, image_token, sizes.num_query_tokens, example))
        for index, taught in enumerate(base.examples)
        for example in taught
    ]
    caption = models.generation_model(sizes, base.caption_processor)
    phase = _Phase(losses, seconds, "stage 2", recipe.stage2_steps)
    if probe is not None:
        recorders[2] = film.Recorder(2, caption, base.caption_processor, probe, recipe.stage2_steps, frames)
    stages.stage2(
        caption,
        base.language_model,
        None if skip_stage1 else retrieval,
        base.vision,
        base.pixels,
        examples,
        steps=recipe.stage2_steps,
        batch_size=recipe.stage2_batch,
        generator=generator,
        **film.record_hooks(recorders.get(2), phase),
    )
    phase.close()
    films = {
        stage: recorder.film(film.stage_losses(losses, f"stage {stage}"), run)
        for stage, recorder in recorders.items()
    }
    return Trained(
        recipe, retrieval, base.retrieval_processor, caption, base.caption_processor, losses, seconds, films
    )


def train(recipe: Recipe) -> Trained:
    """The whole recipe: unimodal pretraining, then both stages."""
    return two_stage(pretrain_unimodal(recipe))


def scene_examples(recipe: Recipe, count: int) -> list[tuple[world.Scene, list[sequences.Example]]]:
    """The first `count` training scenes, each with its caption, one question of every kind and
    `extra_yes_no` more yes/no probes: what the LM reads as text and stage 2 teaches through the image.

    Yes/no is comparing a word of the question with the description, which a 3-layer LM learns last: with one
    probe per scene it still answered a quarter of them wrong after 1500 steps, with four 1% to 13%.
    """
    scenes = world.scenes(recipe.seed, "train", count)
    rng = np.random.default_rng([recipe.seed, len(world.SPLITS)])
    return [
        (
            scene,
            sequences.examples(
                scene, [*questions, *(world.yes_no(scene, rng) for _ in range(recipe.extra_yes_no))]
            ),
        )
        for scene, questions in zip(scenes, _questions_by_scene(recipe.seed, scenes), strict=True)
    ]


def _questions_by_scene(seed: int, scenes: list[world.Scene]) -> list[list[world.QA]]:
    grouped: list[list[world.QA]] = [[] for _ in scenes]
    for position, qa in world.split_questions(seed, "train", scenes):
        grouped[position].append(qa)
    return grouped


def save(trained: Trained, destination: Path, extra: dict | None = None) -> Path:
    """Write caption/, retrieval/ (HF layout, safetensors) and manifest.json, then rename into place atomically."""
    with staged_folder(destination, replace=True) as staging:
        trained.caption.save_pretrained(staging / CAPTION)
        trained.caption_processor.save_pretrained(staging / CAPTION)
        trained.retrieval.save_pretrained(staging / RETRIEVAL)
        trained.retrieval_processor.save_pretrained(staging / RETRIEVAL)
        manifest = {
            "recipe": asdict(trained.recipe),
            "train_seconds": round(sum(trained.seconds.values()), 1),
            "seconds": {name: round(value, 1) for name, value in trained.seconds.items()},
            "final_losses": {name: history[-1] for name, history in trained.losses.items() if history},
            "made_with": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpu_threads": torch.get_num_threads(),
            },
            "command": "make toyworld",
            **(extra or {}),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        for stage, recorded in trained.films.items():
            recorded.save(staging / film.FILES[stage])
    return Path(destination)

"""The one interface every backend offers, so notebooks never branch on the backend.

Backends implement a few primitives (generate from prompts, encode images and texts, score pairs with the
ITM head); the user-facing tasks, prompt building, input checking and the ranking protocol live here once.
"""

from __future__ import annotations

import gc
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from PIL import Image

from helpers import offline
from helpers.checkpoints import caption_prompt as checkpoint_caption_prompt
from helpers.generation import GenerationSettings
from helpers.images import ImageSource, load_images
from helpers.precision import Precision
from helpers.prompts import VQA_TEMPLATE, Turn, lavis_caption, lavis_question, vqa_prompt
from helpers.user_input import (
    check_context,
    check_per_image,
    check_prompt_lengths,
    check_settings,
    check_top_k,
)

FEATURE_MODES = ("image", "text", "multimodal")
TRAINING_TASKS = ("caption", "vqa", "retrieval")
"""Fine-tuning tasks: caption and vqa train the generation model with the LM loss, retrieval the stage-1 model."""


@dataclass
class Features:
    """LAVIS's feature-extractor output: unset fields are None.

    image_embeds (B, queries, hidden) and image_embeds_proj (B, queries, proj) come from the Q-Former's
    learned queries; text_embeds (T, tokens, hidden) and text_embeds_proj (T, tokens, proj) from its text
    side (token 0 is [CLS]); multimodal_embeds (B, queries, hidden) are the queries after attending to text.
    Projections are L2-normalised, so a dot product is a cosine similarity.
    """

    image_embeds: torch.Tensor | None = None
    image_embeds_proj: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    text_embeds_proj: torch.Tensor | None = None
    multimodal_embeds: torch.Tensor | None = None


@dataclass(frozen=True)
class RankedText:
    """One candidate text for an image: ITC cosine, and the ITM probability if it was re-ranked."""

    text: str
    index: int
    itc: float
    itm: float | None


@dataclass
class MatchScores:
    """Scores of every image against every text: both tensors are (num_images, num_texts)."""

    itc: torch.Tensor
    itm: torch.Tensor


@dataclass
class TrainableParts:
    """What a task trains, in backend-neutral terms, so freezing and LoRA live once in helpers.finetune.

    `root` holds every parameter the task touches and is what `save_pretrained` writes. Everything in it
    trains except `vision` (the frozen image encoder; its final layer norm, LAVIS's `ln_vision`, stays
    trainable) and `language_model` (the frozen LLM, which LoRA may adapt; None for retrieval).
    """

    root: torch.nn.Module
    vision: list[torch.nn.Module]
    language_model: torch.nn.Module | None


class Blip2Backend(ABC):
    """A loaded BLIP-2: captioning, VQA, instructions, retrieval and features behind one API."""

    backend_name: str
    vqa_template: str = VQA_TEMPLATE
    """The zero-shot VQA prompt; a Flan-T5 model uses T5_VQA_TEMPLATE instead."""

    verbose: bool = True
    """Print a line when a model loads; `load_blip2(verbose=False)` turns it off."""
    _ROLES: ClassVar[dict[str, str]] = {"model": "generation", "retrieval": "retrieval"}
    """The attribute that holds each model, loaded on first use, and its role."""

    def __init__(self, caption_model: str, retrieval_model: str, precision: Precision) -> None:
        self.caption_model = caption_model
        self.retrieval_model = retrieval_model
        self.precision = precision
        self._closed = False

    def loaded_models(self) -> list[str]:
        """The models in memory now: "generation" (image encoder, Q-Former and LLM), "retrieval" (stage 1).

        Each loads on first use, so captioning never loads the retrieval model and retrieval never loads the LLM:
        on a T4 the two full models would not fit together.
        """
        return [role for name, role in self._ROLES.items() if name in self.__dict__]

    def close(self) -> None:
        """Free both models' memory, e.g. before loading another BLIP-2 on a T4; the object is unusable after."""
        for name in self._ROLES:
            self.__dict__.pop(name, None)
        self._closed = True
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _announce_load(self, role: str, location: str) -> None:
        """Called by the lazy loaders: refuse after `close()`, and say what loads (a download can take minutes)."""
        if self._closed:
            raise RuntimeError(
                f"this {type(self).__name__} was closed to free memory; load the model again with load_blip2(...)"
            )
        if self.verbose:
            print(f"       | loading the {role} model (first use): {offline.shown_path(location)}")

    def __repr__(self) -> str:
        """One field a line, the kit's own folders shown short (`offline.shown_path`), so lines stay readable."""
        return (
            f"{type(self).__name__}(\n    caption_model={offline.shown_path(self.caption_model)!r},\n"
            f"    retrieval_model={offline.shown_path(self.retrieval_model)!r},\n    precision='{self.precision}',\n"
            f"    loaded={self.loaded_models()},\n)"
        )

    # ---- generation -------------------------------------------------------------------------------
    @property
    def caption_prompt(self) -> str:
        """What `caption` puts before the caption: "a photo of" for the COCO-fine-tuned captioners, which
        were trained and evaluated with it (paper Sec. 4.2, LAVIS's `caption_coco_*`), else nothing."""
        return checkpoint_caption_prompt(self.caption_model)

    def caption(
        self,
        images: ImageSource | Sequence[ImageSource],
        settings: GenerationSettings | None = None,
        prompt: str | None = None,
    ) -> list[str]:
        """Caption each image; with `num_captions=n`, n captions per image, grouped image by image.

        `prompt` (default: `caption_prompt`) starts the text; the captions returned continue it, without it.
        """
        settings = check_settings(settings)
        loaded = load_images(images)
        start = self.caption_prompt if prompt is None else prompt
        return self._checked_generate(loaded, [start] * len(loaded), settings, "caption prompt")

    def ask(
        self,
        images: ImageSource | Sequence[ImageSource],
        questions: str | Sequence[str],
        context: Sequence[Turn] | None = None,
        settings: GenerationSettings | None = None,
    ) -> list[str]:
        """Answer one question per image (or one question for all) with the paper's zero-shot VQA prompt.

        Each question is first cleaned as LAVIS's `blip_question` does (lower case, . ! " ( ) * # : ; ~
        removed); earlier turns of `context` go in as given.
        """
        settings, turns = check_settings(settings), check_context(context)
        loaded = load_images(images)
        asked = check_per_image(questions, len(loaded), "questions")
        prompts = [vqa_prompt(lavis_question(question), turns, self.vqa_template) for question in asked]
        return self._checked_generate(loaded, prompts, settings, "questions")

    def instruct(
        self,
        images: ImageSource | Sequence[ImageSource],
        instruction: str | Sequence[str],
        settings: GenerationSettings | None = None,
    ) -> list[str]:
        """Follow a free-form instruction, given to the language model verbatim after the visual prompt."""
        settings = check_settings(settings)
        loaded = load_images(images)
        instructions = check_per_image(instruction, len(loaded), "instruction")
        return self._checked_generate(loaded, instructions, settings, "instruction")

    def _checked_generate(
        self, images: list[Image.Image], prompts: list[str], settings: GenerationSettings, name: str
    ) -> list[str]:
        """`generate`, after checking each prompt plus the answer fits the language model's positions."""
        lengths, image_tokens, limit = self._prompt_positions(prompts)
        check_prompt_lengths(lengths, name, image_tokens, settings.max_new_tokens, limit)
        return self.generate(images, prompts, settings)

    def _prompt_positions(self, prompts: list[str]) -> tuple[list[int], int, int | None]:
        """(tokens of each prompt, image tokens, the LM's positions); limit None: it has no fixed limit."""
        return [], 0, None

    @abstractmethod
    def generate(
        self, images: list[Image.Image], prompts: list[str], settings: GenerationSettings
    ) -> list[str]:
        """Generate text for each (image, prompt) pair; returns only the new text, without the prompt."""

    # ---- retrieval and features: one protocol over each backend's Q-Former primitives --------------
    @abstractmethod
    def _encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """Frozen-ViT features after its final layer norm (LAVIS's `ln_vision`), (B, ViT tokens, width)."""

    def _vision(self, images: list[Image.Image]) -> torch.Tensor:
        """ViT features, computed once per distinct image: ITM pairs repeat the same image many times."""
        distinct = list({id(image): image for image in images}.values())
        row = {id(image): index for index, image in enumerate(distinct)}
        return self._encode_images(distinct)[[row[id(image)] for image in images]]

    @abstractmethod
    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The Q-Former tokenizer's `input_ids` and `attention_mask`, truncated as in the paper's runs."""

    def _texts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Retrieval texts cleaned as LAVIS's `blip_caption` cleans them, then tokenized."""
        return self._tokens([lavis_caption(text) for text in texts])

    @abstractmethod
    def _query_outputs(self, vision: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned queries after attending to the image: (hidden, L2-normalised ITC projection)."""

    @abstractmethod
    def _text_outputs(self, tokens: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The Q-Former's text side, every token: (hidden, L2-normalised ITC projection)."""

    @abstractmethod
    def _fuse(self, vision: torch.Tensor, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """The queries after attending to the image and to the text together: ITM's input, (B, queries, width)."""

    @abstractmethod
    def _itm_logits(self, fused: torch.Tensor) -> torch.Tensor:
        """The ITM head's (no match, match) logits, averaged over the queries as LAVIS does, (B, 2)."""

    @torch.inference_mode()
    def image_features(self, images: list[Image.Image]) -> Features:
        """Q-Former query outputs for images (image_embeds, image_embeds_proj)."""
        hidden, projected = self._query_outputs(self._vision(images))
        return Features(image_embeds=hidden, image_embeds_proj=projected)

    @torch.inference_mode()
    def text_features(self, texts: list[str]) -> Features:
        """Q-Former text-side outputs (text_embeds, text_embeds_proj)."""
        hidden, projected = self._text_outputs(self._texts(texts))
        return Features(text_embeds=hidden, text_embeds_proj=projected)

    @torch.inference_mode()
    def multimodal_features(self, images: list[Image.Image], texts: list[str]) -> Features:
        """Queries that attended to both the image and its paired text (multimodal_embeds)."""
        return Features(multimodal_embeds=self._fuse(self._vision(images), self._texts(texts)))

    @torch.inference_mode()
    def itm_probabilities(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        """P(match) from the ITM head for each (images[i], texts[i]) pair, shape (len(texts),)."""
        logits = self._itm_logits(self._fuse(self._vision(images), self._texts(texts)))
        return logits.softmax(dim=-1)[:, 1].float()

    @abstractmethod
    def cross_attentions(self, images: list[Image.Image]) -> torch.Tensor:
        """Where the generation model's learned queries look: its Q-Former's cross-attention probabilities.

        Float32 on the CPU, shaped (cross-attention layers, images, heads, queries, ViT tokens); ViT token 0
        is [CLS], then the patches row by row.
        """

    def extract_features(
        self,
        images: ImageSource | Sequence[ImageSource] | None = None,
        texts: str | Sequence[str] | None = None,
        mode: str = "image",
    ) -> Features:
        """LAVIS's `extract_features`: `image`, `text` or `multimodal` (one text per image)."""
        if mode not in FEATURE_MODES:
            raise ValueError(f"mode={mode!r}; use one of {FEATURE_MODES}")
        if mode in ("image", "multimodal") and images is None:
            raise ValueError(f"mode={mode!r} needs images=")
        if mode in ("text", "multimodal") and texts is None:
            raise ValueError(f"mode={mode!r} needs texts=")
        if mode == "image":
            return self.image_features(load_images(images))
        if mode == "text":
            return self.text_features(_as_texts(texts))
        loaded = load_images(images)
        return self.multimodal_features(loaded, check_per_image(texts, len(loaded), "texts"))

    def match(self, images: ImageSource | Sequence[ImageSource], texts: str | Sequence[str]) -> MatchScores:
        """ITC cosine similarity and ITM match probability for every image against every text."""
        loaded = load_images(images)
        candidates = _as_texts(texts)
        itc = self._itc(self.image_features(loaded), self.text_features(candidates))
        pairs_images = [image for image in loaded for _ in candidates]
        itm = self.itm_probabilities(pairs_images, candidates * len(loaded))
        return MatchScores(itc=itc, itm=itm.reshape(len(loaded), len(candidates)))

    def itc_scores(
        self, images: ImageSource | Sequence[ImageSource], texts: str | Sequence[str]
    ) -> torch.Tensor:
        """ITC cosine of every image against every text, (num_images, num_texts): ranking without ITM."""
        return self._itc(self.image_features(load_images(images)), self.text_features(_as_texts(texts)))

    def rank_texts(
        self, image: ImageSource, texts: Sequence[str], top_k: int | None = 16
    ) -> list[RankedText]:
        """The paper's retrieval protocol: ITC over every text, then ITM re-ranks ITC's top `top_k`.

        Returns the re-ranked texts first (best ITM first), then the rest in ITC order with `itm=None`.
        """
        top_k = check_top_k(top_k)
        loaded = load_images([image])
        candidates = _as_texts(texts)
        itc = self._itc(self.image_features(loaded), self.text_features(candidates))[0]
        order = torch.argsort(itc, descending=True).tolist()
        k = len(candidates) if top_k is None else min(top_k, len(candidates))
        head, tail = order[:k], order[k:]
        itm = self.itm_probabilities(loaded * k, [candidates[i] for i in head]).tolist() if k else []
        reranked = sorted(zip(head, itm, strict=True), key=lambda pair: pair[1], reverse=True)
        ranked = [RankedText(candidates[i], i, float(itc[i]), p) for i, p in reranked]
        return ranked + [RankedText(candidates[i], i, float(itc[i]), None) for i in tail]

    # ---- training primitives (helpers.finetune drives them) -----------------------------------------
    def lm_loss(
        self, images: list[Image.Image], prompts: list[str], targets: list[str], max_length: int | None = None
    ) -> torch.Tensor:
        """Differentiable mean cross-entropy of each target given its image and prompt (the prompt is masked).

        The targets end with the token generation stops at, so the model learns where to stop;
        `max_length` caps prompt plus target tokens (targets are truncated, prompts never).
        """
        if not len(images) == len(prompts) == len(targets) > 0:
            raise ValueError(
                f"lm_loss needs one prompt and one target per image; got {len(images)} images, "
                f"{len(prompts)} prompts, {len(targets)} targets"
            )
        return self._lm_loss(images, prompts, targets, max_length)

    @abstractmethod
    def _lm_loss(
        self, images: list[Image.Image], prompts: list[str], targets: list[str], max_length: int | None
    ) -> torch.Tensor:
        """`lm_loss` for a batch already checked to hold one prompt and one target per image."""

    def retrieval_loss(
        self, images: list[Image.Image], texts: list[str], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Stage-1 fine-tuning loss for matching (images[i], texts[i]) pairs: "itc", "itm" and "total".

        ITC is the symmetric in-batch contrastive loss; ITM classifies the positives and one hard negative
        per image and per text, sampled with `generator` (helpers.objectives). Needs at least 2 pairs.
        """
        from helpers.objectives import ITC_TEMPERATURE, itc_loss, itm_loss, sample_hard_negatives

        if len(images) != len(texts) or len(images) < 2:
            raise ValueError(
                f"retrieval_loss needs as many texts as images and at least 2 pairs (in-batch negatives); "
                f"got {len(images)} images and {len(texts)} texts"
            )
        vision, tokens = self._vision(images), self._texts(texts)  # LAVIS trains on blip_caption's texts too
        _, image_proj = self._query_outputs(vision)
        _, text_proj = self._text_outputs(tokens)
        # HF retrieval checkpoints drop LAVIS's learned temperature, so ITC uses BLIP-2's initial value.
        itc, similarity = itc_loss(image_proj, text_proj[:, 0, :], ITC_TEMPERATURE)
        negative_text, negative_image = sample_hard_negatives(similarity.detach(), generator)
        # ITM sees each positive pair, each image with a hard negative text, each text with a hard negative image.
        pair_vision = torch.cat([vision, vision, vision[negative_image]])
        pair_tokens = {key: torch.cat([value, value[negative_text], value]) for key, value in tokens.items()}
        logits = self._itm_logits(self._fuse(pair_vision, pair_tokens))
        batch = len(images)
        labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(logits.device)
        itm = itm_loss(logits, labels)
        return {"itc": itc, "itm": itm, "total": itc + itm}

    @abstractmethod
    def trainable_parts(self, task: str) -> TrainableParts:
        """The modules `task` (one of TRAINING_TASKS) trains and freezes."""

    @abstractmethod
    def enable_gradient_checkpointing(self, task: str) -> None:
        """Recompute activations in the backward pass of `task`'s model: less memory, about 30% more time."""

    @abstractmethod
    def save_pretrained(self, task: str, output_dir: str | Path) -> Path:
        """Write `task`'s model and processor in the HF layout that `load_blip2(model_id=output_dir)` reads.

        Caption and VQA write a Blip2ForConditionalGeneration folder; retrieval a Blip2ForImageTextRetrieval
        folder, which `load_blip2(model_id=...)` uses as the retrieval checkpoint.
        """

    @staticmethod
    def _itc(image: Features, text: Features) -> torch.Tensor:
        """BLIP-2's ITC score: the best cosine between any query and the text's [CLS] projection."""
        similarity = torch.einsum("iqd,td->itq", image.image_embeds_proj, text.text_embeds_proj[:, 0, :])
        return similarity.max(dim=-1).values


def check_task(task: str) -> str:
    """Refuse an unknown training task with the list of known ones."""
    if task not in TRAINING_TASKS:
        raise ValueError(f"task={task!r} is not a training task; use one of {TRAINING_TASKS}")
    return task


def _as_texts(texts: str | Sequence[str] | None) -> list[str]:
    listed = [texts] if isinstance(texts, str) else list(texts or [])
    if not listed:
        raise ValueError("texts is empty; pass at least one string")
    bad = [i for i, text in enumerate(listed) if not isinstance(text, str) or not text.strip()]
    if bad:
        raise ValueError(f"texts{bad} are empty or not strings; every text must be a non-empty string")
    return listed

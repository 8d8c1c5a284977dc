"""The one interface every backend offers, so notebooks never branch on the backend.

Backends implement a few primitives (generate from prompts, encode images and texts, score pairs with the
ITM head); the user-facing tasks, prompt building, input checking and the ranking protocol live here once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from helpers.generation import GenerationSettings
from helpers.images import ImageSource, load_images
from helpers.precision import Precision
from helpers.prompts import VQA_TEMPLATE, Turn, vqa_prompt

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

    def __init__(self, caption_model: str, retrieval_model: str, precision: Precision) -> None:
        self.caption_model = caption_model
        self.retrieval_model = retrieval_model
        self.precision = precision

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(caption_model={self.caption_model!r}, "
            f"retrieval_model={self.retrieval_model!r}, precision='{self.precision}')"
        )

    # ---- generation -------------------------------------------------------------------------------
    def caption(
        self, images: ImageSource | Sequence[ImageSource], settings: GenerationSettings | None = None
    ) -> list[str]:
        """Caption each image; with `num_captions=n`, n captions per image, grouped image by image."""
        loaded = load_images(images)
        return self.generate(loaded, [""] * len(loaded), settings or GenerationSettings())

    def ask(
        self,
        images: ImageSource | Sequence[ImageSource],
        questions: str | Sequence[str],
        context: Sequence[Turn] | None = None,
        settings: GenerationSettings | None = None,
    ) -> list[str]:
        """Answer one question per image (or one question for all) with the paper's zero-shot VQA prompt."""
        loaded = load_images(images)
        asked = _per_image(questions, len(loaded), "questions")
        prompts = [vqa_prompt(question, context or (), self.vqa_template) for question in asked]
        return self.generate(loaded, prompts, settings or GenerationSettings())

    def instruct(
        self,
        images: ImageSource | Sequence[ImageSource],
        instruction: str | Sequence[str],
        settings: GenerationSettings | None = None,
    ) -> list[str]:
        """Follow a free-form instruction, given to the language model verbatim after the visual prompt."""
        loaded = load_images(images)
        instructions = _per_image(instruction, len(loaded), "instruction")
        return self.generate(loaded, instructions, settings or GenerationSettings())

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
        hidden, projected = self._text_outputs(self._tokens(texts))
        return Features(text_embeds=hidden, text_embeds_proj=projected)

    @torch.inference_mode()
    def multimodal_features(self, images: list[Image.Image], texts: list[str]) -> Features:
        """Queries that attended to both the image and its paired text (multimodal_embeds)."""
        return Features(multimodal_embeds=self._fuse(self._vision(images), self._tokens(texts)))

    @torch.inference_mode()
    def itm_probabilities(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        """P(match) from the ITM head for each (images[i], texts[i]) pair, shape (len(texts),)."""
        logits = self._itm_logits(self._fuse(self._vision(images), self._tokens(texts)))
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
        return self.multimodal_features(loaded, _per_image(texts, len(loaded), "texts"))

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
        loaded = load_images([image])
        candidates = _as_texts(texts)
        itc = self._itc(self.image_features(loaded), self.text_features(candidates))[0]
        order = torch.argsort(itc, descending=True).tolist()
        k = len(candidates) if top_k is None else max(0, min(top_k, len(candidates)))
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
        vision, tokens = self._vision(images), self._tokens(texts)
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


def _per_image(values: str | Sequence[str], count: int, name: str) -> list[str]:
    """One string per image: a single string is shared by all images."""
    listed = [values] * count if isinstance(values, str) else list(values)
    if len(listed) != count:
        raise ValueError(
            f"{name} has {len(listed)} entries for {count} images; give one per image or a single string"
        )
    return listed

"""The Salesforce LAVIS backend: the BLIP-2 authors' own model classes behind the kit's interface.

A hub id from `helpers.checkpoints` loads through LAVIS's `load_model_and_preprocess`, which downloads
LAVIS's checkpoint as the LAVIS README shows. A local folder in the Hugging Face layout (the offline
miniature, a fine-tuned output) is converted on the fly, so both backends run the very same weights.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import torch
from accelerate import init_empty_weights
from PIL import Image
from torch import nn
from torch.nn import functional as F

from helpers.anatomy import recorded_cross_attentions
from helpers.backends import lavis_compat, lm_batches
from helpers.backends.base import Blip2Backend, TrainableParts, check_task
from helpers.backends.convert import declare_untied_head, lavis_to_hf
from helpers.backends.hf import MAX_TEXT_TOKENS
from helpers.backends.key_accounting import check_keys
from helpers.backends.lavis_generate import visual_prompt
from helpers.backends.lavis_sources import accounted_loading, load_from_folder, read_config
from helpers.checkpoints import by_hf_id
from helpers.generation import GenerationSettings
from helpers.precision import Precision
from helpers.prompts import T5_VQA_TEMPLATE

RETRIEVAL = ("blip2_image_text_matching", "pretrain")
"""LAVIS's stage-1 model with ITC and ITM heads; `blip2_feature_extractor` is the same class."""


def lavis_name_for(location: str) -> tuple[str, str]:
    """LAVIS's (name, model_type) for a hub id, or for a local HF folder by its architecture."""
    if not Path(location).is_dir():
        checkpoint = by_hf_id(location)
        return checkpoint.lavis_name, checkpoint.lavis_model_type
    config = read_config(location)
    if "Blip2ForImageTextRetrieval" in (config.architectures or []):
        return RETRIEVAL
    if config.use_decoder_only_language_model:
        return "blip2_opt", "pretrain_opt2.7b"  # the model type only picks LAVIS's 224-pixel preprocessing
    return "blip2_t5", "pretrain_flant5xl"


def load_lavis(location: str, precision: Precision, bert_tokenizer_folder: str | None = None) -> tuple:
    """(model, vis_processors, txt_processors) as `load_model_and_preprocess` returns them, model placed."""
    name, model_type = lavis_name_for(location)
    if Path(location).is_dir():  # built on the CPU from the folder's tensors, then cast and moved once
        model, vis_processors, txt_processors = load_from_folder(
            name, model_type, location, torch.device("cpu"), bert_tokenizer_folder=bert_tokenizer_folder
        )
    else:
        lavis_compat.apply()
        from lavis.models import load_model_and_preprocess

        with accounted_loading():  # LAVIS loads with strict=False; a key mismatch raises here instead
            model, vis_processors, txt_processors = load_model_and_preprocess(
                name, model_type, is_eval=True, device=precision.device
            )
    return place(model, precision), vis_processors, txt_processors


def place(model: nn.Module, precision: Precision) -> nn.Module:
    """LAVIS's precision layout: ViT and LM in half precision on a GPU, the Q-Former in fp32 under autocast.

    In fp32 (CPU, or when asked) everything is fp32. The LM takes the kit's chosen dtype, which is never bf16
    on a GPU without it (T4) and never fp16 for Flan-T5. Parts are cast before the move, so a GPU never holds
    an fp32 copy of the ViT or the LM.
    """
    if precision.dtype == torch.float32:
        return model.float().to(precision.device).eval()
    model.visual_encoder.half()
    language_model = getattr(model, "opt_model", None) or getattr(model, "t5_model", None)
    if language_model is not None:
        language_model.to(precision.dtype)
    return model.to(precision.device).eval()


class LavisBackend(Blip2Backend):
    """BLIP-2 through LAVIS 1.0.2's Blip2OPT / Blip2T5 and Blip2ITM, made to run by `lavis_compat`."""

    backend_name = "lavis"
    _ROLES: ClassVar[dict[str, str]] = {"model": "generation", "_retrieval": "retrieval"}

    def __init__(
        self, caption_model: str, retrieval_model: str, precision: Precision, load_in_8bit: bool = False
    ) -> None:
        if load_in_8bit:
            raise ValueError(
                "the LAVIS backend cannot load 8-bit weights; use backend='hf' for this profile, or a profile "
                "whose language model fits in 16-bit"
            )
        super().__init__(caption_model, retrieval_model, precision)
        if lavis_name_for(caption_model)[0] == "blip2_t5":
            self.vqa_template = T5_VQA_TEMPLATE

    @cached_property
    def model(self) -> nn.Module:
        """LAVIS's Blip2OPT / Blip2T5, loaded on first use (retrieval never needs the LLM), inference mode off."""
        self._announce_load("generation", self.caption_model)
        with torch.inference_mode(False):
            model, vis_processors, _ = load_lavis(
                self.caption_model, self.precision, self._bert_tokenizer_folder
            )
        self._generation_processor = vis_processors["eval"]
        return model

    @cached_property
    def _retrieval(self) -> tuple[nn.Module, Callable[[Image.Image], torch.Tensor]]:
        """LAVIS's Blip2ITM and its own image preprocessing, loaded on first use with inference mode off."""
        self._announce_load("retrieval", self.retrieval_model)
        with torch.inference_mode(False):
            model, vis_processors, _ = load_lavis(self.retrieval_model, self.precision)
        return model, vis_processors["eval"]

    @property
    def _bert_tokenizer_folder(self) -> str | None:
        """A generation folder has no BERT tokenizer; LAVIS builds one anyway, so lend the retrieval one."""
        return self.retrieval_model if Path(self.retrieval_model).is_dir() else None

    def _pixels(self, images: list[Image.Image], retrieval: bool = False) -> torch.Tensor:
        """LAVIS's `blip_image_eval` of the generation (or retrieval) model: bicubic resize, CLIP mean and std."""
        if retrieval:
            processor = self._retrieval[1]
        else:
            self.model  # noqa: B018 - loading the generation model sets its preprocessing
            processor = self._generation_processor
        return torch.stack([processor(image) for image in images]).to(self.precision.device)

    # ---- generation -------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self, images: list[Image.Image], prompts: list[str], settings: GenerationSettings
    ) -> list[str]:
        return self.model.generate(
            {"image": self._pixels(images), "prompt": prompts}, **settings.to_lavis_kwargs()
        )

    def _prompt_positions(self, prompts: list[str]) -> tuple[list[int], int, int | None]:
        if not hasattr(self.model, "opt_model"):  # T5's relative positions have no fixed limit
            return [], 0, None
        lengths = [len(ids) for ids in self.model.opt_tokenizer(prompts)["input_ids"]]
        return lengths, self.model.query_tokens.shape[1], self.model.opt_model.config.max_position_embeddings

    # ---- retrieval and features ------------------------------------------------------------------
    @property
    def retrieval(self) -> nn.Module:
        """LAVIS's Blip2ITM: the stage-1 Q-Former with its text side, projections and ITM head."""
        return self._retrieval[0]

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.retrieval.tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt"
        )
        return {key: tokens[key].to(self.precision.device) for key in ("input_ids", "attention_mask")}

    def _encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """Frozen ViT features as LAVIS computes them (`ln_vision(visual_encoder(image))`), in fp32."""
        with self.retrieval.maybe_autocast():
            embeds = self.retrieval.ln_vision(
                self.retrieval.visual_encoder(self._pixels(images, retrieval=True))
            )
        return embeds.float()

    def _query_outputs(self, vision: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As Blip2Qformer's `forward_image` and `extract_features(mode="image")`."""
        queries = self.retrieval.Qformer.bert(
            query_embeds=self.retrieval.query_tokens.expand(vision.shape[0], -1, -1),
            encoder_hidden_states=vision,
            encoder_attention_mask=torch.ones(vision.shape[:-1], dtype=torch.long, device=vision.device),
            return_dict=True,
        ).last_hidden_state
        return queries, F.normalize(self.retrieval.vision_proj(queries), dim=-1)

    def _text_outputs(self, tokens: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """As `extract_features(mode="text")`."""
        hidden = self.retrieval.Qformer.bert(
            tokens["input_ids"], attention_mask=tokens["attention_mask"], return_dict=True
        ).last_hidden_state
        return hidden, F.normalize(self.retrieval.text_proj(hidden), dim=-1)

    def _fuse(self, vision: torch.Tensor, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """As Blip2ITM's `forward(match_head="itm")`."""
        queries = self.retrieval.query_tokens.expand(vision.shape[0], -1, -1)
        query_mask = torch.ones(queries.shape[:-1], dtype=torch.long, device=vision.device)
        output = self.retrieval.Qformer.bert(
            tokens["input_ids"],
            query_embeds=queries,
            attention_mask=torch.cat([query_mask, tokens["attention_mask"]], dim=1),
            encoder_hidden_states=vision,
            encoder_attention_mask=torch.ones(vision.shape[:-1], dtype=torch.long, device=vision.device),
            return_dict=True,
        )
        return output.last_hidden_state[:, : queries.shape[1], :]

    def _itm_logits(self, fused: torch.Tensor) -> torch.Tensor:
        return self.retrieval.itm_head(fused).mean(dim=1)

    @torch.inference_mode()
    def cross_attentions(self, images: list[Image.Image]) -> torch.Tensor:
        """Where the generation model's queries look: (layers, B, heads, queries, image tokens)."""
        with recorded_cross_attentions(self.model.Qformer.bert) as records:
            visual_prompt(self.model, self._pixels(images), self._projection())
        return torch.stack(records).float().cpu()

    def _projection(self) -> nn.Module:
        return getattr(self.model, "opt_proj", None) or self.model.t5_proj

    # ---- training primitives ----------------------------------------------------------------------
    def _language_model(self) -> nn.Module:
        return getattr(self.model, "opt_model", None) or self.model.t5_model

    def _lm_loss(
        self, images: list[Image.Image], prompts: list[str], targets: list[str], max_length: int | None
    ) -> torch.Tensor:
        """LAVIS's Blip2OPT / Blip2T5 `forward` loss, with one prompt per sample masked out of the labels."""
        model = self.model
        visual = visual_prompt(model, self._pixels(images), self._projection())
        if hasattr(model, "opt_model"):
            batch = lm_batches.decoder_only_batch(
                model.opt_tokenizer, prompts, targets, max_length, end_id=model.eos_token_id
            )
            batch = lm_batches.prepend_visual(batch, visual.shape[1], labelled=True)
        else:
            batch = lm_batches.encoder_decoder_batch(model.t5_tokenizer, prompts, targets, max_length)
            batch = lm_batches.prepend_visual(batch, visual.shape[1], labelled=False)
        language_model = self._language_model()
        batch = {key: value.to(visual.device) for key, value in batch.items()}
        embeddings = language_model.get_input_embeddings()(batch["input_ids"])
        with model.maybe_autocast():
            return language_model(
                inputs_embeds=torch.cat([visual.to(embeddings.dtype), embeddings], dim=1),
                attention_mask=batch["attention_mask"],
                labels=batch["labels"],
                return_dict=True,
            ).loss

    def trainable_parts(self, task: str) -> TrainableParts:
        if check_task(task) == "retrieval":
            return TrainableParts(self.retrieval, [self.retrieval.visual_encoder], None)
        return TrainableParts(self.model, [self.model.visual_encoder], self._language_model())

    def enable_gradient_checkpointing(self, task: str) -> None:
        root = self.trainable_parts(task).root
        root.Qformer.config.gradient_checkpointing = True  # LAVIS's Q-Former reads this flag
        root.visual_encoder.use_checkpoint = True
        if check_task(task) != "retrieval":
            self._language_model().gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )

    def save_pretrained(self, task: str, output_dir: str | Path) -> Path:
        """Convert to the HF layout, so the result loads in either backend."""
        from transformers import Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval, Blip2Processor

        retrieval = check_task(task) == "retrieval"
        source = (
            self.retrieval_model if retrieval else self.caption_model
        )  # a folder or a hub id: HF has both
        model_class = Blip2ForImageTextRetrieval if retrieval else Blip2ForConditionalGeneration
        lavis_model = self.retrieval if retrieval else self.model
        language = "t5" if hasattr(lavis_model, "t5_model") else "opt"
        with init_empty_weights():  # the LAVIS model's tensors are assigned, never copied into fresh ones
            hf_model = model_class(model_class.config_class.from_pretrained(source))
        weights = lavis_to_hf(lavis_model.state_dict(), language)
        result = hf_model.load_state_dict(weights, strict=False, assign=True)
        check_keys(
            f"the LAVIS backend's {type(lavis_model).__name__}",
            model_class.__name__,
            set(result.missing_keys) - set(hf_model.all_tied_weights_keys),
            result.unexpected_keys,
        )
        # Tie as from_pretrained does, only where the model holds one of the pair: Flan-T5's head stays its own.
        hf_model.tie_weights(missing_keys=set(result.missing_keys), recompute_mapping=False)
        folder = Path(output_dir)
        hf_model.save_pretrained(folder)
        declare_untied_head(hf_model, folder)
        Blip2Processor.from_pretrained(source).save_pretrained(folder)
        return folder

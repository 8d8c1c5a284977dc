"""The Hugging Face transformers backend.

Generation uses `Blip2ForConditionalGeneration`; ITC, ITM and features use `Blip2ForImageTextRetrieval`,
because the generation checkpoints drop the Q-Former's text side. Each model loads on first use, so a
captioning notebook never pays for the retrieval model, nor a retrieval notebook for the LLM.
"""

from __future__ import annotations

import importlib.util
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.nn import functional as F
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2ForImageTextRetrieval,
    Blip2Processor,
)

from helpers.anatomy import recorded_cross_attentions
from helpers.backends import lm_batches
from helpers.backends.base import Blip2Backend, TrainableParts, check_task
from helpers.backends.convert import declare_untied_head
from helpers.backends.key_accounting import accounted_from_pretrained
from helpers.generation import GenerationSettings
from helpers.precision import Precision
from helpers.prompts import T5_VQA_TEMPLATE

MAX_TEXT_TOKENS = 35
"""LAVIS's `max_txt_len` for the Q-Former's text side: longer texts are truncated, as in the paper's runs."""


def pil_processor_kwargs() -> dict[str, Any]:
    """Ask for the PIL image backend, which matches LAVIS's preprocessing bit for bit.

    transformers 5's default torchvision backend resizes differently by 1-2 grey levels. Newer 5.x
    releases select the backend with `backend=`, earlier ones with `use_fast=False`.
    """
    if importlib.util.find_spec("transformers.image_processing_backends") is not None:
        return {"backend": "pil"}
    return {"use_fast": False}


class HFBackend(Blip2Backend):
    """BLIP-2 through transformers' Blip2 classes."""

    backend_name = "hf"

    def __init__(
        self, caption_model: str, retrieval_model: str, precision: Precision, load_in_8bit: bool = False
    ) -> None:
        super().__init__(caption_model, retrieval_model, precision)
        self.load_in_8bit = load_in_8bit
        self.processor = Blip2Processor.from_pretrained(caption_model, **pil_processor_kwargs())
        if Blip2Config.from_pretrained(caption_model).use_decoder_only_language_model:
            # Decoder-only LMs continue the last token, so a batch of different prompts must be padded on the left.
            self.processor.tokenizer.padding_side = "left"
        else:
            self.vqa_template = T5_VQA_TEMPLATE

    @cached_property
    def model(self) -> Blip2ForConditionalGeneration:
        """The generation model (ViT, Q-Former, LLM), loaded on first use: retrieval never needs the LLM.

        Inference mode is off while loading, or its parameters would be inference tensors that training
        cannot use.
        """
        self._announce_load("generation", self.caption_model)
        with torch.inference_mode(False):
            return accounted_from_pretrained(
                Blip2ForConditionalGeneration, self.caption_model, **self._load_kwargs()
            )

    def _load_kwargs(self) -> dict[str, Any]:
        if self.load_in_8bit:
            from transformers import BitsAndBytesConfig

            return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), "device_map": {"": 0}}
        return self._placement()

    def _placement(self) -> dict[str, Any]:
        """Load straight onto the chosen device in the chosen dtype."""
        return {"dtype": self.precision.dtype, "device_map": {"": str(self.precision.device)}}

    # ---- generation -------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self, images: list[Image.Image], prompts: list[str], settings: GenerationSettings
    ) -> list[str]:
        inputs = self.processor(images=images, text=prompts, return_tensors="pt", padding=True)
        inputs = inputs.to(self.model.device, self.model.dtype)
        output_ids = self.model.generate(**inputs, **settings.to_hf_kwargs())
        if self.model.config.use_decoder_only_language_model:
            # transformers returns the prompt (image placeholders included) followed by the answer.
            output_ids = output_ids[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in self.processor.batch_decode(output_ids, skip_special_tokens=True)]

    def _prompt_positions(self, prompts: list[str]) -> tuple[list[int], int, int | None]:
        config = self.model.config
        if not config.use_decoder_only_language_model:  # T5's relative positions have no fixed limit
            return [], 0, None
        lengths = [len(ids) for ids in self.processor.tokenizer(prompts)["input_ids"]]
        return lengths, config.num_query_tokens, config.text_config.max_position_embeddings

    # ---- retrieval and features ------------------------------------------------------------------
    @cached_property
    def retrieval(self) -> Blip2ForImageTextRetrieval:
        """The stage-1 Q-Former with its text side, projections and ITM head.

        Loaded on first use, often from inside an inference-mode method: inference mode is switched off
        while loading, or its parameters would be inference tensors that training cannot use.
        """
        self._announce_load("retrieval", self.retrieval_model)
        with torch.inference_mode(False):
            return accounted_from_pretrained(
                Blip2ForImageTextRetrieval, self.retrieval_model, **self._placement()
            )

    @cached_property
    def retrieval_processor(self) -> Blip2Processor:
        return Blip2Processor.from_pretrained(self.retrieval_model, **pil_processor_kwargs())

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.retrieval_processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return pixels.to(self.retrieval.device, self.retrieval.dtype)

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tokenizer = self.retrieval_processor.tokenizer
        tokens = tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt"
        )
        return {
            "input_ids": tokens["input_ids"].to(self.retrieval.device),
            "attention_mask": tokens["attention_mask"].to(self.retrieval.device),
        }

    def _encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        return self.retrieval.vision_model(pixel_values=self._pixels(images)).last_hidden_state

    def _queries(self, batch: int) -> torch.Tensor:
        return self.retrieval.query_tokens.expand(batch, -1, -1)

    def _query_outputs(self, vision: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        queries = self.retrieval.qformer(
            query_embeds=self._queries(vision.shape[0]),
            encoder_hidden_states=vision,
            encoder_attention_mask=torch.ones(vision.shape[:-1], dtype=torch.long, device=vision.device),
        ).last_hidden_state
        projected = F.normalize(self.retrieval.vision_projection(queries.to(self.retrieval.dtype)), dim=-1)
        return queries, projected

    def _text_outputs(self, tokens: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.retrieval.qformer(
            query_embeds=self.retrieval.embeddings(input_ids=tokens["input_ids"]),
            query_length=0,
            attention_mask=tokens["attention_mask"],
        ).last_hidden_state
        projected = F.normalize(self.retrieval.text_projection(hidden.to(self.retrieval.dtype)), dim=-1)
        return hidden, projected

    def _fuse(self, vision: torch.Tensor, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        queries = self._queries(vision.shape[0])
        query_mask = torch.ones(queries.shape[:-1], dtype=torch.long, device=queries.device)
        hidden = self.retrieval.qformer(
            query_embeds=self.retrieval.embeddings(input_ids=tokens["input_ids"], query_embeds=queries),
            query_length=queries.shape[1],
            attention_mask=torch.cat([query_mask, tokens["attention_mask"]], dim=1),
            encoder_hidden_states=vision,
            encoder_attention_mask=torch.ones(vision.shape[:-1], dtype=torch.long, device=vision.device),
        ).last_hidden_state
        return hidden[:, : queries.shape[1], :]

    def _itm_logits(self, fused: torch.Tensor) -> torch.Tensor:
        return self.retrieval.itm_head(fused.to(self.retrieval.itm_head.weight.dtype)).mean(dim=1)

    @torch.inference_mode()
    def cross_attentions(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.model.device, self.model.vision_model.dtype)
        with recorded_cross_attentions(self.model.qformer) as records:
            self.model.get_image_features(pixel_values=pixels)
        return torch.stack(records).float().cpu()

    # ---- training primitives ---------------------------------------------------------------------
    def _lm_loss(
        self, images: list[Image.Image], prompts: list[str], targets: list[str], max_length: int | None
    ) -> torch.Tensor:
        pixels = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.model.device, self.model.vision_model.dtype)
        if self.model.config.use_decoder_only_language_model:
            batch = self._decoder_only_batch(prompts, targets, max_length)
        else:
            batch = self._encoder_decoder_batch(prompts, targets, max_length)
        return self.model(pixel_values=pixels, **batch).loss

    def _end_token(self) -> int:
        """The token generation stops at, which every target ends with (a newline for Salesforce's OPT, as in LAVIS)."""
        return self.model.config.text_config.eos_token_id

    def _decoder_only_batch(
        self, prompts: list[str], targets: list[str], max_length: int | None
    ) -> dict[str, torch.Tensor]:
        """[image placeholders][BOS prompt][target END][pad]: only the target and END carry labels."""
        tokenizer = self.processor.tokenizer
        batch = lm_batches.decoder_only_batch(tokenizer, prompts, targets, max_length, self._end_token())
        return self._with_placeholders(batch, labelled=True)

    def _encoder_decoder_batch(
        self, prompts: list[str], targets: list[str], max_length: int | None
    ) -> dict[str, torch.Tensor]:
        """Flan-T5: the encoder reads [image placeholders][prompt EOS], the decoder learns [target EOS]."""
        batch = lm_batches.encoder_decoder_batch(self.processor.tokenizer, prompts, targets, max_length)
        return self._with_placeholders(batch, labelled=False)

    def _with_placeholders(self, batch: dict[str, torch.Tensor], labelled: bool) -> dict[str, torch.Tensor]:
        """The query outputs replace these tokens, which precede everything else, as the processor puts them."""
        queries = self.processor.num_query_tokens
        rows = batch["input_ids"].shape[0]
        placeholders = torch.full((rows, queries), self.model.config.image_token_id, dtype=torch.long)
        widened = lm_batches.prepend_visual(batch, queries, labelled)
        widened["input_ids"] = torch.cat([placeholders, batch["input_ids"]], dim=1)
        return {key: value.to(self.model.device) for key, value in widened.items()}

    def trainable_parts(self, task: str) -> TrainableParts:
        model = self.retrieval if check_task(task) == "retrieval" else self.model
        vision = model.vision_model
        _keep_key_bias_zero(vision)
        language_model = None if task == "retrieval" else self.model.language_model
        return TrainableParts(model, [vision.embeddings, vision.encoder], language_model)

    def enable_gradient_checkpointing(self, task: str) -> None:
        root = self.trainable_parts(task).root
        root.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def save_pretrained(self, task: str, output_dir: str | Path) -> Path:
        folder = Path(output_dir)
        if check_task(task) == "retrieval":
            self.retrieval.save_pretrained(folder)
            self.retrieval_processor.save_pretrained(folder)
        else:
            self.model.save_pretrained(folder)
            declare_untied_head(self.model, folder)
            self.processor.save_pretrained(folder)
        return folder


def _keep_key_bias_zero(vision: torch.nn.Module) -> None:
    """EVA-ViT has no key bias, but HF keeps q, k and v biases in one `qkv.bias` whose key third starts at 0.

    Masking that third's gradient keeps it 0 when the ViT trains (biases get no weight decay), so the
    checkpoint stays an EVA-ViT that LAVIS can load.
    """
    for layer in vision.encoder.layers:
        bias = layer.self_attn.qkv.bias
        if bias is None or getattr(bias, "_key_bias_masked", False):
            continue
        width = bias.shape[0] // 3
        keep = torch.ones(bias.shape[0], device=bias.device)
        keep[width : 2 * width] = 0
        bias.register_hook(lambda grad, keep=keep: grad * keep.to(grad.dtype))
        bias._key_bias_masked = True

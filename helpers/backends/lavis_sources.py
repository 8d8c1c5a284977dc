"""Build LAVIS BLIP-2 models from a Hugging Face checkpoint folder, with no download.

`load_model_and_preprocess` fetches four things while it builds a BLIP-2: bert-base-uncased's tokenizer and
config for the Q-Former, the EVA ViT-g weights, the language model (`facebook/opt-2.7b`, `google/flan-t5-xl`)
and LAVIS's own checkpoint. Inside `supplied_from(folder)` each fetch is answered from an HF-layout folder
instead (the kit's offline miniature, a toy-world model, a fine-tuned output): the architecture comes from
the folder's config, the weights from its safetensors converted to LAVIS names. Everything else, LAVIS's
model classes with their `from_pretrained`, and its processors, runs unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from torch import nn
from transformers import AutoTokenizer, BertTokenizer, Blip2Config, OPTForCausalLM, T5ForConditionalGeneration

from helpers.backends import convert, lavis_compat
from helpers.backends.key_accounting import KeyReport, accounted_from_pretrained, check_keys

EVA_LAYER_NORM_EPS = 1e-6
"""LAVIS's EVA ViT normalises with eps 1e-6; a checkpoint with another eps cannot be rebuilt exactly."""


class _Supplier:
    """Answers `X.from_pretrained(...)` with a prepared object, whatever name LAVIS asks for."""

    def __init__(self, build: Any) -> None:
        self._build = build

    def from_pretrained(self, *args: Any, **kwargs: Any) -> Any:
        return self._build(**kwargs)


def read_config(folder: str | Path) -> Blip2Config:
    config = Blip2Config.from_pretrained(folder)
    eps = config.vision_config.layer_norm_eps
    if eps != EVA_LAYER_NORM_EPS:
        raise ValueError(f"{folder}: vision layer_norm_eps={eps}; LAVIS's EVA ViT needs {EVA_LAYER_NORM_EPS}")
    return config


def _bert_config(config: Blip2Config) -> Any:
    """LAVIS's Q-Former is a BERT; its config carries the same sizes as HF's Blip2QFormerConfig."""
    from lavis.models.blip2_models.Qformer import BertConfig

    qformer = config.qformer_config
    return BertConfig(
        vocab_size=qformer.vocab_size,
        hidden_size=qformer.hidden_size,
        num_hidden_layers=qformer.num_hidden_layers,
        num_attention_heads=qformer.num_attention_heads,
        intermediate_size=qformer.intermediate_size,
        hidden_act=qformer.hidden_act,
        hidden_dropout_prob=qformer.hidden_dropout_prob,
        attention_probs_dropout_prob=qformer.attention_probs_dropout_prob,
        max_position_embeddings=qformer.max_position_embeddings,
        layer_norm_eps=qformer.layer_norm_eps,
        pad_token_id=qformer.pad_token_id,
        initializer_range=qformer.initializer_range,
    )


def _vision_encoder(
    config: Blip2Config, img_size: int, drop_path_rate: float, use_checkpoint: bool
) -> nn.Module:
    """LAVIS's EVA VisionTransformer with the folder's sizes, as `create_eva_vit_g` builds ViT-g.

    Its parameters are made on the meta device: the checkpoint supplies every one of them, so ViT-g's
    billion weights are never drawn at random in fp32 first.
    """
    from lavis.models.eva_vit import VisionTransformer

    vision = config.vision_config
    if img_size != vision.image_size:
        raise ValueError(
            f"LAVIS asked for {img_size}-pixel images; the checkpoint's ViT takes {vision.image_size}"
        )
    with init_empty_weights():
        return VisionTransformer(
            img_size=img_size,
            patch_size=vision.patch_size,
            use_mean_pooling=False,
            embed_dim=vision.hidden_size,
            depth=vision.num_hidden_layers,
            num_heads=vision.num_attention_heads,
            mlp_ratio=vision.intermediate_size / vision.hidden_size,
            qkv_bias=True,
            drop_path_rate=drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=EVA_LAYER_NORM_EPS),
            use_checkpoint=use_checkpoint,
        )


def _match_projection_width(model: nn.Module, width: int) -> None:
    """LAVIS's `from_config` always builds 256-wide ITC projections (ViT-g's); a miniature may use fewer."""
    for name in ("vision_proj", "text_proj"):
        projection = getattr(model, name, None)
        if projection is not None and projection.out_features != width:
            setattr(model, name, nn.Linear(projection.in_features, width))


@contextlib.contextmanager
def supplied_from(
    folder: str | Path, bert_tokenizer_folder: str | Path | None = None
) -> Iterator[Blip2Config]:
    """While active, LAVIS builds BLIP-2 models from `folder` instead of downloading.

    `bert_tokenizer_folder` holds the Q-Former's BERT tokenizer when `folder` is a generation checkpoint
    (whose tokenizer is the language model's); LAVIS builds one for every BLIP-2 but uses it only on the
    Q-Former's text side.
    """
    lavis_compat.apply()
    from lavis.models import base_model
    from lavis.models.blip2_models import Qformer, blip2, blip2_opt, blip2_t5

    folder = Path(folder)
    config = read_config(folder)
    bert_tokenizer = BertTokenizer.from_pretrained(bert_tokenizer_folder or folder)

    def language_model(model_class: type[nn.Module]) -> Any:
        # On the meta device, like the ViT: the checkpoint supplies every weight of the language model.
        def build(**kwargs: Any) -> nn.Module:
            with init_empty_weights():
                return model_class(config.text_config)

        return _Supplier(build)

    def load_weights(model: nn.Module, cfg: Any, **kwargs: Any) -> None:
        _match_projection_width(model, config.image_text_hidden_size)
        # LAVIS's ln_vision uses torch's default eps (1e-5); the HF layout declares the ViT's (1e-6) for it.
        model.ln_vision.eps = config.vision_config.layer_norm_eps
        # Blip2T5 casts its LM to bf16 in __init__; loading into bf16 would round the checkpoint's weights.
        model.float()
        convert.load_hf_weights_into_lavis(model, folder)

    replacements = [
        (blip2, "BertTokenizer", _Supplier(lambda **kwargs: bert_tokenizer)),
        (blip2, "BertConfig", _Supplier(lambda **kwargs: _bert_config(config))),
        (blip2, "BertLMHeadModel", _Supplier(lambda config, **kwargs: Qformer.BertLMHeadModel(config))),
        (
            blip2,
            "create_eva_vit_g",
            lambda img_size, drop, ckpt, precision: _vision_encoder(config, img_size, drop, ckpt),
        ),
        (
            blip2_opt,
            "AutoTokenizer",
            _Supplier(lambda **kwargs: AutoTokenizer.from_pretrained(folder, use_fast=False)),
        ),
        (blip2_opt, "OPTForCausalLM", language_model(OPTForCausalLM)),
        (blip2_t5, "T5TokenizerFast", _Supplier(lambda **kwargs: AutoTokenizer.from_pretrained(folder))),
        # A copy: LAVIS overwrites the T5 config's dense_act_fn with "gelu" (exact; Flan-T5 declares gelu_new).
        (blip2_t5, "T5Config", _Supplier(lambda **kwargs: copy.deepcopy(config.text_config))),
        (blip2_t5, "T5ForConditionalGeneration", language_model(T5ForConditionalGeneration)),
        (base_model.BaseModel, "load_checkpoint_from_config", load_weights),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in replacements]
    try:
        for owner, name, value in replacements:
            setattr(owner, name, value)
        yield config
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def load_from_folder(
    name: str, model_type: str, folder: str | Path, device: torch.device, **kwargs: Any
) -> tuple:
    """`load_model_and_preprocess(name, model_type, is_eval=True, device)` answered from `folder`.

    Its steps, run one by one, except its final whole-model cast to fp32 on the CPU: weights stay in the
    checkpoint's dtype (fp16 for a hub checkpoint) until `helpers.backends.lavis.place` casts each part once,
    so loading never holds an fp32 copy of the ViT and the language model.
    """
    lavis_compat.apply()
    from lavis.common.registry import registry
    from lavis.models import load_preprocess
    from omegaconf import OmegaConf

    model_class = registry.get_model_class(name)
    settings = OmegaConf.load(model_class.default_config_path(model_type))
    with supplied_from(folder, **kwargs) as config:
        # The model type's yaml describes ViT-g's 32 queries at 224 px; a folder says its own sizes.
        settings.model.num_query_token = config.num_query_tokens
        settings.model.image_size = config.vision_config.image_size
        for processor in settings.preprocess.vis_processor.values():
            processor.image_size = config.vision_config.image_size
        model = model_class.from_config(settings.model).eval()
    vis_processors, txt_processors = load_preprocess(settings.preprocess)
    return model.to(device), vis_processors, txt_processors


LAVIS_CONSTANT_BUFFERS = frozenset({"Qformer.bert.embeddings.position_ids"})
"""A buffer LAVIS rebuilds identically in every model (0, 1, 2, ...): a checkpoint may lack it."""


def _unused_vit_parts(depth: int) -> re.Pattern[str]:
    """What EVA-CLIP's ViT-g holds and LAVIS's ViT does not build: its last block (BLIP-2 uses the
    second-last layer's features) and the final norm and head (commented out in LAVIS's `VisionTransformer`)."""
    return re.compile(rf"(blocks\.{depth}\..*|norm\..*|fc_norm\..*|head\..*)")


@contextlib.contextmanager
def accounted_loading() -> Iterator[list[KeyReport]]:
    """While active, every file `load_model_and_preprocess` reads is key-checked, as LAVIS itself never does.

    LAVIS loads with `strict=False` and drops the result. Here each load's missing and unexpected keys meet
    their documented expected sets, and anything else raises CheckpointKeyError naming keys and file:
    - `eva_vit_g.pth` into the EVA ViT: nothing missing; unexpected only the parts `_unused_vit_parts` names.
    - the BLIP-2 `.pth` (`load_checkpoint` / `load_from_pretrained`): LAVIS saves what a model type trains, so
      missing only the frozen parameters, which come from their own files (a frozen ViT from eva_vit_g.pth,
      the LLM from its hub weights), and LAVIS_CONSTANT_BUFFERS; nothing unexpected.
    - the LLM (`OPTForCausalLM` / `T5ForConditionalGeneration.from_pretrained`): nothing (see
      `accounted_from_pretrained`).
    bert-base-uncased only initialises the Q-Former, whose every weight the BLIP-2 `.pth` then replaces (its
    accounting proves it), so that load is not checked.
    """
    lavis_compat.apply()
    from lavis.models import base_model, eva_vit
    from lavis.models.blip2_models import blip2, blip2_opt, blip2_t5

    reports: list[KeyReport] = []
    vit_class = eva_vit.VisionTransformer
    load_vit, load_checkpoint = vit_class.load_state_dict, base_model.BaseModel.load_checkpoint
    load_from_pretrained = blip2.Blip2Base.load_from_pretrained

    def vit_load_state_dict(
        self: nn.Module, state_dict: Any, strict: bool = True, assign: bool = False
    ) -> Any:
        result = load_vit(self, state_dict, strict=False, assign=assign)
        reports.append(
            check_keys(
                "eva_vit_g.pth",
                "LAVIS's EVA ViT",
                result.missing_keys,
                result.unexpected_keys,
                expected_unexpected=_unused_vit_parts(len(self.blocks)),
            )
        )
        return result

    def accounted(load: Any) -> Any:
        def load_blip2_checkpoint(self: nn.Module, url_or_filename: str) -> Any:
            parameters = self.named_parameters(remove_duplicate=False)  # tied names too (T5's embed_tokens)
            frozen = {name for name, parameter in parameters if not parameter.requires_grad}
            result = load(self, url_or_filename)
            reports.append(
                check_keys(
                    url_or_filename,
                    f"LAVIS's {type(self).__name__}",
                    result.missing_keys,
                    result.unexpected_keys,
                    expected_missing=frozen | LAVIS_CONSTANT_BUFFERS,
                )
            )
            return result

        return load_blip2_checkpoint

    class Accounted:
        """`owner.from_pretrained(...)` through `accounted_from_pretrained`."""

        def __init__(self, owner: Any) -> None:
            self._owner = owner

        def from_pretrained(self, location: str, *args: Any, **kwargs: Any) -> Any:
            wanted = kwargs.pop("output_loading_info", False)
            model, info = accounted_from_pretrained(
                self._owner, location, *args, output_loading_info=True, **kwargs
            )
            reports.append(
                KeyReport(str(location), tuple(info["missing_keys"]), tuple(info["unexpected_keys"]))
            )
            return (model, info) if wanted else model

    replacements = [
        (vit_class, "load_state_dict", vit_load_state_dict),
        (base_model.BaseModel, "load_checkpoint", accounted(load_checkpoint)),
        (blip2.Blip2Base, "load_from_pretrained", accounted(load_from_pretrained)),
        (blip2_opt, "OPTForCausalLM", Accounted(blip2_opt.OPTForCausalLM)),
        (blip2_t5, "T5ForConditionalGeneration", Accounted(blip2_t5.T5ForConditionalGeneration)),
    ]
    saved = [(owner, name, owner.__dict__.get(name)) for owner, name, _ in replacements]
    try:
        for owner, name, value in replacements:
            setattr(owner, name, value)
        yield reports
    finally:
        for owner, name, value in reversed(saved):
            if value is None:
                delattr(owner, name)
            else:
                setattr(owner, name, value)

"""Miniatures of the nine released BLIP-2 checkpoints, in the layouts users download, for offline tests.

Hugging Face side: each hub repository (`Salesforce/blip2-*`) with its config, processor and tokenizer files
and a `model.safetensors` written with `safetensors.save_file` under the released key names (those of
transformers' `convert_blip_2_original_to_pytorch.py`), never by today's `save_pretrained`. The hub files hold
each tied tensor once; Flan-T5's `lm_head` is untied and differs from `shared`, as in google/flan-t5-xl.

LAVIS side, what `load_model_and_preprocess` downloads: `eva_vit_g.pth` (a plain ViT state dict), one BLIP-2
`.pth` per model type (`{"model": state_dict}` holding the trainable weights, as LAVIS's runner saves them:
a frozen ViT and the frozen language model are left out and come from their own files), and the hub models it
builds on: bert-base-uncased, facebook/opt-*, google/flan-t5-* (`OPTModel` keys without the `model.` prefix,
as Meta's conversion saved them).

Both sides hold the same weights, so the two backends can be compared on them. Weights are rounded to values
that fp16 and bf16 hold exactly, because LAVIS loads the ViT and OPT in fp16 and casts Flan-T5 to bf16.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    BertConfig,
    BertForPreTraining,
    BertTokenizer,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2ForImageTextRetrieval,
    Blip2VisionConfig,
    Blip2VisionModel,
    GPT2Tokenizer,
    OPTConfig,
    OPTForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
    T5Tokenizer,
)

from helpers.backends import convert
from helpers.checkpoints import CHECKPOINTS, Checkpoint

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
WORDS = (
    "a",
    "an",
    "the",
    "photo",
    "of",
    "cat",
    "dog",
    "on",
    "couch",
    "rocket",
    "two",
    "dogs",
    "playing",
    "in",
)
WORDS += ("grass", "what", "is", "shown", "question", "answer")
NUM_QUERY_TOKENS = 32
"""As released: every BLIP-2 checkpoint has 32 queries."""
VIT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
"""The miniature ViT; EVA ViT-g's structure otherwise (patch 14, eps 1e-6, q and v biases)."""
EVA_VIT_SIZES = {"embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
"""The same sizes in the arguments of LAVIS's EVA `VisionTransformer` (ViT-g: 1408, 39, 16, 4.3637)."""
QFORMER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
QFORMER_POSITIONS = 64
LANGUAGE_MODELS = {  # the hub models LAVIS's model types build on (their yaml's opt_model / t5_model)
    "opt-2.7b": "facebook/opt-2.7b",
    "opt-6.7b": "facebook/opt-6.7b",
    "flan-t5-xxl": "google/flan-t5-xxl",
    "flan-t5-xl": "google/flan-t5-xl",
}


def language_model_of(checkpoint: Checkpoint) -> str | None:
    """The hub language model a released checkpoint was trained on; None for the stage-1 (ITM) ones."""
    return next((name for key, name in LANGUAGE_MODELS.items() if key in checkpoint.hf_id), None)


def image_size_of(checkpoint: Checkpoint) -> int:
    """364 px for the COCO fine-tuned checkpoints, 224 otherwise, as the conversion script and LAVIS set."""
    return 364 if "coco" in checkpoint.hf_id else 224


def vit_is_frozen(checkpoint: Checkpoint) -> bool:
    """LAVIS's pretrained model types freeze the ViT (`freeze_vit: True`); its COCO fine-tunings train it."""
    return checkpoint.lavis_model_type.startswith("pretrain")


def _drawn(weights: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Fresh values at a trained model's scales (BLIP-2's own initialiser draws the ViT at 1e-10, i.e. zero):
    matrices at 1/sqrt(width), norms near 1, biases near 0; integer buffers kept. EVA's key bias stays 0."""
    generator = torch.Generator().manual_seed(seed)
    drawn: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        if not value.is_floating_point():
            drawn[key] = value
            continue
        noise = torch.randn(value.shape, generator=generator)
        if value.dim() >= 2:
            drawn[key] = noise * value.shape[-1] ** -0.5
        elif "norm" in key.lower() and key.endswith("weight"):
            drawn[key] = 1 + 0.1 * noise
        else:
            drawn[key] = 0.02 * noise
        if key.endswith("self_attn.qkv.bias"):
            drawn[key][value.shape[0] // 3 : 2 * value.shape[0] // 3] = 0
    return drawn


def _exact_in_half_precision(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    def rounded(tensor: torch.Tensor) -> torch.Tensor:
        if not tensor.is_floating_point():
            return tensor.contiguous()
        return tensor.detach().to(torch.bfloat16).to(torch.float16).to(torch.float32).contiguous()

    return {key: rounded(value) for key, value in weights.items()}


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


# ---- tokenizers: the released types and special tokens ----------------------------------------------------
def _bert_vocab(folder: Path) -> Path:
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "?", ".", ","]) + "\n")
    return vocab


def _bert_tokenizer(folder: Path, with_dec: bool) -> BertTokenizer:
    """bert-base-uncased's type; the BLIP-2 retrieval repos add [DEC] as BOS, as LAVIS's `init_tokenizer` does."""
    tokenizer = BertTokenizer(str(_bert_vocab(folder)), do_lower_case=True)
    if with_dec:
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def _opt_tokenizer(folder: Path, with_image: bool) -> GPT2Tokenizer:
    """facebook/opt's GPT2Tokenizer: byte-level BPE, </s> as BOS and EOS, <pad> 1; BLIP-2 adds <image>."""
    symbols = ["<s>", "<pad>", "</s>", "<unk>", *sorted(ByteLevel.alphabet())]
    starts = sorted({word[0] for word in WORDS})
    symbols += [f"\u0120{start}" for start in starts]
    (folder / "vocab.json").write_text(json.dumps({symbol: i for i, symbol in enumerate(symbols)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"\u0120 {s}" for s in starts) + "\n")
    tokenizer = GPT2Tokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        bos_token="</s>",
        eos_token="</s>",
        unk_token="</s>",
        pad_token="<pad>",
    )
    if with_image:
        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def _t5_tokenizer(with_image: bool) -> T5Tokenizer:
    """google/flan-t5's T5Tokenizer: <pad> 0, </s> 1, <unk> 2, 100 sentinels; BLIP-2 adds <image>."""
    pieces = [
        ("<pad>", 0.0),
        ("</s>", 0.0),
        ("<unk>", 0.0),
        *((f"\u2581{w}", -1.0) for w in sorted(set(WORDS))),
    ]
    pieces += [(c, -5.0) for c in sorted(set("".join(WORDS) + "?:."))]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=100)
    if with_image:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": ["<image>"]}, replace_extra_special_tokens=False
        )
    return tokenizer


def _language_tokenizer(name: str, folder: Path, with_image: bool) -> Any:
    return _opt_tokenizer(folder, with_image) if "opt" in name else _t5_tokenizer(with_image)


# ---- the parts several checkpoints share ------------------------------------------------------------------
def _language_config(name: str, vocab_size: int, eos_token_id: int) -> OPTConfig | T5Config:
    width = 48 if name.endswith(("6.7b", "xxl")) else 32  # distinct sizes, as the released LMs differ
    if "opt" in name:
        return OPTConfig(
            vocab_size=vocab_size,
            hidden_size=width,
            word_embed_proj_dim=width,
            ffn_dim=2 * width,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=256,  # byte-level prompts are long in a tiny vocabulary
            pad_token_id=1,
            bos_token_id=2,
            eos_token_id=eos_token_id,
        )
    return T5Config(
        vocab_size=vocab_size,
        d_model=width,
        d_kv=16,
        d_ff=2 * width,
        num_layers=2,
        num_heads=2,
        feed_forward_proj="gated-gelu",
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )


def _language_config_json(config: OPTConfig | T5Config) -> dict:
    content = config.to_dict()
    if isinstance(config, T5Config):
        # google/flan-t5-xl's config: an untied head, which also means no rescaling of the decoder output.
        content.update(tie_word_embeddings=False, architectures=["T5ForConditionalGeneration"])
        content.pop("scale_decoder_outputs", None)
    else:
        content["architectures"] = ["OPTForCausalLM"]
    return content


@dataclass
class _LanguageModel:
    config_json: dict
    weights: dict[str, torch.Tensor]  # under the LM's own names (OPTForCausalLM / T5ForConditionalGeneration)


def _language_model(name: str, tokenizer: Any) -> _LanguageModel:
    if "opt" in name:
        # BLIP-2's OPT stops at a newline (50118 in OPT's vocabulary), as LAVIS does.
        config = _language_config(name, len(tokenizer), tokenizer.convert_tokens_to_ids("\u010a"))
        model_class = OPTForCausalLM
    else:
        config = _language_config(name, len(tokenizer), tokenizer.eos_token_id)
        model_class = T5ForConditionalGeneration
    config_json = _language_config_json(config)
    model = model_class(type(config).from_dict(config_json))
    weights = _drawn(dict(model.state_dict()), sum(map(ord, name)))
    if "t5" in name:
        for tied in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            weights.pop(tied)  # stored once, as `shared`; `lm_head` was drawn apart: Flan-T5's own head
    else:
        weights["lm_head.weight"] = weights["model.decoder.embed_tokens.weight"]  # OPT's tied head
    return _LanguageModel(config_json, _exact_in_half_precision(weights))


def _shared_vit() -> dict[str, torch.Tensor]:
    """The 224-px ViT every checkpoint with a frozen ViT holds: the one `eva_vit_g.pth` supplies to LAVIS."""
    vision = Blip2VisionModel(Blip2VisionConfig(**VIT, image_size=224, patch_size=14, layer_norm_eps=1e-6))
    weights = {f"vision_model.{key}": value for key, value in vision.state_dict().items()}
    return _exact_in_half_precision(_drawn(weights, 0))


# ---- Hugging Face hub repositories ------------------------------------------------------------------------
def _preprocessor_config(image_size: int) -> dict:
    """Salesforce/blip2-*'s preprocessor_config.json: BlipImageProcessor, bicubic, CLIP mean and std."""
    return {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_processor_type": "BlipImageProcessor",
        "image_std": CLIP_STD,
        "processor_class": "Blip2Processor",
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"height": image_size, "width": image_size},
    }


def _hf_repository(
    checkpoint: Checkpoint, folder: Path, vit: dict, language: _LanguageModel | None
) -> dict[str, torch.Tensor]:
    """Write one hub repository; returns its weights under the released names."""
    folder.mkdir(parents=True, exist_ok=True)
    image_size = image_size_of(checkpoint)
    config_dict: dict[str, Any] = {
        "model_type": "blip-2",
        "num_query_tokens": NUM_QUERY_TOKENS,
        "image_text_hidden_size": 256,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "vision_config": {**VIT, "image_size": image_size, "patch_size": 14, "layer_norm_eps": 1e-6},
        "transformers_version": "4.47.0.dev0",
    }
    qformer = {
        **QFORMER,
        "max_position_embeddings": QFORMER_POSITIONS,
        "encoder_hidden_size": VIT["hidden_size"],
    }
    name = language_model_of(checkpoint)
    if name is None:
        tokenizer = _bert_tokenizer(folder, with_dec=True)
        config_dict.update(
            architectures=["Blip2ForImageTextRetrieval"],
            qformer_config={**qformer, "vocab_size": len(tokenizer), "use_qformer_text_input": True},
        )
        model_class = Blip2ForImageTextRetrieval
    else:
        tokenizer = _language_tokenizer(name, folder, with_image=True)
        config_dict.update(
            architectures=["Blip2ForConditionalGeneration"],
            qformer_config=qformer,
            text_config=language.config_json,
            use_decoder_only_language_model="opt" in name,
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        )
        model_class = Blip2ForConditionalGeneration
    _write_json(folder / "config.json", config_dict)
    model = model_class(Blip2Config.from_pretrained(folder))
    own = {key: value for key, value in model.state_dict().items() if not key.startswith("language_model.")}
    weights = _exact_in_half_precision(_drawn(own, sum(map(ord, checkpoint.hf_id))))
    if image_size == 224:
        weights.update(vit)
    if language is not None:
        # OPT's head is its embeddings: the hub file holds them once, as `...decoder.embed_tokens.weight`.
        lm = {
            key: value
            for key, value in language.weights.items()
            if not ("opt" in name and key == "lm_head.weight")
        }
        weights.update({f"language_model.{key}": value for key, value in lm.items()})
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    tokenizer.save_pretrained(folder)
    _write_json(folder / "preprocessor_config.json", _preprocessor_config(image_size))
    processor = {"processor_class": "Blip2Processor"}
    if name is not None:
        processor["num_query_tokens"] = NUM_QUERY_TOKENS
    _write_json(folder / "processor_config.json", processor)
    return weights


# ---- what LAVIS downloads ---------------------------------------------------------------------------------
def _lavis_checkpoint(checkpoint: Checkpoint, hf_weights: dict[str, torch.Tensor]) -> dict:
    """LAVIS's `.pth` for a model type: every weight it trains plus its buffers, under LAVIS's names."""
    family = "t5" if "t5" in checkpoint.hf_id else "opt"
    state = convert.hf_to_lavis(hf_weights, family)
    state = {k: v for k, v in state.items() if not k.startswith(("opt_model.", "t5_model."))}
    if vit_is_frozen(checkpoint):
        state = {k: v for k, v in state.items() if not k.startswith("visual_encoder.")}
    state["Qformer.bert.embeddings.position_ids"] = torch.arange(QFORMER_POSITIONS).expand(1, -1).clone()
    if language_model_of(checkpoint) is None:  # stage 1 also trains the ITC temperature and the ITG head
        hidden, vocab = (
            QFORMER["hidden_size"],
            state["Qformer.bert.embeddings.word_embeddings.weight"].shape[0],
        )
        generator = torch.Generator().manual_seed(2)
        state["temp"] = torch.tensor(0.07)
        head = "Qformer.cls.predictions."
        state[head + "transform.dense.weight"] = torch.randn(hidden, hidden, generator=generator) * 0.02
        state[head + "transform.dense.bias"] = torch.zeros(hidden)
        state[head + "transform.LayerNorm.weight"] = torch.ones(hidden)
        state[head + "transform.LayerNorm.bias"] = torch.zeros(hidden)
        # LAVIS adds [DEC] with `resize_token_embeddings`, which gives the decoder a new, longer bias and
        # leaves `cls.predictions.bias` at bert-base-uncased's vocabulary: the two differ by one.
        state[head + "bias"] = torch.zeros(vocab - 1)
        state[head + "decoder.weight"] = state["Qformer.bert.embeddings.word_embeddings.weight"]
        state[head + "decoder.bias"] = torch.zeros(vocab)
    return {"model": state}


def lavis_file_name(checkpoint: Checkpoint) -> str:
    """The file name in the model type's yaml (`pretrained`, or `finetuned` for the fine-tuned types)."""
    names = {
        "pretrain": "blip2_pretrained.pth",
        "coco": "blip2_finetune_coco.pth",
        "caption_coco_opt2.7b": "blip2_caption_opt2.7b.pth",
        "caption_coco_opt6.7b": "blip2_caption_opt6.7b.pth",
        "caption_coco_flant5xl": "blip2_caption_flant5xl.pth",
    }
    model_type = checkpoint.lavis_model_type
    return names.get(model_type, f"blip2_pretrained_{model_type.removeprefix('pretrain_')}.pth")


def _hub_language_model(name: str, folder: Path, language: _LanguageModel) -> None:
    """facebook/opt-* (OPTModel's keys, no lm_head) or google/flan-t5-* (shared and its own lm_head)."""
    folder.mkdir(parents=True, exist_ok=True)
    # BLIP-2 stops OPT at a newline; facebook/opt itself ends at </s> (2).
    _write_json(
        folder / "config.json", {**language.config_json, **({"eos_token_id": 2} if "opt" in name else {})}
    )
    weights = language.weights
    if "opt" in name:
        weights = {k.removeprefix("model."): v for k, v in weights.items() if k != "lm_head.weight"}
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    _language_tokenizer(name, folder, with_image=False).save_pretrained(folder)


def _hub_bert(folder: Path) -> None:
    """bert-base-uncased: BertForPreTraining's keys, its config and vocabulary (LAVIS builds the Q-Former on it)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _bert_tokenizer(folder, with_dec=False)
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=QFORMER_POSITIONS, **QFORMER)
    config.architectures = ["BertForMaskedLM"]
    config.save_pretrained(folder)
    torch.manual_seed(1)
    weights = {k: v.contiguous() for k, v in BertForPreTraining(config).state_dict().items()}
    for tied in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
        weights.pop(tied)  # the word embeddings and `cls.predictions.bias`, stored once
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    tokenizer.save_pretrained(folder)


@dataclass(frozen=True)
class ReleasedFixtures:
    """Where each released file lies: hub repositories by id, LAVIS's downloads by URL file name."""

    hf: dict[str, Path]
    """Salesforce/blip2-* repositories and the hub models LAVIS builds on, by hub id."""
    lavis_files: dict[str, Path]
    """eva_vit_g.pth and the BLIP-2 `.pth` files, by the file name of their download URL."""


def build_released_fixtures(root: Path) -> ReleasedFixtures:
    """Write every released checkpoint in miniature under `root`, in both backends' download layouts."""
    vit = _shared_vit()
    languages: dict[str, _LanguageModel] = {}
    hf: dict[str, Path] = {}
    lavis_files: dict[str, Path] = {}
    (root / "lavis").mkdir(parents=True, exist_ok=True)
    for checkpoint in CHECKPOINTS:
        name = language_model_of(checkpoint)
        folder = root / "hub" / checkpoint.hf_id
        if name is not None and name not in languages:
            hf[name] = root / "hub" / name
            hf[name].mkdir(parents=True)
            languages[name] = _language_model(name, _language_tokenizer(name, hf[name], with_image=True))
            _hub_language_model(name, hf[name], languages[name])
        weights = _hf_repository(checkpoint, folder, vit, languages.get(name))
        hf[checkpoint.hf_id] = folder
        file = root / "lavis" / lavis_file_name(checkpoint)
        torch.save(_lavis_checkpoint(checkpoint, weights), file)
        lavis_files[file.name] = file
    hf["bert-base-uncased"] = root / "hub" / "bert-base-uncased"
    _hub_bert(hf["bert-base-uncased"])
    eva = convert.hf_to_lavis(vit)
    eva_file = root / "lavis" / "eva_vit_g.pth"
    vit_only = {
        k.removeprefix("visual_encoder."): v for k, v in eva.items() if k.startswith("visual_encoder.")
    }
    torch.save(vit_only, eva_file)  # ln_vision is BLIP-2's, in its own .pth
    lavis_files[eva_file.name] = eva_file
    return ReleasedFixtures(hf, lavis_files)


@contextlib.contextmanager
def lavis_downloads_from(fixtures: ReleasedFixtures) -> Iterator[None]:
    """While active, LAVIS's downloads come from the fixtures: only the file locations and the ViT's sizes change.

    LAVIS fetches its `.pth` files by URL through `download_cached_file` and the hub models by name through
    `from_pretrained`; both are answered with the fixture's files. `create_eva_vit_g` hard-codes ViT-g's sizes,
    so its `VisionTransformer` is given the miniature's (EVA_VIT_SIZES).
    """
    from helpers.backends import lavis_compat

    lavis_compat.apply()
    from lavis.models import base_model, eva_vit
    from lavis.models.blip2_models import blip2, blip2_opt, blip2_t5

    def download(url: str, *args: Any, **kwargs: Any) -> str:
        name = url.rsplit("/", 1)[-1]
        if name not in fixtures.lavis_files:
            raise FileNotFoundError(f"the released-format fixtures have no {name} (asked for {url})")
        return str(fixtures.lavis_files[name])

    class Relocated:
        """`owner.from_pretrained(hub_id)` reading the fixture's folder for that hub id."""

        def __init__(self, owner: Any) -> None:
            self._owner = owner

        def from_pretrained(self, name: str, *args: Any, **kwargs: Any) -> Any:
            return self._owner.from_pretrained(str(fixtures.hf.get(name, name)), *args, **kwargs)

    replacements: list[tuple[Any, str, Any]] = [
        (module, "download_cached_file", download) for module in (base_model, eva_vit, blip2)
    ]
    replacements += [
        (module, name, Relocated(getattr(module, name)))
        for module, name in [
            (blip2, "BertTokenizer"),
            (blip2, "BertConfig"),
            (blip2, "BertLMHeadModel"),
            (blip2_opt, "AutoTokenizer"),
            (blip2_opt, "OPTForCausalLM"),
            (blip2_t5, "T5TokenizerFast"),
            (blip2_t5, "T5Config"),
            (blip2_t5, "T5ForConditionalGeneration"),
        ]
    ]
    replacements.append((eva_vit, "VisionTransformer", _with_sizes(eva_vit.VisionTransformer)))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in replacements]
    try:
        for owner, name, value in replacements:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def _with_sizes(vision_transformer: type) -> type:
    class MiniatureVisionTransformer(vision_transformer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**{**kwargs, **EVA_VIT_SIZES})

    return MiniatureVisionTransformer

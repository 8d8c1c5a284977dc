"""Convert BLIP-2 state dicts between LAVIS and Hugging Face names, in both directions.

The renames are the ones transformers' `convert_blip_2_original_to_pytorch.py` documents, plus the stage-1
(retrieval) heads. One tensor changes shape: LAVIS's EVA ViT keeps separate `q_bias` and `v_bias` (its keys
have no bias), transformers stores one `qkv.bias` = concat(q_bias, zeros, v_bias).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from helpers.backends.key_accounting import KeyReport, check_keys

Tensors = dict[str, torch.Tensor]

_SHARED_PREFIXES = [  # (LAVIS, HF) name prefixes of the parts every BLIP-2 has
    ("visual_encoder.cls_token", "vision_model.embeddings.class_embedding"),
    ("visual_encoder.pos_embed", "vision_model.embeddings.position_embedding"),
    ("visual_encoder.patch_embed.proj.", "vision_model.embeddings.patch_embedding."),
    ("ln_vision.", "vision_model.post_layernorm."),
    ("Qformer.bert.embeddings.LayerNorm.", "qformer.layernorm."),
    ("Qformer.bert.embeddings.word_embeddings.", "embeddings.word_embeddings."),
    ("Qformer.bert.embeddings.position_embeddings.", "embeddings.position_embeddings."),
    ("Qformer.bert.encoder.", "qformer.encoder."),
    ("vision_proj.", "vision_projection."),
    ("text_proj.", "text_projection."),
    ("query_tokens", "query_tokens"),
    ("itm_head.", "itm_head."),
]
_LANGUAGE_PREFIXES = {  # LAVIS names the language model after its family, HF does not
    "opt": [("opt_model.", "language_model."), ("opt_proj.", "language_projection.")],
    "t5": [("t5_model.", "language_model."), ("t5_proj.", "language_projection.")],
}
_VIT_BLOCK = ("visual_encoder.blocks.", "vision_model.encoder.layers.")
_VIT_BLOCK_PARTS = [  # inside one ViT block
    ("norm1.", "layer_norm1."),
    ("norm2.", "layer_norm2."),
    ("attn.qkv.weight", "self_attn.qkv.weight"),
    ("attn.proj.", "self_attn.projection."),
    ("mlp.", "mlp."),
]
_QFORMER_ATTENTION = [  # BERT's attention.self is HF's attention.attention
    (".attention.self.", ".attention.attention."),
    (".crossattention.self.", ".crossattention.attention."),
]

LAVIS_ONLY = re.compile(r"^(temp|Qformer\.bert\.embeddings\.position_ids|Qformer\.cls\..*)$")
"""LAVIS keys with no HF counterpart: the ITC temperature, a position-id buffer and the ITG head."""

LAVIS, HF = 0, 1


def _swap_prefix(key: str, pairs: list[tuple[str, str]], source: int) -> str | None:
    for pair in pairs:
        if key.startswith(pair[source]):
            return pair[1 - source] + key[len(pair[source]) :]
    return None


def rename(key: str, source: int, language_model: str = "opt") -> str:
    """One parameter name from LAVIS to HF (`source=LAVIS`) or back (`source=HF`)."""
    block = _swap_prefix(key, [_VIT_BLOCK], source)
    if block is not None:
        index, _, part = block[len(_VIT_BLOCK[1 - source]) :].partition(".")
        renamed_part = _swap_prefix(part, _VIT_BLOCK_PARTS, source)
        if renamed_part is None:
            raise KeyError(f"no counterpart for ViT parameter {key!r}")
        return f"{_VIT_BLOCK[1 - source]}{index}.{renamed_part}"
    renamed = _swap_prefix(key, _SHARED_PREFIXES + _LANGUAGE_PREFIXES[language_model], source)
    if renamed is None:
        raise KeyError(f"no counterpart for {key!r}")
    if renamed.startswith(("Qformer.bert.encoder.", "qformer.encoder.")):
        for pair in _QFORMER_ATTENTION:
            renamed = renamed.replace(pair[source], pair[1 - source])
    return renamed


def lavis_to_hf(state_dict: Mapping[str, torch.Tensor], language_model: str = "opt") -> Tensors:
    """A LAVIS BLIP-2 state dict under HF's names; LAVIS-only keys (see LAVIS_ONLY) are dropped."""
    converted: Tensors = {}
    for key, value in state_dict.items():
        if LAVIS_ONLY.match(key):
            continue
        if key.endswith("attn.v_bias") and key.startswith(_VIT_BLOCK[LAVIS]):
            continue  # merged with q_bias below
        if key.endswith("attn.q_bias") and key.startswith(_VIT_BLOCK[LAVIS]):
            block = key[: -len("attn.q_bias")]
            v_bias = state_dict[block + "attn.v_bias"]
            hf_block = rename(block + "attn.qkv.weight", LAVIS)[: -len("weight")]
            converted[hf_block + "bias"] = torch.cat([value, torch.zeros_like(v_bias), v_bias])
            continue
        converted[rename(key, LAVIS, language_model)] = value
    return converted


def hf_to_lavis(state_dict: Mapping[str, torch.Tensor], language_model: str = "opt") -> Tensors:
    """An HF BLIP-2 state dict under LAVIS's names, with `qkv.bias` split into `q_bias` and `v_bias`."""
    converted: Tensors = {}
    for key, value in state_dict.items():
        if key.startswith(_VIT_BLOCK[HF]) and key.endswith("self_attn.qkv.bias"):
            q_bias, k_bias, v_bias = value.chunk(3)
            if k_bias.abs().max() > 0:
                raise ValueError(f"{key}: LAVIS's EVA ViT has no key bias, but this checkpoint's is non-zero")
            block = rename(key[: -len("bias")] + "weight", HF)[: -len("qkv.weight")]
            converted[block + "q_bias"], converted[block + "v_bias"] = q_bias, v_bias
            continue
        converted[rename(key, HF, language_model)] = value
    return converted


def read_hf_weights(folder: str | Path) -> Tensors:
    """Every tensor of an HF checkpoint folder: one `model.safetensors` or the shards its index lists."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        weights: Tensors = {}
        for shard in shards:
            weights.update(load_file(folder / shard))
        return weights
    single = folder / "model.safetensors"
    if not single.exists():
        raise FileNotFoundError(f"{folder} has no model.safetensors: is it a saved Hugging Face checkpoint?")
    return load_file(single)


def _has_counterpart(hf_key: str, language_model: str) -> bool:
    """Whether an HF key has a LAVIS name (a ViT `qkv.bias` becomes `q_bias` and `v_bias`)."""
    if hf_key.startswith(_VIT_BLOCK[HF]) and hf_key.endswith("self_attn.qkv.bias"):
        hf_key = hf_key[: -len("bias")] + "weight"
    try:
        rename(hf_key, HF, language_model)
    except KeyError:
        return False
    return True


def _language_model(model: nn.Module) -> tuple[str, nn.Module | None]:
    for name in ("opt_model", "t5_model"):
        if hasattr(model, name):
            return name, getattr(model, name)
    return "", None


def _filled_by_tying(language: nn.Module | None, prefix: str, present: set[str]) -> set[str]:
    """Tied keys that tying fills: every member of a tied group (e.g. T5's `shared`, `encoder.embed_tokens`,
    `decoder.embed_tokens`, `lm_head`) once the checkpoint holds one of them, as `from_pretrained` ties."""
    groups: dict[str, set[str]] = {}
    for target, source in getattr(language, "all_tied_weights_keys", {}).items():
        groups.setdefault(f"{prefix}.{source}", {f"{prefix}.{source}"}).add(f"{prefix}.{target}")
    return {key for group in groups.values() if group & present for key in group}


def load_hf_weights_into_lavis(model: nn.Module, folder: str | Path) -> KeyReport:
    """Load an HF checkpoint into a LAVIS BLIP-2; fails on any key outside LAVIS_ONLY the two do not share.

    Parts built on the meta device (the ViT and the language model, see `lavis_sources`) take the
    checkpoint's tensors as they are, in its dtype; the others are copied into, keeping their dtype. Tied
    embeddings are tied the way `from_pretrained` ties them: only where the checkpoint holds one of the pair,
    so an untied Flan-T5 head keeps its own weights.
    """
    language_name, language = _language_model(model)
    family = "t5" if language_name == "t5_model" else "opt"
    hf_weights = read_hf_weights(folder)
    foreign = {key for key in hf_weights if not _has_counterpart(key, family)}
    weights = hf_to_lavis({k: v for k, v in hf_weights.items() if k not in foreign}, family)
    expected = model.state_dict(keep_vars=True)
    missing = set(expected) - set(weights) - _filled_by_tying(language, language_name, set(weights))
    report = check_keys(
        str(folder),
        f"LAVIS's {type(model).__name__}",
        missing,
        (set(weights) - set(expected)) | foreign,
        expected_missing=LAVIS_ONLY,
    )
    on_meta = {key for key in weights if expected[key].is_meta}
    model.load_state_dict({k: v for k, v in weights.items() if k not in on_meta}, strict=False)
    model.load_state_dict({k: weights[k] for k in on_meta}, strict=False, assign=True)
    if language is not None:
        prefix = len(language_name) + 1
        absent = {
            key[prefix:] for key in expected if key.startswith(f"{language_name}.") and key not in weights
        }
        language.tie_weights(missing_keys=absent, recompute_mapping=False)
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:
        raise ValueError(
            f"{folder}: LAVIS's {type(model).__name__} has weights the checkpoint did not fill: {left[:5]}"
        )
    return report


def declare_untied_head(model: nn.Module, folder: str | Path) -> None:
    """Write `tie_word_embeddings: false` into a saved BLIP-2's text config when its LM head is its own.

    transformers 5 saves T5's flag as True whatever the weights; google/flan-t5-xl's config says False, and
    transformers 4 reads True as "tie the head to the embeddings and rescale the decoder output", which would
    turn a saved Flan-T5 BLIP-2 into another model. OPT's head is its embeddings, and keeps the flag.
    """
    language = getattr(model, "language_model", None)
    if language is None or language.get_output_embeddings().weight is language.get_input_embeddings().weight:
        return
    config_file = Path(folder) / "config.json"
    config = json.loads(config_file.read_text())
    config["text_config"]["tie_word_embeddings"] = False
    temporary = config_file.with_name(f".{config_file.name}.tmp")
    temporary.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    temporary.replace(config_file)

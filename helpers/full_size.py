"""Full-size BLIP-2 checkpoints with random weights, in the hub layout, for the benchmarks.

Nothing can be downloaded here, yet loading memory and retrieval speed depend on the architecture, not on
the values of the weights. So the kit writes a checkpoint with the real architecture (configs from
`helpers/configs/`), random fp16 weights in sharded safetensors with an index, and the offline profile's
processor (its small tokenizers: token ids stay within the full vocabularies). The model is built on the
meta device and each tensor is drawn and written shard by shard, so 3.9 billion parameters never sit in
memory at once, let alone in fp32.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BertTokenizer, Blip2ForConditionalGeneration, Blip2Processor, PreTrainedModel

from helpers import offline
from helpers.atomic import staged_folder
from helpers.variants import STAGE1_VARIANT, meta_model

VERSION = "random-v3"
CACHE_ENV_VAR = "BLIP2_FULL_SIZE_DIR"
GENERATION = "blip2-opt-2.7b"
RETRIEVAL = STAGE1_VARIANT
SHARD_BYTES = 2 * 2**30
"""Shard size: the hub's BLIP-2 checkpoints come in shards of a few GB, which a loader reads one by one."""
WEIGHT_STD = 0.02
"""Standard deviation of the random matrices, the `initializer_range` of BERT, OPT and the ViT."""
DTYPE = torch.float16


def cache_dir() -> Path:
    """$BLIP2_FULL_SIZE_DIR, else the kit's folder in the user's cache (about 10 GB)."""
    root = os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "blip2-kit" / "full-size"
    return Path(root) / VERSION


def folder(variant: str) -> Path:
    """Where the full-size random checkpoint of `variant` (`GENERATION` or `RETRIEVAL`) lives, built or not."""
    if variant not in (GENERATION, RETRIEVAL):
        raise ValueError(
            f"variant={variant!r}: full-size random checkpoints exist for {GENERATION!r} and {RETRIEVAL!r}"
        )
    return cache_dir() / variant


def is_built(variant: str) -> bool:
    """Whether the checkpoint is on disk; `build` renames it into place complete, so present means whole."""
    return (folder(variant) / "model.safetensors.index.json").exists()


def checkpoint_path(variant: str) -> Path:
    """The folder of a full-size random checkpoint (`GENERATION` or `RETRIEVAL`), built on first use."""
    if not is_built(variant):
        build(variant, folder(variant))
    return folder(variant)


def _random_tensor(name: str, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Norm weights 1, biases 0, everything else N(0, 0.02): random, but numerically sane activations."""
    if name.endswith("bias"):
        return torch.zeros(shape, dtype=DTYPE)
    if "norm" in name.lower():
        return torch.ones(shape, dtype=DTYPE)
    return torch.empty(shape).normal_(0.0, WEIGHT_STD, generator=generator).to(DTYPE)


def _write_weights(variant: str, folder: Path, shard_bytes: int, seed: int) -> PreTrainedModel:
    """Draw and save one shard at a time; returns the meta-device model, whose config is saved next."""
    model = meta_model(variant)
    tied = set(model.all_tied_weights_keys)  # saved once, as save_pretrained does
    shapes = {name: tensor.shape for name, tensor in model.state_dict().items() if name not in tied}
    generator = torch.Generator().manual_seed(seed)
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = shape.numel() * DTYPE.itemsize
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    weight_map = {}
    for index, names in enumerate(shards, start=1):
        file_name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: _random_tensor(name, shapes[name], generator) for name in names}
        save_file(tensors, folder / file_name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file_name))
        del tensors
    total = sum(shape.numel() for shape in shapes.values()) * DTYPE.itemsize
    index_text = json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    (folder / "model.safetensors.index.json").write_text(index_text)
    return model


def _save_config(model: PreTrainedModel, processor: Blip2Processor, folder: Path) -> None:
    """The variant's config with the ids of the offline tokenizer the processor brings."""
    config = model.config
    tokenizer = processor.tokenizer
    config.dtype = DTYPE
    if isinstance(model, Blip2ForConditionalGeneration):
        config.image_token_id = tokenizer.convert_tokens_to_ids(processor.image_token.content)
        text = config.text_config
        text.pad_token_id, text.bos_token_id = tokenizer.pad_token_id, tokenizer.bos_token_id
        # As in Salesforce/blip2-opt-*: generation stops at a newline.
        text.eos_token_id = tokenizer("\n", add_special_tokens=False)["input_ids"][0]
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = text.eos_token_id
        model.generation_config.bos_token_id = text.bos_token_id
        model.generation_config.save_pretrained(folder)
    config.save_pretrained(folder)


def _full_vocabulary(processor: Blip2Processor, size: int) -> Blip2Processor:
    """The offline BERT tokenizer padded with unused tokens to the Q-Former's full vocabulary.

    LAVIS resizes the Q-Former's word embeddings to the tokenizer's length, so the two must agree; the
    offline words keep their ids and tokenise exactly as before. [DEC] stays the last token, as in LAVIS.
    """
    words = [token for token, _ in sorted(processor.tokenizer.get_vocab().items(), key=lambda item: item[1])]
    words.remove("[DEC]")
    words += [f"[unused{index}]" for index in range(size - 1 - len(words))]
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(words)})
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return Blip2Processor(processor.image_processor, tokenizer, num_query_tokens=processor.num_query_tokens)


def build(variant: str, folder: str | Path, shard_bytes: int = SHARD_BYTES, seed: int = 0) -> Path:
    """Write the checkpoint into a temporary folder next to `folder` and rename it into place."""
    with staged_folder(folder) as staging:  # if another process finished first, its result stays
        kind = offline.RETRIEVAL if variant == RETRIEVAL else offline.CAPTION
        processor = Blip2Processor.from_pretrained(offline.checkpoint_path(kind))
        model = _write_weights(variant, staging, shard_bytes, seed)
        queries = model.config.num_query_tokens  # the real 32, not the miniature's
        processor = Blip2Processor(processor.image_processor, processor.tokenizer, num_query_tokens=queries)
        if variant == RETRIEVAL:
            processor = _full_vocabulary(processor, model.config.qformer_config.vocab_size)
        _save_config(model, processor, staging)
        processor.save_pretrained(staging)
    return Path(folder)

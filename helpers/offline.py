"""The offline checkpoints: a miniature BLIP-2 built by the kit, loaded like a hub checkpoint.

Nothing can be downloaded in CI, yet tests must run the code that loads `Salesforce/blip2-opt-2.7b`.
So the kit writes small checkpoints to disk in the hub layout (config, safetensors weights, processor,
tokenizer) with the same classes as the real ones: `Blip2ForConditionalGeneration` with an OPT language
model for generation and `Blip2ForImageTextRetrieval` for ITC/ITM. Loading then goes through the very same
`from_pretrained` calls, with only the location changed.

The weights are random but deterministic (fixed seed, fixed tokenizer corpus). `CHECKPOINT_VERSION` names
what is built; a trained miniature replaces the random one by changing `build_checkpoints` and the version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BertTokenizer,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2ForImageTextRetrieval,
    Blip2Processor,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    BlipImageProcessor,
    GPT2Tokenizer,
    OPTConfig,
)

from helpers.atomic import staged_folder

CHECKPOINT_VERSION = "random-v3"
CACHE_ENV_VAR = "BLIP2_OFFLINE_DIR"
CAPTION = "caption"
RETRIEVAL = "retrieval"
NUM_QUERY_TOKENS = 32
SEED = 0

# Words the miniature tokenizers learn from: the kit's prompts and the vocabulary of its sample images.
_CORPUS = """
a photo of a cat on a couch . a man in a space suit holding a flag . a cup of coffee on a table .
a rocket on a launch pad . a portrait of a woman in uniform . two dogs playing in the grass .
question : what is shown in the photo ? answer : what color is the bus ? how many people are visible
in the image ? what is the weather like in the image ? describe in detail what is happening in the image .
write a short story based on this image . list all the objects you can see in the image .
explain what emotions this image evokes and why . short answer : yes no red green blue yellow white black
circle square triangle left right top bottom one two three four five small large
"""


def cache_dir() -> Path:
    """Where the offline checkpoints live: $BLIP2_OFFLINE_DIR, else the user's cache folder."""
    root = os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "blip2-kit"
    return Path(root) / CHECKPOINT_VERSION


def checkpoint_path(kind: str) -> Path:
    """The folder of the offline `caption` or `retrieval` checkpoint, built on first use."""
    if kind not in (CAPTION, RETRIEVAL):
        raise ValueError(f"kind={kind!r}: the offline checkpoints are {CAPTION!r} and {RETRIEVAL!r}")
    root = cache_dir()
    if not (root / RETRIEVAL / "config.json").exists():
        build_checkpoints(root)
    return root / kind


def build_checkpoints(destination: Path) -> Path:
    """Build both checkpoints into a staging folder renamed into place, so a crash leaves nothing half-written."""
    with staged_folder(
        destination
    ) as staging:  # if another process finished first, its identical result stays
        _save_caption_checkpoint(staging / CAPTION)
        _save_retrieval_checkpoint(staging / RETRIEVAL)
    return destination


_WIDTHS = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}
"""The miniature's transformer widths, shared by its ViT and Q-Former (ViT-g: 1408; Q-Former: 768)."""


def _vision_config() -> Blip2VisionConfig:
    # Same 224-pixel input as ViT-g so preprocessing is the real one; 32-pixel patches keep it tiny.
    return Blip2VisionConfig(
        **_WIDTHS,
        num_hidden_layers=2,
        image_size=224,
        patch_size=32,
    )


def _qformer_config(vocab_size: int, text_input: bool) -> Blip2QFormerConfig:
    # Cross-attention every other block, as in the real Q-Former; only the stage-1 (retrieval)
    # checkpoint keeps the text side's feed-forward layers.
    return Blip2QFormerConfig(
        use_qformer_text_input=text_input,
        vocab_size=vocab_size,
        **_WIDTHS,
        num_hidden_layers=4,
        cross_attention_frequency=2,
        max_position_embeddings=64,
    )


def blip2_image_processor(size: int = 224) -> BlipImageProcessor:
    """The values of Salesforce/blip2-opt-2.7b's preprocessor: `size` px (224 there), bicubic, CLIP mean and std."""
    return BlipImageProcessor(
        size={"height": size, "width": size},
        resample=3,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
        do_convert_rgb=True,
    )


def _train_opt_tokenizer() -> GPT2Tokenizer:
    """A byte-level BPE like OPT's, with OPT's special-token ids (<s>=0, <pad>=1, </s>=2, <unk>=3)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS.split("\n"), trainer=trainer)
    return GPT2Tokenizer(
        vocab=backend.get_vocab(),
        merges=_merges(backend),
        bos_token="</s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=True,
    )


def _merges(backend: Tokenizer) -> list[tuple[str, str]]:
    """The learned merge rules; the tokenizers API exposes them only through the serialised model."""
    return [tuple(merge) for merge in json.loads(backend.to_str())["model"]["merges"]]


def _bert_tokenizer() -> BertTokenizer:
    """A lower-cased WordPiece vocabulary like bert-base-uncased's, which the Q-Former's text side uses.

    Whole corpus words plus every character (alone and as a ##continuation), listed in sorted order:
    tokenizers' WordPiece trainer is not deterministic across runs, and this vocabulary must be.
    """
    words = sorted(set(_CORPUS.lower().split()))
    characters = sorted(set("".join(words)) | set("abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'-"))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters, *(f"##{c}" for c in characters)]
    tokens += [word for word in words if word not in tokens]
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(tokens)})
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})  # LAVIS's decoder start token for ITG
    return tokenizer


def _save_caption_checkpoint(folder: Path) -> None:
    processor = Blip2Processor(
        blip2_image_processor(), _train_opt_tokenizer(), num_query_tokens=NUM_QUERY_TOKENS
    )
    tokenizer = processor.tokenizer
    text_config = OPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        ffn_dim=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        word_embed_proj_dim=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        # Like Salesforce/blip2-opt-*: generation stops at a newline (OPT's id 50118), which LAVIS also uses.
        eos_token_id=tokenizer("\n", add_special_tokens=False)["input_ids"][0],
    )
    config = Blip2Config(
        vision_config=_vision_config(),
        qformer_config=_qformer_config(len(tokenizer), text_input=False),
        text_config=text_config,
        num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids(processor.image_token.content),
    )
    torch.manual_seed(SEED)
    model = Blip2ForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _save_retrieval_checkpoint(folder: Path) -> None:
    tokenizer = _bert_tokenizer()
    processor = Blip2Processor(blip2_image_processor(), tokenizer, num_query_tokens=NUM_QUERY_TOKENS)
    config = Blip2Config(
        vision_config=_vision_config(),
        qformer_config=_qformer_config(len(tokenizer), text_input=True),
        text_config=OPTConfig(
            vocab_size=8, hidden_size=8, ffn_dim=8, num_hidden_layers=1, num_attention_heads=1
        ),
        num_query_tokens=NUM_QUERY_TOKENS,
        image_text_hidden_size=32,
    )
    torch.manual_seed(SEED + 1)
    model = Blip2ForImageTextRetrieval(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)

"""The miniature's two tokenizers, learned from the world's text with the real models' conventions.

The language model gets a byte-level BPE like OPT's (any text still tokenizes, byte by byte, and OPT's
special ids hold: <s>=0, <pad>=1, </s>=2, <unk>=3, with </s> also the BOS). The Q-Former gets a lower-cased
WordPiece vocabulary like bert-base-uncased's, plus LAVIS's [DEC] token that starts ITG captions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import BertTokenizer, GPT2Tokenizer

DEC_TOKEN = "[DEC]"
_BPE_VOCAB_SIZE = 600
_PUNCTUATION = ".,:;!?'-"


def opt_tokenizer(lines: Iterable[str]) -> GPT2Tokenizer:
    """A byte-level BPE trained on `lines`, with OPT's special tokens and BOS handling."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(lines), trainer=trainer)
    merges = [tuple(merge) for merge in json.loads(backend.to_str())["model"]["merges"]]
    return GPT2Tokenizer(
        vocab=backend.get_vocab(),
        merges=merges,
        bos_token="</s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=True,
    )


def bert_tokenizer(lines: Iterable[str]) -> BertTokenizer:
    """A lower-cased WordPiece vocabulary: every word of `lines`, plus every character alone and as ##suffix.

    Built by listing rather than by tokenizers' WordPiece trainer, which is not deterministic across runs.
    """
    words = sorted({word for line in lines for word in _split_punctuation(line.lower()).split()})
    characters = sorted(set("".join(words)) | set("abcdefghijklmnopqrstuvwxyz0123456789" + _PUNCTUATION))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters, *(f"##{c}" for c in characters)]
    tokens += [word for word in words if word not in tokens]
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(tokens)})
    tokenizer.add_special_tokens({"bos_token": DEC_TOKEN})
    return tokenizer


def _split_punctuation(text: str) -> str:
    for mark in _PUNCTUATION:
        text = text.replace(mark, f" {mark} ")
    return text

"""The Q-Former's self-attention masks: one transformer, three ways of letting queries and text see each other.

In stage 1 the learned queries and the text tokens share the Q-Former's self-attention layers; only the mask
changes with the objective (BLIP-2, Figure 2):

- ITC, uni-modal: queries see queries, text sees text, so neither leaks into the other's representation;
- ITM, bi-directional: every query and every token sees everything, to fuse image and text;
- ITG, multi-modal causal: queries see queries only, each text token sees all queries and the tokens up
  to itself, so the text must be generated from what the queries extracted from the image.

Padding tokens are never attended to. Rows are the attending positions, columns the attended ones, queries
first: position i < num_queries is query i, position num_queries + t is text token t.

The cross-attention layers (every other block) are where the queries read the image: `recorded_cross_attentions`
captures where each query looks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

MASK_KINDS = ("itc", "itm", "itg")


def qformer_attention_mask(kind: str, num_queries: int, text_mask: torch.Tensor) -> torch.Tensor:
    """The (B, Q+T, Q+T) 0/1 self-attention mask of one stage-1 objective (1 = may attend).

    text_mask (B, T) is the tokenizer's attention mask (1 = real token, 0 = padding); its first token
    ([CLS] or [DEC]) must be real. Pass the result through `extended_attention_mask` to feed the HF Q-Former.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"kind={kind!r}; use one of {MASK_KINDS}")
    if num_queries < 0:
        raise ValueError(f"num_queries={num_queries} must be >= 0")
    if text_mask.ndim != 2:
        raise ValueError(f"text_mask must be (batch, tokens), got shape {tuple(text_mask.shape)}")
    if text_mask.shape[1] and not bool((text_mask[:, 0] == 1).all()):
        raise ValueError("text_mask[:, 0] must be 1: every text starts with a real token ([CLS] or [DEC])")
    batch, tokens = text_mask.shape
    device = text_mask.device
    is_query = torch.arange(num_queries + tokens, device=device) < num_queries
    query_row, query_col = is_query[:, None], is_query[None, :]
    if kind == "itm":
        allowed = torch.ones(num_queries + tokens, num_queries + tokens, dtype=torch.bool, device=device)
    elif kind == "itc":
        allowed = query_row == query_col
    else:
        position = torch.arange(num_queries + tokens, device=device)
        causal = position[None, :] <= position[:, None]
        allowed = query_col | (~query_row & causal)
    keys = torch.cat(
        [torch.ones(batch, num_queries, dtype=torch.bool, device=device), text_mask.bool()], dim=1
    )
    return (allowed[None, :, :] & keys[:, None, :]).long()


def extended_attention_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A 0/1 (B, L, L) mask as the (B, 1, L, L) additive mask transformers 5 attention layers add to scores.

    transformers 5 passes a 4-D mask through unchanged to eager and SDPA attention, which add it to the
    attention logits: 0 where attending is allowed, the dtype's most negative value where it is not.
    """
    if mask.ndim != 3 or mask.shape[1] != mask.shape[2]:
        raise ValueError(f"mask must be (batch, length, length), got shape {tuple(mask.shape)}")
    blocked = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    blocked.masked_fill_(mask == 0, torch.finfo(dtype).min)
    return blocked[:, None, :, :]


@contextmanager
def recorded_cross_attentions(qformer: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect, while active, each cross-attention layer's probabilities (B, heads, queries, image tokens).

    `qformer` is transformers' `Blip2QFormerModel` or LAVIS's Q-Former BERT (`model.Qformer.bert`): both
    keep their layers in `encoder.layer`, and their cross-attention projections under
    `crossattention.attention` (transformers) or `crossattention.self` (LAVIS). The probabilities are
    computed in a forward hook from the layer's own query and key projections, so they do not depend on the
    attention kernel (SDPA never materialises them). Image features carry no mask in BLIP-2.
    """
    records: list[torch.Tensor] = []

    def record(module: nn.Module, args: tuple, kwargs: dict, _output: object) -> None:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        # LAVIS passes (hidden_states, attention_mask, head_mask, encoder_hidden_states, ...) positionally.
        image = kwargs["encoder_hidden_states"] if "encoder_hidden_states" in kwargs else args[3]
        records.append(_attention_probabilities(module, hidden, image))

    layers = [layer.crossattention for layer in qformer.encoder.layer if layer.has_cross_attention]
    if not layers:
        raise ValueError(f"{type(qformer).__name__} has no cross-attention layer; pass the Q-Former itself")
    attention = [getattr(layer, "attention", None) or layer.self for layer in layers]
    handles = [module.register_forward_hook(record, with_kwargs=True) for module in attention]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def _attention_probabilities(module: nn.Module, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    heads, width = module.num_attention_heads, module.attention_head_size
    scaling = getattr(module, "scaling", width**-0.5)
    q = module.query(queries).unflatten(-1, (heads, width)).transpose(1, 2)
    k = module.key(keys.to(queries.dtype)).unflatten(-1, (heads, width)).transpose(1, 2)
    return (q @ k.transpose(-1, -2) * scaling).softmax(dim=-1)

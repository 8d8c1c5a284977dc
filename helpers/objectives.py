"""BLIP-2's training losses as pure tensor functions, so they can be read, tested and reused without a model.

Stage 1 trains the Q-Former with three objectives that share one batch: image-text contrastive learning
(ITC, in-batch negatives), image-text matching (ITM, a binary classifier fed hard negatives mined from the
ITC similarities) and image-grounded text generation (ITG, a language-model loss). Stage 2 trains only the
language-model loss through the frozen LLM. `helpers.pretraining` wires these to the real models.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

ITC_TEMPERATURE = 0.07
"""The initial ITC temperature of BLIP and BLIP-2 (a learnable scalar there, clamped to [0.001, 0.5])."""

ITC_LABEL_SMOOTHING = 0.1
"""BLIP-2's stage-1 ITC and ITG cross-entropies use label smoothing 0.1."""


def itc_loss(
    image_proj: torch.Tensor,
    text_proj: torch.Tensor,
    temperature: torch.Tensor | float = ITC_TEMPERATURE,
    *,
    label_smoothing: float = ITC_LABEL_SMOOTHING,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE over in-batch negatives, with BLIP-2's "best query" similarity.

    image_proj (B, Q, D) are the L2-normalised projections of the Q learned queries, text_proj (B, D) the
    normalised [CLS] projections; pair i is (image i, text i). An image's similarity to a text is the
    highest cosine over its queries. Returns the loss (mean of image->text and text->image cross-entropies)
    and the similarity logits (B, B) image->text, already divided by the temperature: the scores that
    `sample_hard_negatives` draws from.
    """
    if image_proj.ndim != 3 or text_proj.ndim != 2:
        raise ValueError(
            f"image_proj must be (batch, queries, dim) and text_proj (batch, dim); got shapes "
            f"{tuple(image_proj.shape)} and {tuple(text_proj.shape)}"
        )
    if image_proj.shape[0] != text_proj.shape[0] or image_proj.shape[-1] != text_proj.shape[-1]:
        raise ValueError(
            f"image_proj {tuple(image_proj.shape)} and text_proj {tuple(text_proj.shape)} must share the batch "
            "size (one text per image) and the projection width"
        )
    if float(torch.as_tensor(temperature).detach()) <= 0:
        raise ValueError(f"temperature={temperature} must be positive (BLIP-2 starts at 0.07)")
    cosine = torch.einsum("iqd,td->itq", image_proj, text_proj).amax(dim=-1)
    logits = cosine / temperature
    targets = torch.arange(logits.shape[0], device=logits.device)
    loss = (
        F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
        + F.cross_entropy(logits.t(), targets, label_smoothing=label_smoothing)
    ) / 2
    return loss, logits


@torch.no_grad()
def sample_hard_negatives(
    similarity: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one hard negative per row and per column, with probability softmax(similarity) off the positive.

    similarity (B, B) holds image->text ITC logits (row i: image i, its positive text is i). Returns
    (negative_text_for_image (B,), negative_image_for_text (B,)). The more a wrong pair looks like a match,
    the likelier it is drawn: ITM then learns from the confusable pairs, as in BLIP and BLIP-2. With `ids`
    (B,) (e.g. image ids), pairs sharing an id are positives too and never drawn.
    """
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be a square (batch, batch) matrix, got {tuple(similarity.shape)}")
    batch = similarity.shape[0]
    if ids is None:
        positive = torch.eye(batch, dtype=torch.bool, device=similarity.device)
    else:
        if ids.shape != (batch,):
            raise ValueError(f"ids has shape {tuple(ids.shape)}; give one id per pair, shape ({batch},)")
        ids = ids.to(similarity.device)
        positive = ids[:, None] == ids[None, :]
    lonely = positive.all(dim=1).nonzero().flatten().tolist()
    if lonely:
        raise ValueError(
            f"rows {lonely} have no negative in the batch (batch size {batch}, or every pair shares their id); "
            "use batches of at least 2 pairs with distinct ids"
        )
    logits = similarity.float().masked_fill(positive, float("-inf"))
    negative_text = torch.multinomial(logits.softmax(dim=1), 1, generator=generator).squeeze(1)
    negative_image = torch.multinomial(logits.t().softmax(dim=1), 1, generator=generator).squeeze(1)
    return negative_text, negative_image


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the ITM head: logits (N, 2), labels (N,) with 1 = matching pair."""
    if logits.ndim != 2 or logits.shape[-1] != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"ITM needs logits (N, 2) and labels (N,); got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    return F.cross_entropy(logits.float(), labels.to(logits.device))


def lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, shift: bool = True, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Next-token cross-entropy, mean over tokens whose label is not -100.

    logits (B, T, V) and labels (B, T). With `shift` (decoder-only models and the Q-Former's ITG) the logit
    at position t predicts label t+1; an encoder-decoder's decoder logits already line up (`shift=False`).
    """
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"lm_loss needs logits (B, T, V) and labels (B, T); got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    labels = labels.to(logits.device)
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    if not (labels != -100).any():
        raise ValueError("every label is -100: there is no target token to learn from")
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=-100,
        label_smoothing=label_smoothing,
    )

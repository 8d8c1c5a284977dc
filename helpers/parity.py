"""The two backends side by side on the same weights: what a notebook shows and the tests assert.

Two real BLIP-2s do not fit a T4 together, so the comparison runs on the offline checkpoints, which both
backends load from the same folders; on the real checkpoints the same code paths run one backend at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from helpers.backends.base import Blip2Backend
from helpers.generation import GREEDY
from helpers.images import ImageSource, load_images


@dataclass(frozen=True)
class ParityRow:
    """One quantity computed by both backends."""

    quantity: str
    hf: str
    lavis: str
    agreement: str


@dataclass(frozen=True)
class ParityReport:
    rows: list[ParityRow]

    def __str__(self) -> str:
        """Each quantity with its agreement, then both backends' values one under the other (fits 110 columns)."""
        return "\n".join(
            f"{row.quantity}: {row.agreement}\n  hf     {row.hf}\n  lavis  {row.lavis}" for row in self.rows
        )


def _difference(hf: torch.Tensor, lavis: torch.Tensor) -> str:
    return f"max |difference| {(hf.float() - lavis.float()).abs().max().item():.1e}"


def compare_backends(
    hf: Blip2Backend, lavis: Blip2Backend, image: ImageSource, question: str, texts: Sequence[str]
) -> ParityReport:
    """Greedy caption and answer, Q-Former features, ITC and ITM from both backends for one image."""
    loaded = load_images([image])
    rows = []
    for name, run in (
        ("caption", lambda model: model.caption(loaded, GREEDY)[0]),
        ("answer", lambda model: model.ask(loaded, question, settings=GREEDY)[0]),
    ):
        hf_text, lavis_text = run(hf), run(lavis)
        rows.append(
            ParityRow(
                name, repr(hf_text), repr(lavis_text), "identical" if hf_text == lavis_text else "DIFFERENT"
            )
        )
    hf_features, lavis_features = hf.image_features(loaded), lavis.image_features(loaded)
    rows.append(
        ParityRow(
            "Q-Former query outputs",
            str(tuple(hf_features.image_embeds.shape)),
            str(tuple(lavis_features.image_embeds.shape)),
            _difference(hf_features.image_embeds, lavis_features.image_embeds),
        )
    )
    hf_scores, lavis_scores = hf.match(loaded, list(texts)), lavis.match(loaded, list(texts))
    for name, hf_value, lavis_value in (
        ("ITC cosine", hf_scores.itc, lavis_scores.itc),
        ("ITM P(match)", hf_scores.itm, lavis_scores.itm),
    ):
        rows.append(
            ParityRow(
                name,
                " ".join(f"{v:.4f}" for v in hf_value[0].tolist()),
                " ".join(f"{v:.4f}" for v in lavis_value[0].tolist()),
                _difference(hf_value, lavis_value),
            )
        )
    return ParityReport(rows)

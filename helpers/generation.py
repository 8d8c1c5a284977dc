"""One set of generation controls for both backends.

LAVIS's `generate(use_nucleus_sampling, num_beams, max_length, ...)` and transformers'
`generate(do_sample, num_beams, max_new_tokens, ...)` name the same knobs differently; users set them
once here and each backend translates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from helpers.user_input import UserInputError, UserInputTypeError, check_finite, check_integer


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding controls; the defaults are LAVIS's BLIP-2 defaults (beam search, 5 beams, up to 30 tokens)."""

    max_new_tokens: int = 30
    min_new_tokens: int = 1
    num_beams: int = 5
    use_nucleus_sampling: bool = False
    top_p: float = 0.9
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    num_captions: int = 1

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "min_new_tokens", "num_beams", "num_captions"):
            check_integer(getattr(self, name), f"GenerationSettings.{name}")
        for name in ("top_p", "temperature", "repetition_penalty", "length_penalty"):
            check_finite(getattr(self, name), f"GenerationSettings.{name}")
        if not isinstance(self.use_nucleus_sampling, bool):
            raise UserInputTypeError(
                f"GenerationSettings.use_nucleus_sampling={self.use_nucleus_sampling!r} must be True or False"
            )
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens={self.max_new_tokens} must be at least 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            problems.append(f"min_new_tokens={self.min_new_tokens} must be between 0 and max_new_tokens")
        if self.num_beams < 1:
            problems.append(f"num_beams={self.num_beams} must be at least 1")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p={self.top_p} must be in (0, 1]")
        if self.temperature <= 0:
            problems.append(f"temperature={self.temperature} must be positive")
        if self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty={self.repetition_penalty} must be positive (1.0 = off)")
        if self.num_captions < 1:
            problems.append(f"num_captions={self.num_captions} must be at least 1")
        if not self.use_nucleus_sampling and self.num_captions > self.num_beams:
            problems.append(
                f"num_captions={self.num_captions} > num_beams={self.num_beams}: beam search can only return "
                "as many captions as beams; raise num_beams or set use_nucleus_sampling=True"
            )
        if problems:
            raise UserInputError("GenerationSettings: " + "; ".join(problems))

    def replace(self, **changes: Any) -> GenerationSettings:
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)

    def to_hf_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for transformers' `generate`."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": self.use_nucleus_sampling,
            "repetition_penalty": self.repetition_penalty,
            "length_penalty": self.length_penalty,
            "num_return_sequences": self.num_captions,
        }
        if self.use_nucleus_sampling:
            kwargs.update(top_p=self.top_p, temperature=self.temperature)
        return kwargs

    def to_lavis_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for LAVIS's BLIP-2 `generate`, whose lengths count generated tokens."""
        return {
            "use_nucleus_sampling": self.use_nucleus_sampling,
            "num_beams": self.num_beams,
            "max_length": self.max_new_tokens,
            "min_length": self.min_new_tokens,
            "top_p": self.top_p,
            "temperature": self.temperature,
            "repetition_penalty": self.repetition_penalty,
            "length_penalty": self.length_penalty,
            "num_captions": self.num_captions,
        }


BEAM_SEARCH = GenerationSettings()
"""LAVIS's default: deterministic beam search with 5 beams."""

GREEDY = GenerationSettings(num_beams=1)
"""One beam: the fastest setting, and the one the backend-parity tests compare."""

NUCLEUS = GenerationSettings(use_nucleus_sampling=True, num_beams=1, top_p=0.9, num_captions=3)
"""Sampling from the top 90% of the probability mass: diverse captions, different on every run."""

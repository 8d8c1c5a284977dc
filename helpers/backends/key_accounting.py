"""Key accounting for every checkpoint load: a key outside the documented expected set is an error.

Loading with `strict=False` (as LAVIS does everywhere) lets a renamed or dropped key pass silently and leave a
layer at its random initial value. Each loader in the kit collects the missing and unexpected keys of every
file it reads and hands them here with the set it expects, documented where the loader is.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

SHOWN_KEYS = 8
"""How many keys of each kind an error message lists before it says how many more there are."""


class CheckpointKeyError(ValueError):
    """A checkpoint's keys do not match the model it is loaded into."""


@dataclass(frozen=True)
class KeyReport:
    """What one load left missing and unexpected, after the expected keys were set aside."""

    checkpoint: str
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]


Expected = re.Pattern[str] | Collection[str] | None
"""The keys a load may leave missing (or find unexpected): a pattern, a set of names, or None for none."""


def _is_expected(key: str, expected: Expected) -> bool:
    if expected is None:
        return False
    if isinstance(expected, re.Pattern):
        return expected.fullmatch(key) is not None
    return key in expected


def _outside(keys: Iterable[str], expected: Expected) -> tuple[str, ...]:
    return tuple(sorted(key for key in keys if not _is_expected(key, expected)))


def _listed(keys: tuple[str, ...]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return f"[{shown}{more}]"


def check_keys(
    checkpoint: str,
    model: str,
    missing: Iterable[str],
    unexpected: Iterable[str],
    expected_missing: Expected = None,
    expected_unexpected: Expected = None,
) -> KeyReport:
    """Raise CheckpointKeyError naming every key outside the expected sets; return what was accounted for."""
    missing, unexpected = sorted(missing), sorted(unexpected)
    bad_missing = _outside(missing, expected_missing)
    bad_unexpected = _outside(unexpected, expected_unexpected)
    if bad_missing or bad_unexpected:
        raise CheckpointKeyError(
            f"{checkpoint} does not fit {model}: {len(bad_missing)} missing keys {_listed(bad_missing)}, "
            f"{len(bad_unexpected)} unexpected keys {_listed(bad_unexpected)}. A renamed or dropped key would "
            "leave weights at random values; load the released checkpoint this model type expects, or a folder "
            "saved by the kit"
        )
    return KeyReport(checkpoint, tuple(missing), tuple(unexpected))


def accounted_from_pretrained(model_class: Any, location: str, *args: Any, **kwargs: Any) -> Any:
    """`model_class.from_pretrained(location)` in eval mode, raising CheckpointKeyError on any key it reports.

    transformers already fills tied weights (OPT's `lm_head`, T5's `encoder`/`decoder.embed_tokens`), skips
    non-persistent buffers and keys a class declares ignorable, so a key it still reports missing or
    unexpected is a renamed or dropped one: the expected set is empty.
    """
    with_info = kwargs.pop("output_loading_info", False)  # a caller that checks too (nested accounting)
    model, info = model_class.from_pretrained(location, *args, output_loading_info=True, **kwargs)
    name = getattr(model_class, "__name__", type(model).__name__)
    check_keys(str(location), name, info["missing_keys"], info["unexpected_keys"])
    return (model.eval(), info) if with_info else model.eval()

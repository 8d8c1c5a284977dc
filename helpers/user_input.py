"""Checks on what users type, run before any model loads, each failing with one line that names the fix.

A bad input found after minutes of loading a 2.7B model, or one that surfaces as a torch IndexError, a
library's repo-id complaint or a silently misread argument, costs users far more than a check up front.
Every check here raises `UserInputError` (a ValueError; `UserInputTypeError` is also a TypeError), which
the CLI turns into exit code 2 and one line on stderr.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import re
import socket
import tempfile
import urllib.parse
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


class UserInputError(ValueError):
    """Input the user can fix; the message names the input and the fix."""


class UserInputTypeError(UserInputError, TypeError):
    """Input of the wrong type; also a TypeError, so code that catches TypeError keeps working."""


# ---- numbers --------------------------------------------------------------------------------------------
def check_integer(value: Any, name: str) -> int:
    """An int (numpy ints too), never a bool or a float such as 2.5 that torch would reject much later."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserInputTypeError(f"{name}={value!r} must be a whole number (int)")
    return int(value)


def check_finite(value: Any, name: str) -> float:
    """A real, finite number: NaN and infinity pass every `<` comparison check silently."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserInputTypeError(f"{name}={value!r} must be a number")
    if not math.isfinite(value):
        raise UserInputError(f"{name}={value!r} must be a finite number")
    return float(value)


# ---- texts ----------------------------------------------------------------------------------------------
def check_text(value: Any, name: str) -> str:
    """A non-empty string (after stripping whitespace), the same rule for questions, instructions and texts."""
    if not isinstance(value, str):
        raise UserInputTypeError(f"{name} is {type(value).__name__} ({value!r}); pass a string")
    if not value.strip():
        raise UserInputError(f"{name} is empty; pass some text, e.g. 'What is shown in the photo?'")
    return value


def check_per_image(values: Any, count: int, name: str) -> list[str]:
    """One non-empty string per image; a single string is shared by all images."""
    if isinstance(values, str):
        return [check_text(values, name)] * count
    if not isinstance(values, Sequence):
        raise UserInputTypeError(
            f"{name} is {type(values).__name__}; pass one string, or a list with one string per image"
        )
    listed = [check_text(value, f"{name}[{index}]") for index, value in enumerate(values)]
    if len(listed) != count:
        raise UserInputError(
            f"{name} has {len(listed)} entries for {count} images; give one per image or a single string"
        )
    return listed


def check_context(context: Any) -> list[tuple[str, str]]:
    """Earlier (question, answer) turns; a lone pair not wrapped in a list is refused, never read per letter."""
    if context is None:
        return []
    if isinstance(context, str) or not isinstance(context, Sequence):
        raise UserInputTypeError(
            f"context={context!r} must be a list of (question, answer) pairs, e.g. [('What is it?', 'a cat')]"
        )
    if len(context) == 2 and all(isinstance(item, str) for item in context):
        raise UserInputTypeError(
            f"context={tuple(context)!r} is one (question, answer) pair not wrapped in a list; "
            f"pass context=[{tuple(context)!r}]"
        )
    turns = []
    for index, turn in enumerate(context):
        if isinstance(turn, str) or not isinstance(turn, Sequence) or len(turn) != 2:
            raise UserInputTypeError(
                f"context[{index}]={turn!r} must be a (question, answer) pair of strings"
            )
        question = check_text(turn[0], f"context[{index}] question")
        answer = check_text(turn[1], f"context[{index}] answer")
        turns.append((question.strip(), answer.strip()))
    return turns


def check_prompt_lengths(
    lengths: Sequence[int], name: str, image_tokens: int, max_new_tokens: int, limit: int | None
) -> None:
    """Refuse prompts that, with the image tokens and the answer, exceed the language model's positions.

    Past its last learned position embedding OPT fails deep inside torch with "index out of range in self".
    The last answer token is never fed back, so image + prompt + max_new_tokens - 1 positions must fit.
    """
    if limit is None:
        return
    for index, length in enumerate(lengths):
        needed = image_tokens + length + max_new_tokens - 1
        if needed <= limit:
            continue
        fixes = []
        if (prompt_room := limit - image_tokens - max_new_tokens + 1) > 0:
            fixes.append(f"shorten it to at most {prompt_room:,} tokens")
        if (answer_room := limit - image_tokens - length + 1) > 0:
            fixes.append(f"set max_new_tokens to at most {answer_room:,}")
        raise UserInputError(
            f"{name}[{index}] is {length:,} tokens; with {image_tokens} image tokens and max_new_tokens="
            f"{max_new_tokens} it needs {needed:,} positions, but the language model has {limit:,}. "
            f"{' or '.join(fixes).capitalize() or 'Shorten it'}."
        )


def check_top_k(top_k: Any) -> int | None:
    """None (re-rank every text with ITM) or a count >= 0 (0: rank by ITC alone)."""
    if top_k is None:
        return None
    top_k = check_integer(top_k, "top_k")
    if top_k < 0:
        raise UserInputError(
            f"top_k={top_k} must be 0 or more: how many ITC leaders ITM re-ranks (0: ITC only, None: all)"
        )
    return top_k


def check_settings(settings: Any) -> Any:
    """A GenerationSettings (or None for the defaults); a dict is refused with the spelling that works."""
    from helpers.generation import GenerationSettings

    if settings is None:
        return GenerationSettings()
    if isinstance(settings, GenerationSettings):
        return settings
    if isinstance(settings, dict):
        raise UserInputTypeError(
            f"settings is a dict ({settings!r}); pass GenerationSettings(**settings) instead"
        )
    raise UserInputTypeError(
        f"settings is {type(settings).__name__}; pass a GenerationSettings, e.g. GenerationSettings(num_beams=1)"
    )


# ---- devices --------------------------------------------------------------------------------------------
SUPPORTED_DEVICES = ("auto", "cpu", "cuda", "cuda:N")
_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def check_device(requested: Any) -> torch.device | None:
    """The device for a request from SUPPORTED_DEVICES; None for `auto`. GPUs must exist."""
    if isinstance(requested, torch.device):
        requested = str(requested)
    if not isinstance(requested, str):
        raise UserInputTypeError(
            f"device={requested!r} must be a string, one of {', '.join(SUPPORTED_DEVICES)}"
        )
    if requested == "auto":
        return None
    match = _DEVICE.match(requested.strip().lower())
    if match is None:
        raise UserInputError(
            f"device={requested!r} is not supported; use one of {', '.join(SUPPORTED_DEVICES)}"
        )
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError(
                f"device={requested!r} but no CUDA GPU is visible; use device='cpu' or 'auto'"
            )
        if index is not None and int(index) >= torch.cuda.device_count():
            raise UserInputError(
                f"device={requested!r} but only {torch.cuda.device_count()} GPU(s) are visible "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
    return torch.device(kind if index is None else f"{kind}:{index}")


# ---- model sources --------------------------------------------------------------------------------------
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def check_model_source(location: str | os.PathLike, role: str = "model source") -> str:
    """A local checkpoint folder that will load, or a hub id that is cached or can be downloaded.

    A folder needs config.json and weights that open (each file's header is read, naming a truncated file);
    anything that is not a folder and not shaped like `owner/name` is a path that does not exist.
    """
    text = os.fsdecode(location)
    path = Path(text).expanduser()
    if path.exists():
        _check_checkpoint_folder(path, role)
        return text
    if isinstance(location, os.PathLike) or not _HUB_ID.match(text) or ".." in text:
        raise UserInputError(
            f"{role} {text}: no such folder (relative paths start from {Path.cwd()}). Pass a folder holding "
            "config.json and the weights, or a hub id such as Salesforce/blip2-opt-2.7b."
        )
    _check_hub_id(text, role)
    return text


def _check_checkpoint_folder(path: Path, role: str) -> None:
    if not path.is_dir():
        raise UserInputError(
            f"{role} {path}: is a file, not a checkpoint folder; pass the folder that holds config.json"
        )
    config = path / "config.json"
    if not config.is_file():
        raise UserInputError(
            f"{role} {path}: has no config.json, so it is not a saved model; pass a folder written by "
            "save_pretrained or by `python -m helpers train` (its --output-dir)"
        )
    try:
        json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserInputError(
            f"{role} {config}: unreadable config ({error}); re-save or re-download it"
        ) from None
    for weights in _weight_files(path, role):
        _check_weights(weights, role)


def _weight_files(path: Path, role: str) -> list[Path]:
    """The weight files a folder's loader would open: an index's shards, or the single file."""
    for index_name in _INDEXES:
        index = path / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError) as error:
                raise UserInputError(f"{role} {index}: unreadable index ({error}); re-download it") from None
            missing = [name for name in shards if not (path / name).is_file()]
            if missing:
                raise UserInputError(
                    f"{role} {path}: weight shard(s) {', '.join(missing)} listed in {index_name} are missing; "
                    "finish the download"
                )
            return [path / name for name in shards]
    found = [path / name for name in _WEIGHTS if (path / name).is_file()]
    if not found:
        raise UserInputError(
            f"{role} {path}: has config.json but no weights ({' or '.join(_WEIGHTS)}); finish the download "
            "or save the model again"
        )
    return found[:1]


def _check_weights(file: Path, role: str) -> None:
    """Open the header of a weights file: a truncated download fails here, by name, not deep in a loader."""
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="pt") as opened:
                opened.keys()
        except Exception as error:  # safetensors raises its own SafetensorError, OSError or ValueError
            raise UserInputError(
                f"{role} {file}: weights file cannot be opened ({error}); it is truncated or corrupt, "
                "re-download or re-save it"
            ) from None
    elif not zipfile.is_zipfile(file):
        raise UserInputError(
            f"{role} {file}: weights file is not a readable PyTorch archive (truncated or corrupt); "
            "re-download or re-save it"
        )


def _check_hub_id(repo_id: str, role: str) -> None:
    """A hub id must be in the local cache, or the hub must be reachable to download it."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return
    fix = (
        "Connect to the internet (or fill the cache), use profile 'offline', or pass a downloaded folder "
        "as the model source"
    )
    if constants.HF_HUB_OFFLINE:
        raise UserInputError(
            f"{role} {repo_id}: no such folder, and as a hub id it is not in the Hugging Face cache while "
            f"HF_HUB_OFFLINE is set. {fix}."
        )
    endpoint = urllib.parse.urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=5):
            pass
    except OSError as error:
        raise UserInputError(
            f"{role} {repo_id}: no such folder, and as a hub id it is not in the Hugging Face cache and "
            f"{endpoint.hostname} cannot be reached ({error.strerror or error}). {fix}."
        ) from None


# ---- output folders -------------------------------------------------------------------------------------
def check_output_dir(location: str | os.PathLike, name: str = "output_dir") -> Path:
    """A folder that exists or can be created, and that we can write into (tested by writing a file)."""
    folder = Path(location).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"{name} {folder}: is an existing file, not a folder; pass a new folder name")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserInputError(f"{name} {folder}: {existing} is a file, so the folder cannot be created there")
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=existing)
    except OSError as error:
        raise UserInputError(
            f"{name} {folder}: cannot write into {existing} ({error.strerror or error}); "
            "choose a folder you can write to"
        ) from None
    os.close(handle)
    with contextlib.suppress(OSError):
        os.remove(probe)
    return folder

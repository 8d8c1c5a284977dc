"""Named run profiles: which checkpoints, which precision, and why.

A notebook says `PROFILE = "auto"` and this module turns it into concrete checkpoint locations, so the
same cells run on a free Colab T4, an A100 and a laptop CPU with no network. Real profiles name real
Hugging Face hub ids; the offline profile points at the toy-world miniature the kit trains and ships
(`helpers.offline`), loaded by exactly the same classes.

$BLIP2_CHECKPOINT_DIR moves a real profile's checkpoints from the hub to local folders, one per hub id
(`$BLIP2_CHECKPOINT_DIR/Salesforce/blip2-opt-2.7b`): a machine without network, a shared model store, or the
GPU check's full-size random checkpoints. Same code, only the location changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from helpers import offline
from helpers.checkpoints import by_hf_id

PROFILE_ENV_VAR = "BLIP2_PROFILE"
CHECKPOINT_DIR_ENV_VAR = "BLIP2_CHECKPOINT_DIR"
OFFLINE = "offline"


@dataclass(frozen=True)
class Profile:
    """One way to run the kit: the generation and retrieval checkpoints and how to hold them."""

    name: str
    caption_model: str
    retrieval_model: str
    description: str
    load_in_8bit: bool = False

    def __post_init__(self) -> None:
        if not self.is_offline:  # every real checkpoint must have its LAVIS name in the one table
            by_hf_id(self.caption_model)
            by_hf_id(self.retrieval_model)

    @property
    def is_offline(self) -> bool:
        return self.name == OFFLINE

    @property
    def lavis_models(self) -> str:
        """The same checkpoints as LAVIS names them (`name` / `model_type`), from helpers.checkpoints."""
        if self.is_offline:
            return "built from the offline folders"
        return ", ".join(
            f"{c.lavis_name}/{c.lavis_model_type}"
            for c in map(by_hf_id, (self.caption_model, self.retrieval_model))
        )


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile(
            name=OFFLINE,
            caption_model=OFFLINE,
            retrieval_model=OFFLINE,
            description=offline.profile_description(),
        ),
        Profile(
            name="t4",
            caption_model="Salesforce/blip2-opt-2.7b",
            retrieval_model="Salesforce/blip2-itm-vit-g",
            description="free Colab T4 (15 GB): OPT-2.7B in fp16, ViT-g Q-Former for retrieval",
        ),
        Profile(
            name="t4-flan-t5",
            caption_model="Salesforce/blip2-flan-t5-xl",
            retrieval_model="Salesforce/blip2-itm-vit-g",
            description="Colab T4 with Flan-T5-XL in 8-bit (the T4 has no bf16 and T5 overflows in fp16)",
            load_in_8bit=True,
        ),
        Profile(
            name="a100",
            caption_model="Salesforce/blip2-opt-6.7b",
            retrieval_model="Salesforce/blip2-itm-vit-g",
            description="A100-class GPU (40 GB+): OPT-6.7B in bf16",
        ),
        Profile(
            name="a100-flan-t5",
            caption_model="Salesforce/blip2-flan-t5-xxl",
            retrieval_model="Salesforce/blip2-itm-vit-g",
            description="A100-class GPU (40 GB+): Flan-T5-XXL in bf16, the paper's strongest zero-shot VQA model",
        ),
        Profile(
            name="a100-flan-t5-xl",
            caption_model="Salesforce/blip2-flan-t5-xl",
            retrieval_model="Salesforce/blip2-itm-vit-g",
            description="A100-class GPU: Flan-T5-XL in bf16",
        ),
    )
}


@dataclass(frozen=True)
class ProfileChoice:
    """The profile a run uses and a sentence saying why, printed by every notebook."""

    profile: Profile
    reason: str

    def __str__(self) -> str:
        return f"profile {self.profile.name!r}: {self.profile.description} ({self.reason})"


def _auto_profile() -> ProfileChoice:
    if not torch.cuda.is_available():
        return ProfileChoice(PROFILES[OFFLINE], "auto: no CUDA GPU, so the offline miniature model")
    name = torch.cuda.get_device_name(0)
    total_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    if total_gib >= 38:
        return ProfileChoice(PROFILES["a100"], f"auto: {name} with {total_gib:.0f} GiB")
    return ProfileChoice(PROFILES["t4"], f"auto: {name} with {total_gib:.0f} GiB")


def choose_profile(requested: str = "auto") -> ProfileChoice:
    """Resolve a profile name; `auto` honours $BLIP2_PROFILE, then looks at the hardware."""
    if requested == "auto":
        from_env = os.environ.get(PROFILE_ENV_VAR, "").strip()
        if from_env and from_env != "auto":
            return ProfileChoice(
                _lookup(from_env, source=f"${PROFILE_ENV_VAR}"), f"set by ${PROFILE_ENV_VAR}"
            )
        return _auto_profile()
    return ProfileChoice(_lookup(requested, source="profile"), "requested")


def _lookup(name: str, source: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(["auto", *PROFILES])
        raise ValueError(f"{source}={name!r} is not a known profile; use one of: {known}") from None


def checkpoint_location(hub_id: str) -> str:
    """Where a real profile's checkpoint loads from: its hub id, or its folder under $BLIP2_CHECKPOINT_DIR.

    With the variable set every checkpoint must be there (`<dir>/<hub id>` holding a config.json): a missing
    one is an error naming the folder, never a quiet download from the hub.
    """
    root = os.environ.get(CHECKPOINT_DIR_ENV_VAR, "").strip()
    if not root:
        return hub_id
    if not Path(root).is_dir():
        raise FileNotFoundError(
            f"${CHECKPOINT_DIR_ENV_VAR}={root!r} is not a folder; point it at a folder holding one subfolder "
            f"per hub id (e.g. {root}/{hub_id}), or unset it to load from the Hugging Face hub"
        )
    folder = Path(root) / hub_id
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"${CHECKPOINT_DIR_ENV_VAR}={root!r} has no checkpoint for {hub_id}: {folder}/config.json is "
            f"missing. Put it there (`hf download {hub_id} --local-dir {folder}`), or unset "
            f"${CHECKPOINT_DIR_ENV_VAR} to load from the hub"
        )
    return str(folder)

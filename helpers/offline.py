"""The offline checkpoints: the toy-world miniature BLIP-2, trained by the kit and loaded like a hub checkpoint.

Nothing can be downloaded in CI, yet tests must run the code that loads `Salesforce/blip2-opt-2.7b`. So the
repository ships a small BLIP-2 in the hub layout (config, safetensors weights, processor, tokenizer) with
the same classes as the real ones: `Blip2ForConditionalGeneration` with an OPT language model for
generation and `Blip2ForImageTextRetrieval` for ITC/ITM. Loading goes through the very same
`from_pretrained` calls, with only the location changed.

The weights are the toy world's (`helpers.toyworld`, notebook 05): trained with BLIP-2's two-stage recipe
on scenes of coloured shapes, so offline they caption, answer and retrieve those scenes correctly. On
photos they still run the whole pipeline, but describe shapes. `make toyworld` retrains them into
data/toyworld/ of the repository; a wheel carries a copy inside the package.
"""

from __future__ import annotations

from pathlib import Path

from transformers import BlipImageProcessor

CAPTION = "caption"
RETRIEVAL = "retrieval"
CHECKOUT_WEIGHTS = Path(__file__).resolve().parent.parent / "data" / "toyworld"
"""data/toyworld/ of a repository checkout: where `make toyworld` writes and what an editable install reads."""
INSTALLED_WEIGHTS = Path(__file__).resolve().parent / "toyworld" / "weights"
"""Where a wheel puts the same files (pyproject.toml maps data/toyworld/ to this package folder)."""


def weights_dir() -> Path:
    """The folder holding the shipped toy-world checkpoints: the installed copy, else the checkout's."""
    return INSTALLED_WEIGHTS if INSTALLED_WEIGHTS.is_dir() else CHECKOUT_WEIGHTS


def checkpoint_path(kind: str) -> Path:
    """The folder of the offline `caption` or `retrieval` checkpoint."""
    if kind not in (CAPTION, RETRIEVAL):
        raise ValueError(f"kind={kind!r}: the offline checkpoints are {CAPTION!r} and {RETRIEVAL!r}")
    folder = weights_dir() / kind
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder}: the offline checkpoint is missing; install the kit from the repository "
            "(pip install git+https://github.com/blip2-kit/blip2-reproduction-kit) or run `make toyworld`"
        )
    return folder


def blip2_image_processor(size: int = 224) -> BlipImageProcessor:
    """The values of Salesforce/blip2-opt-2.7b's preprocessor: `size` px (224 there), bicubic, CLIP mean and std."""
    return BlipImageProcessor(
        size={"height": size, "width": size},
        resample=3,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
        do_convert_rgb=True,
    )

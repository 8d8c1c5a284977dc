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

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

from transformers import BlipImageProcessor

CAPTION = "caption"
RETRIEVAL = "retrieval"
CHECKOUT_WEIGHTS = Path(__file__).resolve().parent.parent / "data" / "toyworld"
"""data/toyworld/ of a repository checkout: where `make toyworld` writes and what an editable install reads."""
INSTALLED_WEIGHTS = Path(__file__).resolve().parent / "toyworld" / "weights"
"""Where a wheel puts the same files (pyproject.toml maps data/toyworld/ to this package folder)."""


def shown_path(location: str | Path) -> str:
    """A path as load messages print it: the kit's own files relative to the checkout or to site-packages.

    An installed kit's weights sit some 100 characters deep (.../lib/python3.13/site-packages/helpers/...),
    which no line of a notebook's output should spend; anything else (a hub id, a run folder) is unchanged.
    """
    path = Path(location)
    kit_folders = (
        (CHECKOUT_WEIGHTS.parent.parent, "data"),
        (INSTALLED_WEIGHTS.parent.parent.parent, "helpers"),
    )
    for root, top in kit_folders:
        if path.is_absolute() and path.is_relative_to(root / top):
            return str(path.relative_to(root))
    return str(location)


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


@dataclass(frozen=True)
class OfflineModel:
    """What the offline profile loads, read from the shipped checkpoints' configs.

    Every sentence about the offline model (the load message, notebooks 00, 04 and 06, the README) is built
    from this, so none of them goes stale when `make toyworld` changes the miniature.
    """

    folder: Path
    num_queries: int
    image_size: int
    patch_size: int
    vision_width: int
    qformer_width: int
    language_width: int
    trained: bool
    """Whether manifest.json records a finished `make toyworld` run next to the checkpoints."""

    @property
    def grid(self) -> int:
        """Patches per side: the ViT sees a grid x grid image."""
        return self.image_size // self.patch_size

    @property
    def location(self) -> str:
        """Where the weights live: data/toyworld/ in a checkout, helpers/toyworld/weights/ in an installed kit."""
        return f"{shown_path(self.folder)}/"

    def summary(self) -> str:
        """One short line for the load messages (110 columns with "stage 1 | profile 'offline': ... (requested)")."""
        state = "trained" if self.trained else "untrained (run `make toyworld`)"
        return (
            f"{state} toy-world miniature BLIP-2: {self.num_queries} queries, "
            f"{self.grid}x{self.grid} patches of {self.patch_size} px"
        )

    def explain(self) -> str:
        """What the miniature is, knows and cannot do, for notebooks 00 and 06, wrapped to 100 columns."""
        paragraphs = [
            f"The offline profile loads the kit's {self.summary()}, whose weights are in {self.location}. It is "
            f"BLIP-2 in miniature, pretrained by the kit with the paper's two-stage recipe (notebook 05) on "
            f"scenes of coloured shapes: a ViT {self.vision_width} wide that cuts a {self.image_size} px "
            f"image into {self.grid}x{self.grid} patches of {self.patch_size} px, a Q-Former "
            f"{self.qformer_width} wide with {self.num_queries} learned queries (the real model has 32 "
            f"queries, 768 wide) and an OPT-style language model {self.language_width} wide.",
            "It captions, answers questions about and retrieves scenes of its toy world correctly. A photo "
            "runs through the very same pipeline, but the model can only describe it in the words of its "
            "world: shapes, colours, counts, sizes and sides.",
        ]
        # A no-break space keeps "56 px" and "224 px" on one line.
        return "\n\n".join(
            textwrap.fill(paragraph.replace(" px", "\u00a0px"), 100) for paragraph in paragraphs
        )


def describe() -> OfflineModel:
    """The offline model as its generation checkpoint's config and the training manifest describe it."""
    caption = checkpoint_path(CAPTION)
    config = json.loads((caption / "config.json").read_text(encoding="utf-8"))
    vision = config["vision_config"]
    return OfflineModel(
        folder=caption.parent,
        num_queries=config["num_query_tokens"],
        image_size=vision["image_size"],
        patch_size=vision["patch_size"],
        vision_width=vision["hidden_size"],
        qformer_width=config["qformer_config"]["hidden_size"],
        language_width=config["text_config"]["hidden_size"],
        trained=(caption.parent / "manifest.json").is_file(),
    )


def profile_description() -> str:
    """The offline profile's line in the profile table and the load message.

    Missing weights are said here instead of raised: `helpers.profiles` builds its table at import, and
    `make toyworld`, which writes the weights, imports it too. Loading still fails with `checkpoint_path`'s
    error.
    """
    try:
        return describe().summary()
    except FileNotFoundError:
        return f"the kit's toy-world miniature, whose weights are missing from {weights_dir()}: run `make toyworld`"


FIGURE_NOTE = "offline profile: the kit's toy-world miniature, not BLIP-2's released weights"
"""Written on every figure drawn while the offline model is loaded, so a saved figure cannot be mistaken."""
_loaded = False


def mark_loaded(is_offline: bool) -> None:
    """`load_blip2` records whether the model it just loaded is the offline one; figures read it."""
    global _loaded
    _loaded = is_offline


def figure_note() -> str | None:
    """FIGURE_NOTE while the last model loaded is the offline one, else None."""
    return FIGURE_NOTE if _loaded else None


def blip2_image_processor(size: int = 224) -> BlipImageProcessor:
    """The values of Salesforce/blip2-opt-2.7b's preprocessor: `size` px (224 there), bicubic, CLIP mean and std."""
    return BlipImageProcessor(
        size={"height": size, "width": size},
        resample=3,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
        do_convert_rgb=True,
    )

"""Exact parameter counts of the released BLIP-2 variants, from their real architectures on the meta device.

The configs in `helpers/configs/` are those of the hub checkpoints (sources in `configs/SOURCES.md`); CI
cannot download them, so the kit keeps them. Building a model under `torch.device("meta")` allocates no
memory, so even the 12-billion-parameter Flan-T5-XXL variant is counted in a second on any machine.
Which parts are trainable comes from `helpers.pretraining.freeze_for_stage`, the same code that trains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import torch
from torch import nn
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2ForImageTextRetrieval,
    Blip2VisionModel,
)

from helpers.paper import ZERO_SHOT_VQA, Method
from helpers.pretraining import TRAINED_VISION_NORM, freeze_for_stage, make_itg_head

GENERATION_VARIANTS = {
    "blip2-opt-2.7b": "BLIP-2 ViT-g OPT2.7B",
    "blip2-opt-6.7b": "BLIP-2 ViT-g OPT6.7B",
    "blip2-flan-t5-xl": "BLIP-2 ViT-g FlanT5XL",
    "blip2-flan-t5-xxl": "BLIP-2 ViT-g FlanT5XXL",
}
"""Hub name (Salesforce/<name>) -> the row naming it in the paper's Table 2."""

STAGE1_VARIANT = "blip2-stage1-qformer-vit-g"
"""The stage-1 model (ViT-g + Q-Former with its text side and ITC/ITM/ITG heads), as LAVIS pretrains it."""

# Which component a parameter belongs to, by name prefix; the first match wins.
_COMPONENTS = (
    (TRAINED_VISION_NORM, "ViT output LayerNorm"),
    ("vision_model.", "image encoder (ViT-g)"),
    ("query_tokens", "learned queries"),
    ("qformer.", "Q-Former layers"),
    ("embeddings.", "Q-Former text embeddings"),
    ("vision_projection.", "ITC projections"),
    ("text_projection.", "ITC projections"),
    ("itm_head.", "ITM head"),
    ("itg_head.", "ITG head (tied decoder not counted)"),
    ("language_projection.", "projection to the LLM"),
    ("language_model.", "LLM"),
)


@dataclass(frozen=True)
class Component:
    """One part of a model: its parameter count and whether BLIP-2 trains it."""

    name: str
    parameters: int
    trainable: bool


@dataclass(frozen=True)
class VariantCount:
    """The parameter accounting of one BLIP-2 variant."""

    name: str
    components: tuple[Component, ...]

    @property
    def trainable(self) -> int:
        return sum(c.parameters for c in self.components if c.trainable)

    @property
    def frozen(self) -> int:
        return sum(c.parameters for c in self.components if not c.trainable)

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    def __getitem__(self, component: str) -> int:
        """The parameter count of a component, by name."""
        for c in self.components:
            if c.name == component:
                return c.parameters
        raise KeyError(
            f"{self.name} has no component {component!r}; it has {[c.name for c in self.components]}"
        )


def variant_names() -> list[str]:
    """Every variant whose config the kit holds."""
    return [*GENERATION_VARIANTS, STAGE1_VARIANT]


def variant_config(name: str) -> Blip2Config:
    """The Blip2Config of a released variant, from the copy kept in `helpers/configs/`."""
    if name not in variant_names():
        raise ValueError(f"variant {name!r} is unknown; the kit holds configs for {variant_names()}")
    text = resources.files("helpers").joinpath("configs", f"{name}.json").read_text(encoding="utf-8")
    return Blip2Config.from_dict(json.loads(text))


def meta_model(name: str) -> Blip2ForConditionalGeneration | Blip2ForImageTextRetrieval:
    """The variant's real architecture with weights on the meta device: shapes without memory."""
    config = variant_config(name)
    with torch.device("meta"):
        if name == STAGE1_VARIANT:
            return Blip2ForImageTextRetrieval(config)
        return Blip2ForConditionalGeneration(config)


def count_variant(name: str) -> VariantCount:
    """Count every component of a variant and mark what its pretraining stage trains.

    Shared (tied) weights are counted once. The stage-1 count includes the ITG head, which the released
    checkpoints drop; its decoder is tied to the word embeddings, so only its transform and bias add up.
    """
    model = meta_model(name)
    stage = 1 if name == STAGE1_VARIANT else 2
    freeze_for_stage(model, stage)
    named = list(model.named_parameters())
    if stage == 1:
        head = make_itg_head(model)
        named += [(f"itg_head.{n}", p) for n, p in head.named_parameters() if n != "decoder.weight"]
    return VariantCount(name, _components(name, named))


def _components(variant: str, named: list[tuple[str, nn.Parameter]]) -> tuple[Component, ...]:
    sizes: dict[str, int] = {}
    trainable: dict[str, set[bool]] = {}
    for parameter_name, parameter in named:
        component = next((label for prefix, label in _COMPONENTS if parameter_name.startswith(prefix)), None)
        if component is None:
            raise ValueError(f"{variant}: parameter {parameter_name} belongs to no known component")
        sizes[component] = sizes.get(component, 0) + parameter.numel()
        trainable.setdefault(component, set()).add(parameter.requires_grad)
    mixed = [name for name, flags in trainable.items() if len(flags) > 1]
    if mixed:
        raise ValueError(f"{variant}: components {mixed} are partly frozen; split them in _COMPONENTS")
    return tuple(Component(name, size, trainable[name].pop()) for name, size in sizes.items())


OPT_VOCABULARY = 50272
"""The vocabulary of facebook/opt-2.7b and opt-6.7b; the BLIP-2 checkpoints grew it for <image>."""

VIT_L_WIDTH = 1024
"""CLIP ViT-L/14's width: what the Q-Former's cross-attention reads in the paper's ViT-L variants."""


def vit_l_trainable(name: str) -> int:
    """Trainable parameters of a generation variant with ViT-L/14 in place of ViT-g.

    The kit holds no ViT-L checkpoint config, so this counts only what the swap changes: the Q-Former's
    cross-attention keys and values read 1024-wide features instead of 1408-wide ones, and the trained
    output LayerNorm is 1024 wide. The queries and the projection to the LLM are unchanged.
    """
    if name not in GENERATION_VARIANTS:
        raise ValueError(f"variant {name!r}: choose a generation variant, one of {list(GENERATION_VARIANTS)}")
    config = variant_config(name)
    config.qformer_config.encoder_hidden_size = VIT_L_WIDTH
    config.vision_config.hidden_size = VIT_L_WIDTH
    config.vision_config.num_hidden_layers = 1  # frozen, not counted: one layer keeps the build cheap
    config.vision_config.num_attention_heads = 16
    with torch.device("meta"):
        model = Blip2ForConditionalGeneration(config)
    freeze_for_stage(model, 2)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def paper_row(name: str, vision: str = "ViT-g") -> Method:
    """The paper's Table 2 row for a generation variant, or for its ViT-L twin with `vision="ViT-L"`."""
    label = GENERATION_VARIANTS[name].replace("ViT-g", vision)
    return next(method for method in ZERO_SHOT_VQA if method.name == label)


def parameter_table(counts: list[VariantCount]) -> str:
    """Counts of each generation variant beside the paper's Table 2, as fixed-width text."""
    header = (
        f"{'variant':<20}{'ViT':>8}{'Q-Former':>10}{'queries':>9}{'proj':>7}{'LLM':>9}"
        f"{'trainable':>11}{'total':>8} | {'paper trainable':>15}{'total':>7}"
    )
    lines = [header, "-" * len(header)]
    for count in counts:
        paper = paper_row(count.name)
        lines.append(
            f"{count.name:<20}{_short(count['image encoder (ViT-g)']):>8}"
            f"{_short(count['Q-Former layers']):>10}{count['learned queries']:>9,}"
            f"{_short(count['projection to the LLM']):>7}{_short(count['LLM']):>9}"
            f"{_short(count.trainable):>11}{_short(count.total):>8} | {paper.trainable_params:>15}"
            f"{paper.total_params:>7}"
        )
    return "\n".join(lines)


def _short(value: int) -> str:
    """Parameters the way the paper writes them: 107M, 3.7B."""
    return f"{value / 1e9:.2f}B" if value >= 1e9 else f"{value / 1e6:.1f}M"


def accounting_notes() -> list[tuple[str, int]]:
    """The parameter blocks that explain how the kit's counts differ from the paper's, each counted here.

    Returns (what, parameters) pairs: what the generation checkpoints drop of the stage-1 Q-Former, the ViT
    layer BLIP-2 removes, the vocabulary rows added for the <image> placeholder, Flan-T5's untied output
    layer. The notebook explains which of them the paper's rounding hides.
    """
    stage1, opt = count_variant(STAGE1_VARIANT), count_variant("blip2-opt-2.7b")
    dropped = stage1.trainable - (opt.trainable - opt["projection to the LLM"])
    vision = variant_config("blip2-opt-2.7b").vision_config
    vision.num_hidden_layers = 1
    with torch.device("meta"):
        layer = Blip2VisionModel(vision).encoder.layers[0]
    opt_config = variant_config("blip2-opt-2.7b").text_config
    t5_config = variant_config("blip2-flan-t5-xl").text_config
    return [
        (
            "stage-1 Q-Former parts the generation checkpoints drop (text embeddings, text FFNs, heads)",
            dropped,
        ),
        (
            "one ViT-g layer (BLIP-2 drops EVA-CLIP's last of 40 layers)",
            sum(p.numel() for p in layer.parameters()),
        ),
        (
            "OPT-2.7B vocabulary rows added for <image> and padding (50304 - 50272)",
            (opt_config.vocab_size - OPT_VOCABULARY) * opt_config.hidden_size,
        ),
        (
            "Flan-T5-XL output layer, not tied to its input embeddings",
            t5_config.vocab_size * t5_config.d_model,
        ),
    ]


def component_table(count: VariantCount) -> str:
    """One variant's components, trained or frozen, with exact counts, as fixed-width text."""
    width = max(len(c.name) for c in count.components)
    lines = [f"{count.name}", f"{'component':<{width}}  {'parameters':>15}  stage trains it"]
    for c in sorted(count.components, key=lambda c: -c.parameters):
        lines.append(f"{c.name:<{width}}  {c.parameters:>15,}  {'yes' if c.trainable else 'no (frozen)'}")
    lines.append(f"{'trainable':<{width}}  {count.trainable:>15,}")
    lines.append(f"{'frozen':<{width}}  {count.frozen:>15,}")
    lines.append(f"{'total':<{width}}  {count.total:>15,}")
    return "\n".join(lines)


def module_tree(module: nn.Module, depth: int = 2) -> str:
    """A module's submodules that hold parameters, down to `depth`: name, class and parameter count.

    A view of `print(module)` that does not change between torch releases (no layer arguments).
    """
    lines = []
    for name, child in module.named_modules():
        level = name.count(".") + 1 if name else 0
        count = sum(p.numel() for p in child.parameters())
        if level > depth or count == 0:
            continue
        label = "  " * level + (name.rsplit(".", 1)[-1] if name else "(whole layer)")
        lines.append(f"{label:<28}{type(child).__name__:<34}{count:>12,}")
    return "\n".join(lines)

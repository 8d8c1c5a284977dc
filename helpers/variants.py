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
    CLIPVisionConfig,
    CLIPVisionModel,
)

from helpers.evaluation.paper_results import ZERO_SHOT_VQA, Method
from helpers.pretraining import TRAINED_VISION_NORM, freeze_for_stage, make_itg_head

GENERATION_VARIANTS = {
    "blip2-opt-2.7b": "BLIP-2 ViT-g OPT2.7B",
    "blip2-opt-6.7b": "BLIP-2 ViT-g OPT6.7B",
    "blip2-flan-t5-xl": "BLIP-2 ViT-g FlanT5XL",
    "blip2-flan-t5-xxl": "BLIP-2 ViT-g FlanT5XXL",
}
"""Hub name (Salesforce/<name>) -> the row naming it in the paper's Table 2."""

VIT_L_VARIANTS = ("blip2-opt-2.7b", "blip2-flan-t5-xl")
"""The generation variants the paper's Table 2 also reports with CLIP's ViT-L/14 (no checkpoint released)."""

VIT_L_CONFIG = "clip-vit-large-patch14-vision"
"""CLIP ViT-L/14's vision tower (openai/clip-vit-large-patch14), kept in `helpers/configs/`."""

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
    """The parameter accounting of one BLIP-2 variant, with the image encoder it is built on."""

    name: str
    components: tuple[Component, ...]
    vision: str = "ViT-g"

    @property
    def trainable(self) -> int:
        return sum(c.parameters for c in self.components if c.trainable)

    @property
    def frozen(self) -> int:
        return sum(c.parameters for c in self.components if not c.trainable)

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    @property
    def encoder(self) -> int:
        """The frozen image encoder's parameters (ViT-g or ViT-L)."""
        return self[f"image encoder ({self.vision})"]

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


def _config_json(name: str) -> dict:
    text = resources.files("helpers").joinpath("configs", f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


def variant_config(name: str) -> Blip2Config:
    """The Blip2Config of a released variant, from the copy kept in `helpers/configs/`."""
    if name not in variant_names():
        raise ValueError(f"variant {name!r} is unknown; the kit holds configs for {variant_names()}")
    return Blip2Config.from_dict(_config_json(name))


def _untie_output_layer(model: nn.Module, name: str) -> None:
    """Give the LLM its own output layer where the released checkpoint has one (every Flan-T5).

    transformers 5's T5Config forces `tie_word_embeddings=True`, so a model built from the config shares
    `lm_head` with the input embeddings and would count it once; the released config says untied.
    """
    if _config_json(name).get("text_config", {}).get("tie_word_embeddings", True):
        return
    language_model = model.language_model
    head = language_model.get_output_embeddings()
    if head.weight is language_model.get_input_embeddings().weight:
        head.weight = nn.Parameter(torch.empty_like(head.weight), requires_grad=head.weight.requires_grad)


def meta_model(name: str) -> Blip2ForConditionalGeneration | Blip2ForImageTextRetrieval:
    """The variant's real architecture with weights on the meta device: shapes without memory."""
    config = variant_config(name)
    with torch.device("meta"):
        if name == STAGE1_VARIANT:
            return Blip2ForImageTextRetrieval(config)
        model = Blip2ForConditionalGeneration(config)
        _untie_output_layer(model, name)
        return model


def vit_l_encoder() -> CLIPVisionModel:
    """CLIP ViT-L/14 as BLIP-2 uses it, on the meta device: its last of 24 layers removed (Sec. 3.4)."""
    config = CLIPVisionConfig.from_dict(_config_json(VIT_L_CONFIG))
    config.num_hidden_layers -= 1
    with torch.device("meta"):
        return CLIPVisionModel(config)


_CLIP_UNUSED = "post_layernorm."
"""CLIP's own output LayerNorm: BLIP-2 reads the second-last layer and applies its own trained LayerNorm."""


def count_variant(name: str, vision: str = "ViT-g") -> VariantCount:
    """Count every component of a variant and mark what its pretraining stage trains.

    Shared (tied) weights are counted once; Flan-T5's untied output layer is counted. The stage-1 count
    includes the ITG head, which the released checkpoints drop; its decoder is tied to the word embeddings,
    so only its transform and bias add up. `vision="ViT-L"` counts the paper's CLIP ViT-L/14 twin of a
    generation variant (Table 2): the Q-Former's cross-attention and the trained LayerNorm read 1024-wide
    features, and the frozen encoder is CLIP's.
    """
    if vision == "ViT-L":
        return _count_vit_l(name)
    if vision != "ViT-g":
        raise ValueError(f"vision={vision!r}; the paper's image encoders are 'ViT-g' and 'ViT-L'")
    model = meta_model(name)
    stage = 1 if name == STAGE1_VARIANT else 2
    freeze_for_stage(model, stage)
    named = list(model.named_parameters())
    if stage == 1:
        head = make_itg_head(model)
        named += [(f"itg_head.{n}", p) for n, p in head.named_parameters() if n != "decoder.weight"]
    return VariantCount(name, _components(name, named))


def _count_vit_l(name: str) -> VariantCount:
    if name not in VIT_L_VARIANTS:
        raise ValueError(f"variant {name!r}: the paper reports ViT-L only for {list(VIT_L_VARIANTS)}")
    encoder = vit_l_encoder()
    config = variant_config(name)
    width = encoder.config.hidden_size
    config.qformer_config.encoder_hidden_size = width
    config.vision_config.update(
        {
            "hidden_size": width,
            "num_hidden_layers": 1,
            "num_attention_heads": encoder.config.num_attention_heads,
        }
    )
    with torch.device("meta"):
        model = Blip2ForConditionalGeneration(config)
    _untie_output_layer(model, name)
    freeze_for_stage(model, 2)
    # Everything but the ViT-g stand-in; its output LayerNorm (trained) is BLIP-2's own and stays.
    named = [
        (n, p)
        for n, p in model.named_parameters()
        if not n.startswith("vision_model.") or n.startswith(TRAINED_VISION_NORM)
    ]
    clip = sum(p.numel() for n, p in encoder.named_parameters() if _CLIP_UNUSED not in n)
    components = (*_components(name, named), Component("image encoder (ViT-L)", clip, False))
    return VariantCount(name, components, vision="ViT-L")


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


def paper_row(count: VariantCount) -> Method:
    """The paper's Table 2 row for a counted generation variant (ViT-g, or its ViT-L twin)."""
    label = GENERATION_VARIANTS[count.name].replace("ViT-g", count.vision)
    return next(method for method in ZERO_SHOT_VQA if method.name == label)


def table2_counts() -> list[VariantCount]:
    """Every Table 2 row of BLIP-2 the kit can count: the four ViT-g variants and the two ViT-L twins."""
    return [count_variant(name) for name in GENERATION_VARIANTS] + [
        count_variant(name, vision="ViT-L") for name in VIT_L_VARIANTS
    ]


def parameter_table(counts: list[VariantCount]) -> str:
    """Counts of each generation variant beside the paper's Table 2, as fixed-width text."""
    header = (
        f"{'variant':<18}{'ViT':<6}{'encoder':>8}{'Q-Former':>9}{'queries':>8}{'proj':>6}{'LLM':>8}"
        f"{'trainable':>10}{'total':>7} | {'paper trainable':>15}{'total':>7}"
    )
    lines = [header, "-" * len(header)]
    for count in counts:
        paper = paper_row(count)
        lines.append(
            f"{count.name:<18}{count.vision:<6}{_short(count.encoder):>8}"
            f"{_short(count['Q-Former layers']):>9}{count['learned queries']:>8,}"
            f"{_short(count['projection to the LLM']):>6}{_short(count['LLM']):>8}"
            f"{_short(count.trainable):>10}{_short(count.total):>7} | {paper.trainable_params:>15}"
            f"{paper.total_params:>7}"
        )
    return "\n".join(lines)


def _short(value: int) -> str:
    """Parameters the way the paper writes them: 107M, 3.7B."""
    return f"{value / 1e9:.2f}B" if value >= 1e9 else f"{value / 1e6:.1f}M"


NOMINAL_VISION = {"ViT-g": 1.0e9, "ViT-L": 0.3e9}
"""The image encoders' sizes as their names give them: EVA-CLIP's "1B" ViT-g, CLIP's "0.3B" ViT-L."""

NOMINAL_LLM = {
    "blip2-opt-2.7b": 2.7e9,
    "blip2-opt-6.7b": 6.7e9,
    "blip2-flan-t5-xl": 3.0e9,
    "blip2-flan-t5-xxl": 11.0e9,
}
"""The language models' sizes as their names give them (Flan-T5-XL is "3B", XXL "11B")."""

NOMINAL_BRIDGE = 0.1e9
"""The Q-Former side (layers, queries, LayerNorm, projection) rounded to one decimal of a billion."""


def nominal_breakdown(count: VariantCount) -> list[tuple[str, int, float]]:
    """(part, exact count, nominal size) for the three parts whose nominal sizes add up to Table 2's total."""
    vision = count.encoder
    llm = count["LLM"]
    return [
        (f"image encoder ({count.vision})", vision, NOMINAL_VISION[count.vision]),
        ("LLM", llm, NOMINAL_LLM[count.name]),
        ("Q-Former side and projection", count.total - vision - llm, NOMINAL_BRIDGE),
    ]


def totals_table(counts: list[VariantCount]) -> str:
    """Each Table 2 total rebuilt from nominal sizes beside the exact count, part by part (in billions)."""
    header = (
        f"{'variant':<18}{'ViT':<6}{'encoder':>15}{'LLM':>15}{'Q-Former side':>15}{'total':>15}{'paper':>7}"
    )
    lines = [header, f"{'(billions)':<24}" + f"{'exact/nominal':>15}" * 4]
    lines.append("-" * len(header))
    for count in counts:
        parts = nominal_breakdown(count)
        cells = [f"{exact / 1e9:.3f} / {nominal / 1e9:.1f}" for _, exact, nominal in parts]
        nominal_total = sum(nominal for _, _, nominal in parts)
        lines.append(
            f"{count.name:<18}{count.vision:<6}{cells[0]:>15}{cells[1]:>15}{cells[2]:>15}"
            f"{f'{count.total / 1e9:.3f} / {nominal_total / 1e9:.1f}':>15}{paper_row(count).total_params:>7}"
        )
    return "\n".join(lines)


def accounting_notes() -> list[tuple[str, int]]:
    """The blocks behind the gaps between exact and nominal sizes, each counted here.

    Returns (what, parameters) pairs: the ViT layers BLIP-2 removes (so its encoders are a layer short of
    their nominal models), Flan-T5's untied output layers, and the vocabulary rows the OPT checkpoints add.
    """
    vision = variant_config("blip2-opt-2.7b").vision_config
    vision.num_hidden_layers = 1
    with torch.device("meta"):
        vit_g_layer = Blip2VisionModel(vision).encoder.layers[0]
    clip_layer = vit_l_encoder().encoder.layers[0]
    opt_config = variant_config("blip2-opt-2.7b").text_config
    xl, xxl = variant_config("blip2-flan-t5-xl").text_config, variant_config("blip2-flan-t5-xxl").text_config
    return [
        (
            "one ViT-g layer (BLIP-2 drops EVA-CLIP's last of 40 layers)",
            sum(p.numel() for p in vit_g_layer.parameters()),
        ),
        (
            "one ViT-L layer (BLIP-2 drops CLIP's last of 24 layers)",
            sum(p.numel() for p in clip_layer.parameters()),
        ),
        ("Flan-T5-XL output layer, not tied to its input embeddings", xl.vocab_size * xl.d_model),
        ("Flan-T5-XXL output layer, not tied to its input embeddings", xxl.vocab_size * xxl.d_model),
        (
            "OPT-2.7B vocabulary rows added for <image> and padding (50304 - 50272)",
            (opt_config.vocab_size - OPT_VOCABULARY) * opt_config.hidden_size,
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

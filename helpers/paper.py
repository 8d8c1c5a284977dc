"""The paper's published numbers, with the table each comes from, for comparisons and the guide's functions.

Source: Li, Li, Savarese, Hoi, "BLIP-2: Bootstrapping Language-Image Pre-training with Frozen Image
Encoders and Large Language Models", ICML 2023, arXiv:2301.12597 (v3). Table 1: overview; Table 2:
zero-shot VQA; Table 3: captioning (COCO fine-tuned; NoCaps zero-shot transfer); Table 5: retrieval.
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER = "Li et al., BLIP-2, ICML 2023 (arXiv:2301.12597)"


@dataclass(frozen=True)
class PaperNumber:
    """One published result: which model, on which benchmark and metric, from which table."""

    model: str
    dataset: str
    metric: str
    value: float
    table: str


@dataclass(frozen=True)
class Method:
    """A method in the paper's zero-shot VQA comparison (Table 2): size and scores (None: not reported)."""

    name: str
    trainable_params: str
    total_params: str
    vqav2_val: float | None
    vqav2_testdev: float | None
    okvqa_test: float | None
    gqa_testdev: float | None


ZERO_SHOT_VQA = (
    Method("VL-T5 (no-vqa)", "224M", "269M", 13.5, None, 5.8, 6.3),
    Method("FewVLM", "740M", "785M", 47.7, None, 16.5, 29.3),
    Method("Frozen", "40M", "7.1B", 29.6, None, 5.9, None),
    Method("VLKD", "406M", "832M", 42.6, 44.5, 13.3, None),
    Method("Flamingo3B", "1.4B", "3.2B", None, 49.2, 41.2, None),
    Method("Flamingo9B", "1.8B", "9.3B", None, 51.8, 44.7, None),
    Method("Flamingo80B", "10.2B", "80B", None, 56.3, 50.6, None),
    Method("BLIP-2 ViT-L OPT2.7B", "104M", "3.1B", 50.1, 49.7, 30.2, 33.9),
    Method("BLIP-2 ViT-g OPT2.7B", "107M", "3.8B", 53.5, 52.3, 31.7, 34.6),
    Method("BLIP-2 ViT-g OPT6.7B", "108M", "7.8B", 54.3, 52.6, 36.4, 36.4),
    Method("BLIP-2 ViT-L FlanT5XL", "103M", "3.4B", 62.6, 62.3, 39.4, 44.4),
    Method("BLIP-2 ViT-g FlanT5XL", "107M", "4.1B", 63.1, 63.0, 40.7, 44.2),
    Method("BLIP-2 ViT-g FlanT5XXL", "108M", "12.1B", 65.2, 65.0, 45.9, 44.7),
)
"""Table 2: zero-shot VQA accuracy (%)."""


def _vqa_numbers() -> list[PaperNumber]:
    columns = (
        ("VQAv2 val", "vqav2_val"),
        ("VQAv2 test-dev", "vqav2_testdev"),
        ("OK-VQA test", "okvqa_test"),
        ("GQA test-dev", "gqa_testdev"),
    )
    return [
        PaperNumber(method.name, dataset, "accuracy", value, "Table 2")
        for method in ZERO_SHOT_VQA
        if method.name.startswith("BLIP-2")
        for dataset, attribute in columns
        if (value := getattr(method, attribute)) is not None
    ]


_CAPTIONING = (
    # model, NoCaps val overall CIDEr, SPICE, COCO Karpathy test BLEU-4, CIDEr
    ("BLIP-2 ViT-g OPT2.7B", 119.7, 15.4, 43.7, 145.8),
    ("BLIP-2 ViT-g OPT6.7B", 121.0, 15.3, 43.5, 145.2),
    ("BLIP-2 ViT-g FlanT5XL", 121.6, 15.8, 42.4, 144.5),
)

_RETRIEVAL = (
    # model, dataset, TR@1, TR@5, TR@10, IR@1, IR@5, IR@10 (models fine-tuned on COCO; Flickr30K zero-shot)
    ("BLIP-2 ViT-L", "Flickr30K 1K test", 96.9, 100.0, 100.0, 88.6, 97.6, 98.9),
    ("BLIP-2 ViT-g", "Flickr30K 1K test", 97.6, 100.0, 100.0, 89.7, 98.1, 98.9),
    ("BLIP-2 ViT-L", "COCO 5K test", 83.5, 96.0, 98.0, 66.3, 86.5, 91.8),
    ("BLIP-2 ViT-g", "COCO 5K test", 85.4, 97.0, 98.5, 68.3, 87.7, 92.6),
)

PAPER_NUMBERS: tuple[PaperNumber, ...] = (
    *_vqa_numbers(),
    *(
        number
        for model, nocaps_c, nocaps_s, bleu, cider in _CAPTIONING
        for number in (
            PaperNumber(model, "NoCaps val", "CIDEr", nocaps_c, "Table 3"),
            PaperNumber(model, "NoCaps val", "SPICE", nocaps_s, "Table 3"),
            PaperNumber(model, "COCO Karpathy test", "BLEU-4", bleu, "Table 3"),
            PaperNumber(model, "COCO Karpathy test", "CIDEr", cider, "Table 3"),
        )
    ),
    *(
        PaperNumber(model, dataset, metric, value, "Table 5")
        for model, dataset, *values in _RETRIEVAL
        for metric, value in zip(("TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10"), values, strict=True)
    ),
)
"""Every BLIP-2 number the comparison notebook checks against."""

OVERVIEW = (
    # Table 1: trainable parameters, VQAv2 test-dev, NoCaps CIDEr / SPICE, Flickr30K TR@1 / IR@1
    ("BLIP", "583M", None, "113.2 / 14.8", "96.0 / 85.0"),
    ("SimVLM", "1.4B", None, "112.2 / -", None),
    ("BEIT-3", "1.9B", None, None, "94.9 / 81.5"),
    ("Flamingo", "10.2B", 56.3, None, None),
    ("BLIP-2", "188M", 65.0, "121.6 / 15.8", "97.6 / 89.7"),
)
"""Table 1: BLIP-2 against the previous state of the art on three zero-shot tasks."""

CHECKPOINT_MODELS = {
    "Salesforce/blip2-opt-2.7b": "BLIP-2 ViT-g OPT2.7B",
    "Salesforce/blip2-opt-6.7b": "BLIP-2 ViT-g OPT6.7B",
    "Salesforce/blip2-flan-t5-xl": "BLIP-2 ViT-g FlanT5XL",
    "Salesforce/blip2-flan-t5-xxl": "BLIP-2 ViT-g FlanT5XXL",
    "Salesforce/blip2-itm-vit-g": "BLIP-2 ViT-g",
}
"""The paper's name for each hub checkpoint the profiles load."""

REFERENCE_MODELS = {"generation": "BLIP-2 ViT-g OPT2.7B", "retrieval": "BLIP-2 ViT-g"}
"""What a run is compared with when its checkpoint is not one of the paper's (the offline miniature)."""


def paper_model(checkpoint: str, kind: str) -> tuple[str, bool]:
    """The paper model to compare a checkpoint with, and whether it is that very model (not a stand-in)."""
    if checkpoint in CHECKPOINT_MODELS:
        return CHECKPOINT_MODELS[checkpoint], True
    return REFERENCE_MODELS[kind], False


def paper_number(model: str, dataset: str, metric: str) -> PaperNumber | None:
    """The published number, or None when the paper does not report this model on this benchmark."""
    for number in PAPER_NUMBERS:
        if (number.model, number.dataset, number.metric) == (model, dataset, metric):
            return number
    return None

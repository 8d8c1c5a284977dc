"""The paper's published numbers, with the table each comes from, for comparisons and the guide's functions.

Source: Li, Li, Savarese, Hoi, "BLIP-2: Bootstrapping Language-Image Pre-training with Frozen Image
Encoders and Large Language Models", ICML 2023, arXiv:2301.12597 (v3). Table 1: overview; Table 2:
zero-shot VQA; Table 3: captioning (COCO fine-tuned; NoCaps zero-shot transfer, per domain); Table 4:
fine-tuned VQAv2; Table 5: retrieval (COCO fine-tuned; Flickr30K zero-shot); Table 6: the ITG ablation of
COCO retrieval fine-tuning. Every number was checked against two independent transcriptions of v3.
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


TABLES = {
    "Table 2": "zero-shot VQA with the pretrained models",
    "Table 3": "captioning: fine-tuned on COCO with the prompt 'a photo of' (ViT trained, 364 px); NoCaps val "
    "is zero-shot transfer of those COCO-fine-tuned models",
    "Table 4": "VQA fine-tuned on VQAv2 train/val + Visual Genome (ViT and Q-Former trained, Q-Former also "
    "reads the question)",
    "Table 5": "retrieval with the stage-1 model fine-tuned on COCO (ViT trained, 364 px); Flickr30K is "
    "zero-shot transfer of that COCO-fine-tuned model",
    "Table 6": "COCO retrieval fine-tuning with and without the ITG loss (ViT-g)",
}
"""What each results table measures, and with which model: the same name means different weights per table."""

_CAPTIONING = (
    # Table 3. model; NoCaps val C/S in-domain, near-domain, out-domain, overall; COCO Karpathy test B@4, C
    ("BLIP-2 ViT-g OPT2.7B", (123.0, 15.8), (117.8, 15.4), (123.4, 15.1), (119.7, 15.4), 43.7, 145.8),
    ("BLIP-2 ViT-g OPT6.7B", (123.7, 15.8), (119.2, 15.3), (124.4, 14.8), (121.0, 15.3), 43.5, 145.2),
    ("BLIP-2 ViT-g FlanT5XL", (123.7, 16.3), (120.2, 15.9), (124.8, 15.1), (121.6, 15.8), 42.4, 144.5),
)
_NOCAPS_SPLITS = ("NoCaps val in-domain", "NoCaps val near-domain", "NoCaps val out-domain", "NoCaps val")

_FINETUNED_VQA = (
    # Table 4. model, VQAv2 test-dev, test-std (accuracy, %)
    ("BLIP-2 ViT-g FlanT5XL", 81.55, 81.66),
    ("BLIP-2 ViT-g OPT2.7B", 81.59, 81.74),
    ("BLIP-2 ViT-g OPT6.7B", 82.19, 82.30),
)

_RETRIEVAL_METRICS = ("TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10")
_RETRIEVAL = (
    # Table 5. model, dataset, TR@1, TR@5, TR@10, IR@1, IR@5, IR@10 (fine-tuned on COCO; Flickr30K zero-shot)
    ("BLIP-2 ViT-L", "Flickr30K 1K test", 96.9, 100.0, 100.0, 88.6, 97.6, 98.9),
    ("BLIP-2 ViT-g", "Flickr30K 1K test", 97.6, 100.0, 100.0, 89.7, 98.1, 98.9),
    ("BLIP-2 ViT-L", "COCO 5K test", 83.5, 96.0, 98.0, 66.3, 86.5, 91.8),
    ("BLIP-2 ViT-g", "COCO 5K test", 85.4, 97.0, 98.5, 68.3, 87.7, 92.6),
)

WITHOUT_ITG = "BLIP-2 ViT-g fine-tuned without ITG"
"""Table 6's ablated row: COCO retrieval fine-tuning with ITC + ITM only (the full row is Table 5's model)."""
_ITG_ABLATION = (
    # Table 6 (COCO 5K test). model, TR@1, TR@5, IR@1, IR@5
    (WITHOUT_ITG, 84.5, 96.2, 67.2, 87.1),
    ("BLIP-2 ViT-g", 85.4, 97.0, 68.3, 87.7),
)

PAPER_NUMBERS: tuple[PaperNumber, ...] = (
    *_vqa_numbers(),
    *(
        number
        for model, *nocaps, bleu, cider in _CAPTIONING
        for number in (
            *(
                PaperNumber(model, split, metric, value, "Table 3")
                for split, pair in zip(_NOCAPS_SPLITS, nocaps, strict=True)
                for metric, value in zip(("CIDEr", "SPICE"), pair, strict=True)
            ),
            PaperNumber(model, "COCO Karpathy test", "BLEU-4", bleu, "Table 3"),
            PaperNumber(model, "COCO Karpathy test", "CIDEr", cider, "Table 3"),
        )
    ),
    *(
        PaperNumber(model, dataset, "accuracy", value, "Table 4")
        for model, *values in _FINETUNED_VQA
        for dataset, value in zip(("VQAv2 test-dev", "VQAv2 test-std"), values, strict=True)
    ),
    *(
        PaperNumber(model, dataset, metric, value, "Table 5")
        for model, dataset, *values in _RETRIEVAL
        for metric, value in zip(_RETRIEVAL_METRICS, values, strict=True)
    ),
    *(
        PaperNumber(model, "COCO 5K test", metric, value, "Table 6")
        for model, *values in _ITG_ABLATION
        for metric, value in zip(("TR@1", "TR@5", "IR@1", "IR@5"), values, strict=True)
    ),
)
"""Every BLIP-2 number the comparison notebook checks against, in table order."""

OVERVIEW = (
    # Table 1: trainable parameters, VQAv2 test-dev, NoCaps CIDEr / SPICE, Flickr30K TR@1 / IR@1
    ("BLIP", "583M", None, "113.2 / 14.8", "96.7 / 86.7"),
    ("SimVLM", "1.4B", None, "112.2 / -", None),
    ("BEIT-3", "1.9B", None, None, "94.9 / 81.5"),
    ("Flamingo", "10.2B", 56.3, None, None),
    ("BLIP-2", "188M", 65.0, "121.6 / 15.8", "97.6 / 89.7"),
)
"""Table 1: BLIP-2 against the previous state of the art on three zero-shot tasks."""


@dataclass(frozen=True)
class PaperCheckpoint:
    """A released checkpoint as the paper names its model, and the tables whose numbers it produced."""

    model: str
    tables: frozenset[str]


CHECKPOINT_MODELS = {
    "Salesforce/blip2-opt-2.7b": PaperCheckpoint("BLIP-2 ViT-g OPT2.7B", frozenset({"Table 2"})),
    "Salesforce/blip2-opt-6.7b": PaperCheckpoint("BLIP-2 ViT-g OPT6.7B", frozenset({"Table 2"})),
    "Salesforce/blip2-flan-t5-xl": PaperCheckpoint("BLIP-2 ViT-g FlanT5XL", frozenset({"Table 2"})),
    "Salesforce/blip2-flan-t5-xxl": PaperCheckpoint("BLIP-2 ViT-g FlanT5XXL", frozenset({"Table 2"})),
    "Salesforce/blip2-opt-2.7b-coco": PaperCheckpoint("BLIP-2 ViT-g OPT2.7B", frozenset({"Table 3"})),
    "Salesforce/blip2-opt-6.7b-coco": PaperCheckpoint("BLIP-2 ViT-g OPT6.7B", frozenset({"Table 3"})),
    "Salesforce/blip2-flan-t5-xl-coco": PaperCheckpoint("BLIP-2 ViT-g FlanT5XL", frozenset({"Table 3"})),
    # The pretrained stage-1 model produced no table: Table 5 is the COCO-fine-tuned one.
    "Salesforce/blip2-itm-vit-g": PaperCheckpoint("BLIP-2 ViT-g", frozenset()),
    "Salesforce/blip2-itm-vit-g-coco": PaperCheckpoint("BLIP-2 ViT-g", frozenset({"Table 5", "Table 6"})),
}
"""The paper's name for each released checkpoint, and the tables it is the very model of.

The pretrained generation checkpoints are Table 2's models; Table 3's numbers come from the `-coco`
captioners; no released checkpoint is Table 4's (VQA fine-tuned). Anywhere else a row is a stand-in.
"""

REFERENCE_MODELS = {"generation": "BLIP-2 ViT-g OPT2.7B", "retrieval": "BLIP-2 ViT-g"}
"""What a run is compared with when its checkpoint is not one of the paper's (the offline miniature)."""


def paper_model(checkpoint: str, kind: str) -> str:
    """The paper's name for a checkpoint; for one the paper never ran, the reference model of its kind."""
    if checkpoint in CHECKPOINT_MODELS:
        return CHECKPOINT_MODELS[checkpoint].model
    return REFERENCE_MODELS[kind]


def same_model(checkpoint: str, number: PaperNumber) -> bool:
    """Whether `checkpoint` is the very model behind `number` (its name and its table both match)."""
    known = CHECKPOINT_MODELS.get(checkpoint)
    return known is not None and known.model == number.model and number.table in known.tables


def paper_number(model: str, dataset: str, metric: str, checkpoint: str | None = None) -> PaperNumber | None:
    """The published number, or None when the paper does not report this model on this benchmark.

    One name can appear in several tables with different weights (Table 2 pretrained, Table 4 VQA
    fine-tuned, both on VQAv2 test-dev): a table that `checkpoint` produced wins, else the first in order.
    """
    matches = [n for n in PAPER_NUMBERS if (n.model, n.dataset, n.metric) == (model, dataset, metric)]
    own = [n for n in matches if checkpoint is not None and same_model(checkpoint, n)]
    return (own or matches or [None])[0]

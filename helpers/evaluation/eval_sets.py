"""The evaluation sets notebook 07 evaluates: the paper's (downloaded on Colab) or the toy world's offline.

Offline, the toy world's held-out test split (helpers.toyworld) is written out in the official formats
(VQAv2 questions/annotations, COCO Karpathy split) and read back through the very loaders the real files
use, so CI runs the whole pipeline on a model that really answers. Real runs fetch the official annotation
files and only the images of the chosen subset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helpers.evaluation.datasets import (
    COCO_VAL2014_URL,
    CaptionExample,
    RetrievalSet,
    VQAExample,
    download,
    load_karpathy_captions,
    load_vqav2,
    retrieval_set,
    write_karpathy,
    write_vqav2,
)
from helpers.evaluation.vqa_scoring import normalize_answer


@dataclass
class EvalSets:
    """What one comparison run evaluates, with the paper's name for each set."""

    vqa: list[VQAExample]
    vqa_name: str
    captions: list[CaptionExample]
    captions_name: str
    retrieval: RetrievalSet
    retrieval_name: str
    paper_names: dict[str, str]


OFFLINE_SIZES = {"vqa_scenes": 4, "captions": 12, "retrieval": 20}
"""How much of the toy world's test split the offline run evaluates: seconds on a CPU, not a statistic."""


def write_toyworld_eval_set(
    root: str | Path, seed: int = 0, vqa_scenes: int = 4, captions: int = 12, retrieval: int = 20
) -> dict[str, Path]:
    """Write the toy world's held-out test split as a VQAv2-format set and Karpathy-format splits under `root`.

    Captions come from the first `captions` test scenes; VQA asks every question of the first `vqa_scenes`;
    retrieval uses `retrieval` scenes with pairwise distinct captions, so each image has one right text.
    """
    from helpers.toyworld.world import render, retrieval_set, scenes, split_questions

    root = Path(root)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    test = scenes(seed, "test", max(vqa_scenes, captions))
    retrieval_scenes = retrieval_set(seed, "test", retrieval)
    paths = {}
    for scene in [*test, *retrieval_scenes]:
        if id(scene) not in paths:
            paths[id(scene)] = images / f"{len(paths):06d}.png"
            render(scene).save(paths[id(scene)])
    # The released VQAv2 annotations hold normalised answers ("2", not "two"); the official scorer relies on it.
    vqa = [
        VQAExample(
            number, paths[id(test[position])], qa.question, tuple(normalize_answer(a) for a in qa.answers)
        )
        for number, (position, qa) in enumerate(split_questions(seed, "test", test[:vqa_scenes]))
    ]
    files = {"questions": root / "questions.json", "annotations": root / "annotations.json"}
    write_vqav2(vqa, files["questions"], files["annotations"])
    files["captions"] = root / "dataset_toyworld_captions.json"
    write_karpathy(_caption_examples(test[:captions], paths), files["captions"])
    files["retrieval"] = root / "dataset_toyworld_retrieval.json"
    write_karpathy(_caption_examples(retrieval_scenes, paths), files["retrieval"])
    files["images"] = images
    return files


def _caption_examples(scenes: list, paths: dict[int, Path]) -> list[CaptionExample]:
    return [CaptionExample(index, paths[id(scene)], (scene.caption(),)) for index, scene in enumerate(scenes)]


def offline_eval_sets(root: str | Path) -> EvalSets:
    """The toy world's test split, written in the official formats and read back through their loaders."""
    files = write_toyworld_eval_set(root, **OFFLINE_SIZES)
    return EvalSets(
        vqa=load_vqav2(files["questions"], files["annotations"], files["images"], image_name="{:06d}.png"),
        vqa_name="toy world test (VQAv2 format)",
        captions=load_karpathy_captions(files["captions"], files["images"]),
        captions_name="toy world test (Karpathy format)",
        retrieval=retrieval_set(load_karpathy_captions(files["retrieval"], files["images"])),
        retrieval_name="toy world test retrieval",
        paper_names={},
    )


def coco_eval_sets(
    root: str | Path, vqa_size: int, caption_size: int, retrieval_size: int, seed: int = 0
) -> EvalSets:
    """VQAv2 val and COCO Karpathy test subsets: annotation files downloaded, images fetched one by one."""
    root = Path(root)
    download("vqav2", root)
    download("karpathy", root)
    images = root / "val2014"
    karpathy = root / "dataset_coco.json"
    return EvalSets(
        vqa=load_vqav2(
            root / "v2_OpenEnded_mscoco_val2014_questions.json",
            root / "v2_mscoco_val2014_annotations.json",
            images,
            size=vqa_size,
            seed=seed,
            image_url=COCO_VAL2014_URL,
        ),
        vqa_name="VQAv2 val subset",
        captions=load_karpathy_captions(
            karpathy, root, size=caption_size, seed=seed, image_url=COCO_VAL2014_URL
        ),
        captions_name="COCO Karpathy test subset",
        retrieval=retrieval_set(
            load_karpathy_captions(
                karpathy, root, size=retrieval_size, seed=seed + 1, image_url=COCO_VAL2014_URL
            )
        ),
        retrieval_name="COCO Karpathy test retrieval subset",
        paper_names={
            "VQAv2 val subset": "VQAv2 val",
            "COCO Karpathy test subset": "COCO Karpathy test",
            "COCO Karpathy test retrieval subset": "COCO 5K test",
        },
    )

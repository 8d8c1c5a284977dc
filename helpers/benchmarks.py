"""The benchmark sets notebook 07 evaluates: the paper's (downloaded on Colab) or an offline stand-in.

Offline, the bundled sample photos are written out with hand-made references in the official formats
(VQAv2 questions/annotations, COCO Karpathy split) and read back through the very loaders the real files
use, so CI runs the whole pipeline. Real runs fetch the official annotation files and only the images of
the chosen subset.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from helpers.datasets import (
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
from helpers.images import sample_path

_SAMPLES = {
    # photo: (reference captions, [(question, human answers)])
    "astronaut": (
        ("an astronaut in an orange suit holding a helmet", "a woman astronaut posing in front of a flag"),
        [("what color is the suit?", ("orange",) * 10), ("is there a flag?", ("yes",) * 10)],
    ),
    "cat": (
        ("a tabby cat looking to the side", "a close up of a brown striped cat"),
        [("what animal is this?", ("cat",) * 9 + ("kitten",)), ("how many cats are there?", ("1",) * 10)],
    ),
    "coffee": (
        ("a cup of coffee on a red saucer", "an espresso with a spoon on a wooden table"),
        [
            ("what drink is this?", ("coffee",) * 7 + ("espresso",) * 3),
            ("what color is the saucer?", ("red",) * 10),
        ],
    ),
    "rocket": (
        ("a rocket on a launch pad at dusk", "a rocket standing between two towers"),
        [("what is on the launch pad?", ("rocket",) * 10), ("is it daytime?", ("no",) * 8 + ("yes",) * 2)],
    ),
    "camera": (
        ("a man with a camera on a tripod", "a black and white photo of a cameraman on a lawn"),
        [("what is the man holding?", ("camera",) * 10), ("is the photo in color?", ("no",) * 10)],
    ),
    "hubble_deep_field": (
        ("many galaxies on a black sky", "a deep field image of space full of galaxies"),
        [("what is shown?", ("galaxies",) * 6 + ("space",) * 4), ("is the background black?", ("yes",) * 10)],
    ),
}


@dataclass
class Benchmarks:
    """What one comparison run evaluates, with the paper's name for each set."""

    vqa: list[VQAExample]
    vqa_name: str
    captions: list[CaptionExample]
    captions_name: str
    retrieval: RetrievalSet
    retrieval_name: str
    paper_names: dict[str, str]


def write_sample_benchmark(root: str | Path) -> dict[str, Path]:
    """Write the sample photos as a VQAv2-format set and a Karpathy-format caption split under `root`."""
    root = Path(root)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    vqa, captions = [], []
    for index, (name, (references, questions)) in enumerate(_SAMPLES.items()):
        image = images / f"{index:06d}.jpg"
        shutil.copy(sample_path(name), image)
        captions.append(CaptionExample(index, image, references))
        vqa += [VQAExample(index * 10 + j, image, q, answers) for j, (q, answers) in enumerate(questions)]
    files = {"questions": root / "questions.json", "annotations": root / "annotations.json"}
    write_vqav2(vqa, files["questions"], files["annotations"])
    files["karpathy"] = root / "dataset_samples.json"
    write_karpathy(captions, files["karpathy"])
    files["images"] = images
    return files


def offline_benchmarks(root: str | Path) -> Benchmarks:
    """The sample-photo stand-in, read back through the official-format loaders."""
    files = write_sample_benchmark(root)
    captions = load_karpathy_captions(files["karpathy"], files["images"])
    return Benchmarks(
        vqa=load_vqav2(files["questions"], files["annotations"], files["images"], image_name="{:06d}.jpg"),
        vqa_name="sample photos (VQAv2 format)",
        captions=captions,
        captions_name="sample photos (Karpathy format)",
        retrieval=retrieval_set(captions),
        retrieval_name="sample photos retrieval",
        paper_names={},
    )


def coco_benchmarks(
    root: str | Path, vqa_size: int, caption_size: int, retrieval_size: int, seed: int = 0
) -> Benchmarks:
    """VQAv2 val and COCO Karpathy test subsets: annotation files downloaded, images fetched one by one."""
    root = Path(root)
    download("vqav2", root)
    download("karpathy", root)
    images = root / "val2014"
    karpathy = root / "dataset_coco.json"
    return Benchmarks(
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

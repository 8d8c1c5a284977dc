"""Loaders for the benchmark annotation files the paper evaluates on, in their official formats.

- VQAv2 and OK-VQA: a questions JSON ({"questions": [...]}) and an annotations JSON ({"annotations": [...]})
  with ten human answers per question; images are COCO val2014.
- GQA: the balanced test-dev questions JSON, a dict from question id to {"imageId", "question", "answer"}.
- Captions: the COCO caption JSON ({"images", "annotations"}; NoCaps val uses the same format) and
  Karpathy's split JSON ({"images": [{"split", "filepath", "filename", "sentences"}]}) for COCO and Flickr30K.

Every loader takes `size` (a seeded random subset, kept in file order) so a free Colab GPU can run a slice.
The writers produce the same formats, which is how the toy world's test split and the tests' fixtures
go through exactly the loaders the real files do.
"""

from __future__ import annotations

import json
import os
import random
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from helpers.atomic import staged_file
from helpers.environment import live_progress

T = TypeVar("T")

COCO_VAL2014_IMAGE = "COCO_val2014_{:012d}.jpg"
COCO_VAL2014_URL = "http://images.cocodataset.org/val2014/{name}"
"""Where each COCO val2014 image can be fetched on its own, so a subset needs no 6 GB zip."""
NOCAPS_VAL_URL = "https://s3.amazonaws.com/nocaps/val/{name}"

DOWNLOADS: dict[str, tuple[str, ...]] = {
    "vqav2": (
        "https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa/v2_Questions_Val_mscoco.zip",
        "https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa/v2_Annotations_Val_mscoco.zip",
    ),
    "okvqa": (
        "https://okvqa.allenai.org/static/data/OpenEnded_mscoco_val2014_questions.json.zip",
        "https://okvqa.allenai.org/static/data/mscoco_val2014_annotations.json.zip",
    ),
    "gqa": ("https://downloads.cs.stanford.edu/nlp/data/gqa/questions1.2.zip",),
    "coco_captions": ("http://images.cocodataset.org/annotations/annotations_trainval2014.zip",),
    "karpathy": ("https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip",),
    "nocaps": ("https://nocaps.s3.amazonaws.com/nocaps_val_4500_captions.json",),
}
"""The official annotation files (images are fetched per example, except GQA's and Flickr30K's: see notes)."""

DOWNLOAD_NOTES = {
    "gqa": "GQA images come only as one 20 GB zip: https://downloads.cs.stanford.edu/nlp/data/gqa/images.zip",
    "karpathy": "Flickr30K images need the request form at https://shannon.cs.illinois.edu/DenotationGraph/",
}


class AnnotationError(ValueError):
    """An annotation file is missing, malformed, or names images that are not there."""


@dataclass(frozen=True)
class VQAExample:
    """One question about one image, with the human answers (ten for VQAv2 and OK-VQA, one for GQA)."""

    question_id: int | str
    image: Path
    question: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class CaptionExample:
    """One image and its reference captions (five for COCO and Flickr30K, ten for NoCaps)."""

    image_id: int | str
    image: Path
    references: tuple[str, ...]


@dataclass(frozen=True)
class RetrievalSet:
    """A retrieval test set: every image, every caption, and which image each caption describes."""

    images: tuple[Path, ...]
    texts: tuple[str, ...]
    text_image: tuple[int, ...]

    @property
    def image_texts(self) -> list[list[int]]:
        """For each image, the indices of its captions (the positives of image-to-text retrieval)."""
        owned: list[list[int]] = [[] for _ in self.images]
        for text, image in enumerate(self.text_image):
            owned[image].append(text)
        return owned


# ---- reading -----------------------------------------------------------------------------------------


def _read_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(
            f"{what} file {path} not found; download it first (helpers.evaluation.datasets.download_commands lists the URLs)"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path} is not valid JSON ({error}); re-download or re-extract it") from error


def _field(record: dict[str, Any], key: str, path: Path, where: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise AnnotationError(f"{path}: {where} has no field {key!r}; is this the right annotation file?")
    return record[key]


def _subset(items: list[T], size: int | None, seed: int) -> list[T]:
    """A seeded random sample of `size` items, in their original order (all of them when size is None)."""
    if size is None or size >= len(items):
        return items
    if size < 1:
        raise ValueError(f"size={size}; ask for at least one example, or None for all")
    keep = sorted(random.Random(seed).sample(range(len(items)), size))
    return [items[i] for i in keep]


def download(dataset: str, root: str | os.PathLike) -> list[Path]:
    """Fetch and unzip a dataset's annotation files into `root` (network: for Colab, never for tests)."""
    if dataset not in DOWNLOADS:
        raise ValueError(f"dataset={dataset!r}; downloadable: {sorted(DOWNLOADS)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fetched = []
    for url in DOWNLOADS[dataset]:
        target = root / url.rsplit("/", 1)[1]
        if not target.exists():
            _fetch(url, target)
        if target.suffix == ".zip":
            with zipfile.ZipFile(target) as archive:
                archive.extractall(root)
                fetched += [root / name for name in archive.namelist() if not name.endswith("/")]
        else:
            fetched.append(target)
    if dataset in DOWNLOAD_NOTES:
        print(DOWNLOAD_NOTES[dataset])
    return fetched


def _fetch(url: str, target: Path) -> None:
    """Download to a temporary name beside `target`, then rename: an interrupted download leaves nothing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as file:
        while chunk := response.read(1 << 20):
            file.write(chunk)
    os.replace(partial, target)


def download_images(paths: Iterable[Path], image_url: str) -> None:
    """Fetch each missing image from `image_url.format(name=file name)` (network: Colab only)."""
    from tqdm.auto import tqdm

    missing = sorted({path for path in paths if not path.is_file()})
    for path in tqdm(missing, desc="images", disable=not missing or not live_progress()):
        _fetch(image_url.format(name=path.name), path)


def _check_images(paths: Iterable[Path], source: Path, image_url: str | None = None) -> None:
    paths = list(paths)
    if image_url is not None:
        download_images(paths, image_url)
    missing = sorted({str(path) for path in paths if not path.is_file()})
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise AnnotationError(
            f"{len(missing)} images named in {source} are missing: {shown}; download them "
            "(pass image_url=..., e.g. COCO_VAL2014_URL) or point image_dir at the folder that holds them"
        )


def load_vqav2(
    questions_file: str | os.PathLike,
    annotations_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    image_name: str = COCO_VAL2014_IMAGE,
    size: int | None = None,
    seed: int = 0,
    image_url: str | None = None,
) -> list[VQAExample]:
    """VQAv2 (or OK-VQA, same format) questions with their ten human answers; `image_name` formats image_id."""
    questions_path, annotations_path = Path(questions_file), Path(annotations_file)
    questions = _field(_read_json(questions_path, "VQA questions"), "questions", questions_path, "the file")
    annotations = _field(
        _read_json(annotations_path, "VQA annotations"), "annotations", annotations_path, "the file"
    )
    answers = {}
    for index, record in enumerate(annotations):
        where = f"annotations[{index}]"
        humans = _field(record, "answers", annotations_path, where)
        qid = _field(record, "question_id", annotations_path, where)
        answers[qid] = tuple(_field(h, "answer", annotations_path, f"{where}.answers") for h in humans)
    examples = []
    for index, record in enumerate(questions):
        where = f"questions[{index}]"
        qid = _field(record, "question_id", questions_path, where)
        if qid not in answers:
            raise AnnotationError(
                f"{questions_path}: question_id {qid} has no entry in {annotations_path}; use matching files"
            )
        image = Path(image_dir) / image_name.format(_field(record, "image_id", questions_path, where))
        examples.append(
            VQAExample(qid, image, _field(record, "question", questions_path, where), answers[qid])
        )
    chosen = _subset(examples, size, seed)
    _check_images((example.image for example in chosen), questions_path, image_url)
    return chosen


def load_gqa(
    questions_file: str | os.PathLike, image_dir: str | os.PathLike, *, size: int | None = None, seed: int = 0
) -> list[VQAExample]:
    """GQA's balanced questions (e.g. testdev_balanced_questions.json): one reference answer each."""
    path = Path(questions_file)
    records = _read_json(path, "GQA questions")
    if not isinstance(records, dict):
        raise AnnotationError(f"{path}: GQA questions are a JSON object keyed by question id")
    examples = [
        VQAExample(
            qid,
            Path(image_dir) / f"{_field(record, 'imageId', path, qid)}.jpg",
            _field(record, "question", path, qid),
            (_field(record, "answer", path, qid),),
        )
        for qid, record in records.items()
    ]
    chosen = _subset(examples, size, seed)
    _check_images((example.image for example in chosen), path)
    return chosen


def load_coco_captions(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    size: int | None = None,
    seed: int = 0,
    image_url: str | None = None,
) -> list[CaptionExample]:
    """A COCO-format caption file (captions_val2014.json, nocaps_val_4500_captions.json)."""
    path = Path(annotation_file)
    data = _read_json(path, "COCO captions")
    images = _field(data, "images", path, "the file")
    references: dict[Any, list[str]] = {_field(image, "id", path, "images[]"): [] for image in images}
    for index, record in enumerate(_field(data, "annotations", path, "the file")):
        image_id = _field(record, "image_id", path, f"annotations[{index}]")
        if image_id not in references:
            raise AnnotationError(
                f"{path}: annotations[{index}] names image_id {image_id}, which is not in images"
            )
        references[image_id].append(_field(record, "caption", path, f"annotations[{index}]"))
    examples = [
        CaptionExample(
            image["id"],
            Path(image_dir) / _field(image, "file_name", path, "images[]"),
            tuple(references[image["id"]]),
        )
        for image in images
        if references[image["id"]]
    ]
    chosen = _subset(examples, size, seed)
    _check_images((example.image for example in chosen), path, image_url)
    return chosen


def _karpathy_examples(path: Path, image_root: Path, split: str) -> list[CaptionExample]:
    images = _field(_read_json(path, "Karpathy split"), "images", path, "the file")
    examples = []
    for index, record in enumerate(images):
        where = f"images[{index}]"
        if _field(record, "split", path, where) != split:
            continue
        folder = record.get("filepath", "")
        sentences = [
            _field(s, "raw", path, f"{where}.sentences") for s in _field(record, "sentences", path, where)
        ]
        image_id = record.get("cocoid", record.get("imgid", index))
        examples.append(
            CaptionExample(
                image_id, image_root / folder / _field(record, "filename", path, where), tuple(sentences)
            )
        )
    if not examples:
        raise AnnotationError(
            f"{path} has no images in split {split!r}; Karpathy splits are train/val/test/restval"
        )
    return examples


def load_karpathy_captions(
    karpathy_file: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    split: str = "test",
    size: int | None = None,
    seed: int = 0,
    image_url: str | None = None,
) -> list[CaptionExample]:
    """Karpathy's split JSON (dataset_coco.json, dataset_flickr30k.json): the 5K COCO test images by default."""
    path = Path(karpathy_file)
    chosen = _subset(_karpathy_examples(path, Path(image_root), split), size, seed)
    _check_images((example.image for example in chosen), path, image_url)
    return chosen


def retrieval_set(examples: Sequence[CaptionExample]) -> RetrievalSet:
    """Flatten captioned images into a retrieval test set: each image's references are its positives."""
    texts = [(text, index) for index, example in enumerate(examples) for text in example.references]
    return RetrievalSet(
        images=tuple(example.image for example in examples),
        texts=tuple(text for text, _ in texts),
        text_image=tuple(index for _, index in texts),
    )


def load_karpathy_retrieval(
    karpathy_file: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    split: str = "test",
    size: int | None = None,
    seed: int = 0,
    image_url: str | None = None,
) -> RetrievalSet:
    """A retrieval test set from a Karpathy split (Flickr30K 1K test: 1000 images, 5000 captions)."""
    chosen = load_karpathy_captions(
        karpathy_file, image_root, split=split, size=size, seed=seed, image_url=image_url
    )
    return retrieval_set(chosen)


# ---- writing (toy world export, fixtures) ------------------------------------------------------------


def write_json_atomic(data: Any, path: str | os.PathLike) -> Path:
    """Write JSON to a temporary file beside `path`, then rename it into place: never half-written."""
    with staged_file(path) as temporary:
        temporary.write_text(json.dumps(data), encoding="utf-8")
    return Path(path)


def write_vqav2(
    examples: Sequence[VQAExample], questions_file: str | os.PathLike, annotations_file: str | os.PathLike
) -> None:
    """Write VQAv2-format questions and annotations; image files must be named by number (`000042.png`)."""
    bad = [str(e.image) for e in examples if not e.image.stem.isdigit()]
    if bad:
        raise ValueError(
            f"images {bad[:5]} are not named by a number; VQAv2 files refer to images by image_id"
        )
    questions = [
        {"image_id": int(e.image.stem), "question": e.question, "question_id": e.question_id}
        for e in examples
    ]
    annotations = [
        {
            "question_id": e.question_id,
            "image_id": int(e.image.stem),
            "answers": [{"answer": a, "answer_id": j + 1} for j, a in enumerate(e.answers)],
        }
        for e in examples
    ]
    write_json_atomic({"questions": questions}, questions_file)
    write_json_atomic({"annotations": annotations}, annotations_file)


def write_coco_captions(examples: Sequence[CaptionExample], annotation_file: str | os.PathLike) -> None:
    """Write a COCO-format caption file; file_name is each image's name (load it with its folder)."""
    images = [{"id": e.image_id, "file_name": e.image.name} for e in examples]
    pairs = [(e.image_id, caption) for e in examples for caption in e.references]
    annotations = [
        {"id": n, "image_id": image_id, "caption": caption} for n, (image_id, caption) in enumerate(pairs)
    ]
    write_json_atomic({"images": images, "annotations": annotations}, annotation_file)


def write_karpathy(
    examples: Sequence[CaptionExample], karpathy_file: str | os.PathLike, split: str = "test"
) -> None:
    """Write a Karpathy-format split file with every example in `split` (filepath left empty)."""
    images = [
        {
            "imgid": index,
            "filepath": "",
            "filename": e.image.name,
            "split": split,
            "sentences": [{"raw": caption, "tokens": caption.lower().split()} for caption in e.references],
        }
        for index, e in enumerate(examples)
    ]
    write_json_atomic({"dataset": "kit", "images": images}, karpathy_file)

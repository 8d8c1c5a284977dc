"""Loaders of the official annotation formats, on small fixture files built from the bundled sample photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers.evaluation.datasets import (
    AnnotationError,
    CaptionExample,
    VQAExample,
    load_coco_captions,
    load_gqa,
    load_karpathy_captions,
    load_karpathy_retrieval,
    load_vqav2,
    write_coco_captions,
    write_karpathy,
    write_vqav2,
)
from helpers.images import sample_names, sample_path


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    """Sample photos under COCO val2014 names, ids 1..N."""
    folder = tmp_path / "val2014"
    folder.mkdir()
    for image_id, name in enumerate(sample_names(), start=1):
        shutil.copy(sample_path(name), folder / f"COCO_val2014_{image_id:012d}.jpg")
    return folder


def _dump(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def _vqa_files(tmp_path: Path, count: int) -> tuple[Path, Path]:
    """VQAv2's layout, with the extra fields the real files carry."""
    questions = {
        "info": {},
        "task_type": "Open-Ended",
        "data_type": "mscoco",
        "data_subtype": "val2014",
        "questions": [
            {"image_id": i, "question": f"What is in photo {i}?", "question_id": i * 10}
            for i in range(1, count + 1)
        ],
    }
    annotations = {
        "annotations": [
            {
                "question_type": "what",
                "multiple_choice_answer": "cat",
                "answers": [
                    {"answer": "cat", "answer_confidence": "yes", "answer_id": j} for j in range(1, 11)
                ],
                "image_id": i,
                "answer_type": "other",
                "question_id": i * 10,
            }
            for i in range(1, count + 1)
        ]
    }
    return _dump(tmp_path / "questions.json", questions), _dump(tmp_path / "annotations.json", annotations)


def test_vqav2_loader_joins_questions_with_their_ten_answers(tmp_path, coco_dir):
    questions, annotations = _vqa_files(tmp_path, len(sample_names()))
    examples = load_vqav2(questions, annotations, coco_dir)
    assert len(examples) == len(sample_names())
    first = examples[0]
    assert first == VQAExample(
        10, coco_dir / "COCO_val2014_000000000001.jpg", "What is in photo 1?", ("cat",) * 10
    )


def test_subset_is_seeded_sampled_and_keeps_file_order(tmp_path, coco_dir):
    questions, annotations = _vqa_files(tmp_path, len(sample_names()))
    picked = load_vqav2(questions, annotations, coco_dir, size=3, seed=1)
    again = load_vqav2(questions, annotations, coco_dir, size=3, seed=1)
    other = load_vqav2(questions, annotations, coco_dir, size=3, seed=2)
    ids = [e.question_id for e in picked]
    assert len(ids) == 3 and ids == sorted(ids) and picked == again
    assert [e.question_id for e in other] != ids


def test_missing_images_are_all_reported(tmp_path, coco_dir):
    questions, annotations = _vqa_files(tmp_path, len(sample_names()) + 2)
    with pytest.raises(AnnotationError, match=r"2 images named in .* are missing"):
        load_vqav2(questions, annotations, coco_dir)


def test_wrong_file_names_the_missing_field(tmp_path, coco_dir):
    questions, _ = _vqa_files(tmp_path, 2)
    with pytest.raises(AnnotationError, match="no field 'annotations'"):
        load_vqav2(questions, questions, coco_dir)
    with pytest.raises(AnnotationError, match="not found; download it first"):
        load_vqav2(tmp_path / "nope.json", questions, coco_dir)


def test_gqa_loader_reads_the_question_id_keyed_format(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(sample_path(sample_names()[0]), folder / "n161313.jpg")
    data = {"201307251": {"imageId": "n161313", "question": "Is it a cat?", "answer": "yes", "types": {}}}
    (example,) = load_gqa(_dump(tmp_path / "testdev_balanced_questions.json", data), folder)
    assert example == VQAExample("201307251", folder / "n161313.jpg", "Is it a cat?", ("yes",))


def test_coco_caption_loader_groups_references_by_image(tmp_path, coco_dir):
    data = {
        "images": [{"id": 1, "file_name": "COCO_val2014_000000000001.jpg", "height": 1, "width": 1}],
        "annotations": [
            {"image_id": 1, "id": 7, "caption": "An astronaut."},
            {"image_id": 1, "id": 8, "caption": "A man in a space suit."},
        ],
    }
    (example,) = load_coco_captions(_dump(tmp_path / "captions_val2014.json", data), coco_dir)
    assert example.references == ("An astronaut.", "A man in a space suit.")
    data["annotations"].append({"image_id": 99, "id": 9, "caption": "orphan"})
    with pytest.raises(AnnotationError, match=r"annotations\[2\] names image_id 99"):
        load_coco_captions(_dump(tmp_path / "bad.json", data), coco_dir)


def _karpathy_file(tmp_path: Path, count: int) -> Path:
    images = [
        {
            "filepath": "val2014",
            "filename": f"COCO_val2014_{i:012d}.jpg",
            "imgid": i,
            "cocoid": i,
            "split": "test" if i % 2 else "train",
            "sentences": [
                {"raw": f"caption {i}.{j}", "tokens": [], "imgid": i, "sentid": j} for j in range(5)
            ],
            "sentids": list(range(5)),
        }
        for i in range(1, len(sample_names()) + 1)
    ]
    return _dump(tmp_path / "dataset_coco.json", {"images": images, "dataset": "coco"})


def test_karpathy_loader_keeps_only_the_split(tmp_path, coco_dir):
    examples = load_karpathy_captions(_karpathy_file(tmp_path, 6), tmp_path)
    assert [e.image_id for e in examples] == [i for i in range(1, len(sample_names()) + 1) if i % 2]
    assert all(len(e.references) == 5 and e.image.parent == coco_dir for e in examples)
    with pytest.raises(AnnotationError, match="no images in split 'dev'"):
        load_karpathy_captions(_karpathy_file(tmp_path, 6), tmp_path, split="dev")


def test_retrieval_set_maps_each_caption_to_its_image(tmp_path, coco_dir):
    data = load_karpathy_retrieval(_karpathy_file(tmp_path, 6), tmp_path)
    assert len(data.texts) == 5 * len(data.images)
    assert data.image_texts[1] == [5, 6, 7, 8, 9]
    assert all(
        data.texts[t].startswith(f"caption {data.images[data.text_image[t]].stem[-1]}.") for t in range(10)
    )


def test_writers_round_trip_through_the_loaders(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    images = []
    for index, name in enumerate(sample_names()[:3]):
        images.append(folder / f"{index:06d}.jpg")
        shutil.copy(sample_path(name), images[-1])
    vqa = [VQAExample(i, image, f"q{i}?", ("yes",) * 10) for i, image in enumerate(images)]
    write_vqav2(vqa, tmp_path / "q.json", tmp_path / "a.json")
    assert load_vqav2(tmp_path / "q.json", tmp_path / "a.json", folder, image_name="{:06d}.jpg") == vqa
    captions = [CaptionExample(i, image, (f"a photo {i}", f"picture {i}")) for i, image in enumerate(images)]
    write_coco_captions(captions, tmp_path / "c.json")
    assert load_coco_captions(tmp_path / "c.json", folder) == captions
    write_karpathy(captions, tmp_path / "k.json")
    assert [e.references for e in load_karpathy_captions(tmp_path / "k.json", folder)] == [
        c.references for c in captions
    ]
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temporary files behind


def test_offline_eval_sets_go_through_the_official_loaders(tmp_path):
    from helpers.evaluation.eval_sets import OFFLINE_SIZES, offline_eval_sets
    from helpers.toyworld.world import scenes

    data = offline_eval_sets(tmp_path)
    assert len(data.captions) == OFFLINE_SIZES["captions"]
    assert len(data.vqa) == 6 * OFFLINE_SIZES["vqa_scenes"]  # one question of each of six kinds per scene
    assert data.captions[0].references == (scenes(0, "test", 1)[0].caption(),)
    assert all(len(example.answers) == 10 for example in data.vqa)
    # Written as the released VQAv2 annotations are, normalised ("1", not "one"), for the official scorer.
    counts = [example.answers[0] for example in data.vqa if example.question.startswith("how many")]
    assert counts and all(answer.isdigit() for answer in counts)
    assert len(set(data.retrieval.texts)) == len(data.retrieval.texts) == OFFLINE_SIZES["retrieval"]
    assert data.retrieval.image_texts[0] == [0]
    assert json.loads((tmp_path / "questions.json").read_text())["questions"][0]["image_id"] == 0

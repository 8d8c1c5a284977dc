"""Fine-tuning's validation metric for VQA manifests: one answer per question must be scorable."""

from __future__ import annotations

from pathlib import Path

from helpers.finetune.manifests import Example, Manifest
from helpers.finetune.validation import validate
from helpers.generation import GREEDY
from helpers.images import sample_path


class _Answers:
    """Answers each question from a fixed table, as a model under validation would."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    def ask(self, images, questions, settings=None) -> list[str]:
        return [self.answers[question] for question in questions]


def _manifest(rows: list[tuple[str, str]]) -> Manifest:
    image = Path(sample_path("cat"))
    examples = [Example(image, question, answer, line) for line, (question, answer) in enumerate(rows, 1)]
    return Manifest(Path("val.tsv"), "vqa", examples)


def test_one_answer_per_question_scores_answer_accuracy() -> None:
    # The official VQA formula leaves each annotator out; with one answer nobody is left and it scores 0.
    manifest = _manifest([("what animal?", "Cat"), ("what colour?", "brown"), ("how many?", "two")])
    model = _Answers({"what animal?": "a cat", "what colour?": "grey", "how many?": "2"})
    assert validate(model, manifest, GREEDY, batch_size=2) == {"answer accuracy": 200 / 3}


def test_ten_answers_per_question_score_vqa_accuracy() -> None:
    manifest = _manifest([("what animal?", "cat")] * 3 + [("what animal?", "dog")] * 7)
    metrics = validate(_Answers({"what animal?": "cat"}), manifest, GREEDY, batch_size=4)
    assert list(metrics) == ["VQA accuracy"]
    assert 0 < metrics["VQA accuracy"] < 100

"""The paper's metrics: VQA accuracy (checked against LAVIS's official scorer when installed), caption
metrics through pycocoevalcap, and recall@K."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers.evaluation.metrics import (
    SPICE_MISSING,
    caption_metrics,
    caption_scores,
    recall_at_k,
    retrieval_ranks,
    spice_available,
)
from helpers.evaluation.vqa_scoring import (
    exact_match_accuracy,
    exact_match_scores,
    normalize_answer,
    vqa_accuracy,
    vqa_scores,
)
from helpers.prompts import lavis_caption, lavis_question

# ---- VQA -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Two", "2"),
        ("The red bus.", "red bus"),
        ("a dog", "dog"),
        ("dont know", "don't know"),
        ("yes!", "yes"),
        ("t-shirt", "t shirt"),
        ("3.5", "3.5"),
        ("1,000", "1000"),
        ("black and white ", "black and white"),
        ("  none\t", "0"),
        ("couldnt've", "couldn't've"),
    ],
)
def test_normalize_answer_follows_the_official_rules(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_vqa_accuracy_is_min_of_matches_over_three_averaged_over_leave_one_out():
    humans = ["2"] * 2 + ["3"] * 8
    # 2 agreeing humans: leaving one of them out leaves 1 match (1/3), leaving another out leaves 2 (2/3).
    expected = (2 * (1 / 3) + 8 * (2 / 3)) / 10
    assert vqa_scores(["two"], [humans]) == [pytest.approx(expected)]
    assert vqa_scores(["3"], [humans]) == [pytest.approx(1.0)]
    assert vqa_scores(["four"], [humans]) == [0.0]
    assert vqa_accuracy(["two", "3"], [humans, humans]) == pytest.approx(100 * (expected + 1) / 2)


def test_vqa_accuracy_rejects_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="one prediction per item"):
        vqa_accuracy(["yes"], [["yes"] * 10, ["no"] * 10])
    with pytest.raises(ValueError, match=r"answers\[1\]"):
        vqa_accuracy(["yes", "no"], [["yes"] * 10, []])
    with pytest.raises(ValueError, match=r"answers\[0\]"):
        vqa_accuracy(["yes"], ["yes"])  # a bare string is not a list of human answers


def test_official_scoring_leaves_unanimous_human_answers_as_typed():
    # The official scorer normalises the prediction ("two" -> "2") but not humans who all agree.
    assert vqa_scores(["2"], [["two"] * 10]) == [0.0]
    assert vqa_scores(["two"], [["two"] * 10]) == [0.0]
    assert vqa_scores(["T-shirt."], [["t-shirt"] * 10]) == [0.0]
    assert vqa_scores(["2"], [["2"] * 10]) == [1.0]


def test_official_scoring_strips_only_punctuation_from_disagreeing_humans():
    humans = ["t-shirt"] * 9 + ["no"]  # they disagree, so "t-shirt" becomes "t shirt", like the prediction
    assert vqa_scores(["T-shirt"], [humans]) == [pytest.approx(1.0)]
    # A quirk kept: a mark not beside a space becomes a space, so "yes!" turns into "yes " and never matches.
    assert vqa_scores(["yes"], [["yes!"] * 9 + ["no"]]) == [0.0]
    assert vqa_scores(["two"], [["Two"] * 9 + ["3"]]) == [0.0]  # humans keep their case and number words


def test_lenient_scoring_normalises_home_made_answers_like_predictions():
    assert vqa_scores(["2"], [["two"] * 10], scoring="lenient") == [1.0]
    assert vqa_scores(["T-shirt."], [["t-shirt"] * 10], scoring="lenient") == [1.0]
    with pytest.raises(ValueError, match="scoring='friendly'"):
        vqa_scores(["2"], [["two"] * 10], scoring="friendly")


def test_gqa_exact_match_normalises_the_prediction_only_unless_lenient():
    predictions, references = ["The table.", "Two", "left"], ["table", "two", "right"]
    assert exact_match_accuracy(predictions, references) == pytest.approx(100 / 3)
    assert exact_match_accuracy(predictions, references, scoring="lenient") == pytest.approx(200 / 3)


def _lavis_vqa_eval():
    """LAVIS's copy of the official scorer, loaded from its file so LAVIS's heavy package import is avoided."""
    spec = importlib.util.find_spec("lavis")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            "LAVIS is not installed (the lavis backend installs it); parity with its scorer not checked"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "common" / "vqa_tools" / "vqa_eval.py"
    module_spec = importlib.util.spec_from_file_location("lavis_vqa_eval", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.VQAEval


_WORDS = ["a", "the", "an", "Two", "two", "none", "dont", "dog", "red", "3", "10", "isnt", "yes", "No"]
_MARKS = ["", ".", ",", "!", "?", "-", "/", " ", "1,0", "3.5", "(", ")"]


def _random_answer(rng: random.Random) -> str:
    return "".join(rng.choice(_WORDS) + rng.choice(_MARKS) + " " for _ in range(rng.randint(1, 3))).strip()


def _spelling(rng: random.Random, answer: str) -> str:
    """One annotator's way of typing `answer`: case, an article, a trailing mark or space, a number word."""
    variants = [
        answer,
        answer.upper(),
        answer.capitalize(),
        f"the {answer}",
        f"A {answer}",
        f"{answer}.",
        f"{answer}!",
        f" {answer}",
        answer.replace("2", "two").replace("3", "three"),
        answer.replace("-", " "),
        answer.replace("'", ""),
    ]
    return rng.choice(variants)


_BASES = ["2", "3", "two", "yes", "no", "red", "t-shirt", "don't know", "1,000", "3.5", "dog", "none", "0"]


def _crafted_questions(count: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Questions a user's own annotations produce: unanimous, split, and raw spellings on both sides."""
    rng = random.Random(seed)
    predictions, answers = [], []
    for index in range(count):
        base = rng.choice(_BASES)
        kind = index % 4
        if kind == 0:  # all ten annotators typed the same string
            humans = [_spelling(rng, base)] * 10
        elif kind == 1:  # the same answer in different spellings
            humans = [_spelling(rng, base) for _ in range(10)]
        elif kind == 2:  # a split vote between two answers
            other = rng.choice(_BASES)
            humans = [rng.choice([base, other, _spelling(rng, base)]) for _ in range(10)]
        else:  # machine-generated noise
            pool = [_random_answer(rng) for _ in range(3)]
            humans = [rng.choice(pool) for _ in range(10)]
            base = rng.choice(pool)
        predictions.append(_spelling(rng, base) if rng.random() < 0.7 else rng.choice(_BASES))
        answers.append(humans)
    predictions.append("." * 40 + "yes")  # the official scorer removes at most 32 full stops
    answers.append(["yes"] * 5 + ["no"] * 5)
    return predictions, answers


def _lavis_scores(vqa_eval, predictions: list[str], answers: list[list[str]]) -> dict[int, float]:
    qa = {
        qid: {
            "answers": [{"answer": a, "answer_id": j + 1} for j, a in enumerate(humans)],
            "question_type": "what",
            "answer_type": "other",
        }
        for qid, humans in enumerate(answers)
    }
    res = {qid: {"answer": prediction} for qid, prediction in enumerate(predictions)}
    scorer = vqa_eval(SimpleNamespace(qa=qa, getQuesIds=lambda: list(qa)), SimpleNamespace(qa=res), n=2)
    with contextlib.redirect_stdout(io.StringIO()):
        scorer.evaluate()
    return scorer.evalQA, scorer.accuracy["overall"]


def test_vqa_scores_match_lavis_official_scorer_on_raw_human_answers():
    vqa_eval = _lavis_vqa_eval()
    predictions, answers = _crafted_questions(600, seed=0)
    per_question, overall = _lavis_scores(vqa_eval, predictions, answers)
    ours = vqa_scores(predictions, answers)
    assert [round(100 * s, 2) for s in ours] == [per_question[qid] for qid in range(len(ours))]
    assert round(vqa_accuracy(predictions, answers), 2) == overall
    lenient = vqa_scores(predictions, answers, scoring="lenient")
    differ = sum(a != b for a, b in zip(ours, lenient, strict=True))
    assert differ > 50, "the sample must exercise the official scorer's treatment of raw human answers"
    assert 0 < sum(ours) < len(ours)


def test_vqa_scores_match_lavis_official_scorer_on_normalised_answers():
    vqa_eval = _lavis_vqa_eval()
    rng = random.Random(0)
    official = scorer_normalise(vqa_eval)
    predictions, answers = [], []
    for _ in range(300):
        # Released annotation files hold normalised answers; there the two scorings agree.
        pool = [_random_answer(rng) for _ in range(3)]
        humans = [rng.choice(pool) for _ in range(10)] if rng.random() < 0.8 else [pool[0]] * 10
        answers.append([official(human) for human in humans])
        predictions.append(rng.choice([*pool, _random_answer(rng)]))
    per_question, _ = _lavis_scores(vqa_eval, predictions, answers)
    ours = vqa_scores(predictions, answers)
    assert [round(100 * s, 2) for s in ours] == [per_question[qid] for qid in range(len(ours))]
    assert ours == vqa_scores(predictions, answers, scoring="lenient")
    assert 0 < sum(ours) < len(ours)


def test_gqa_exact_match_matches_lavis_gqa_task():
    vqa_eval = _lavis_vqa_eval()
    tool = vqa_eval()
    predictions, answers = _crafted_questions(300, seed=1)
    references = [humans[0] for humans in answers]
    expected = [
        float(tool.processDigitArticle(tool.processPunctuation(p)) == r)
        for p, r in zip(predictions, references, strict=True)
    ]
    assert exact_match_scores(predictions, references) == expected
    assert 0 < sum(expected) < len(expected)


def scorer_normalise(vqa_eval):
    """LAVIS's normalisation of a prediction: punctuation, then digits, articles and contractions."""
    scorer = vqa_eval(SimpleNamespace(getQuesIds=list), None)
    return lambda text: scorer.processDigitArticle(scorer.processPunctuation(text.strip()))


def test_normalize_answer_matches_lavis_on_every_contraction_and_number():
    vqa_eval = _lavis_vqa_eval()
    official = scorer_normalise(vqa_eval)
    table = vqa_eval(SimpleNamespace(getQuesIds=list), None)
    words = [*table.contractions, *table.contractions.values(), *table.manualMap, "a dog.", "x,y 1,2"]
    rng = random.Random(1)
    words += [_random_answer(rng) for _ in range(500)]
    for word in words:
        assert normalize_answer(word) == official(word), word


# ---- captions --------------------------------------------------------------------------------------

needs_java = pytest.mark.skipif(
    shutil.which("java") is None, reason="pycocoevalcap's PTB tokenizer needs java"
)

REFERENCES = [
    ["a cat sits on a couch", "a cat lying on a sofa", "a grey cat on the couch"],
    ["a rocket on the launch pad", "a rocket ready for launch", "the rocket stands on its pad"],
    ["a cup of coffee on a table", "coffee in a white cup", "a mug of coffee on a wooden table"],
]


@needs_java
def test_caption_metrics_reward_matching_captions():
    good = caption_metrics(
        ["a cat on a couch", "a rocket on the launch pad", "a cup of coffee on a table"], REFERENCES
    )
    shuffled = caption_metrics(
        ["a cup of coffee on a table", "a cat on a couch", "a rocket on the pad"], REFERENCES
    )
    assert {"BLEU-4", "CIDEr"} <= set(good)
    assert good["CIDEr"] > shuffled["CIDEr"] and good["BLEU-4"] > shuffled["BLEU-4"]
    assert 0 < good["BLEU-4"] <= 100


@needs_java
def test_caption_scores_per_image_cider_averages_to_the_corpus_score():
    scores = caption_scores(["A cat, on a couch!", "", "coffee"], REFERENCES, spice=False)
    assert scores.tokenized_predictions[0] == ["a cat on a couch"]  # PTB: lower-case, punctuation dropped
    assert scores.per_image["CIDEr"][1] == 0.0  # an empty caption scores zero instead of failing
    assert sum(scores.per_image["CIDEr"]) / 3 == pytest.approx(scores.metrics["CIDEr"])
    assert scores.notes == [SPICE_MISSING]


@needs_java
def test_skipped_spice_is_said_not_hidden(capsys):
    metrics = caption_metrics(["a cat on a couch"] * 3, REFERENCES)
    if spice_available():
        assert "SPICE" in metrics
    else:
        assert "SPICE" not in metrics
        assert "SPICE not computed" in capsys.readouterr().out


def test_caption_metrics_reject_bad_references():
    with pytest.raises(ValueError, match=r"references\[1\]"):
        caption_scores(["a", "b"], [["a cat"], []])
    with pytest.raises(ValueError, match="one prediction per item"):
        caption_scores(["a"], REFERENCES)


# ---- retrieval -------------------------------------------------------------------------------------


def test_recall_at_k_counts_a_hit_when_any_positive_is_in_the_top_k():
    similarity = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.2],  # positive 0 ranked first
            [0.9, 0.8, 0.1, 0.0],  # positives {1, 2}: best at rank 1
            [0.5, 0.6, 0.7, 0.1],  # positive 3 ranked last
        ]
    )
    positives = [{0}, {1, 2}, [3]]
    assert retrieval_ranks(similarity, positives).tolist() == [0, 1, 3]
    assert recall_at_k(similarity, positives, ks=(1, 2, 4)) == {
        "R@1": pytest.approx(100 / 3),
        "R@2": pytest.approx(200 / 3),
        "R@4": pytest.approx(100.0),
    }


def test_recall_at_k_rejects_bad_positives():
    with pytest.raises(ValueError, match=r"positives\[1\]"):
        recall_at_k(torch.zeros(2, 3), [{0}, {3}])
    with pytest.raises(ValueError, match="one per query"):
        recall_at_k(torch.zeros(2, 3), [{0}])


# ---- LAVIS's text processors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "question", "caption"),
    [
        ("What is THIS?", "what is this?", "what is this?"),
        ('A "dog" (brown); on: the mat!', "a dog brown on the mat", "a dog brown on the mat"),
        ("two  spaces\n", "two  spaces\n", "two spaces"),
        ("it's a t-shirt, isn't it?", "it's a t-shirt, isn't it?", "it's a t-shirt, isn't it?"),
        ("end.  ", "end", "end"),
    ],
)
def test_lavis_processors_clean_questions_and_captions(raw, question, caption):
    assert lavis_question(raw) == question
    assert lavis_caption(raw) == caption
    assert lavis_question("a b c d", max_words=2) == "a b"
    assert lavis_caption("a  b.c d", max_words=3) == "a b c"


def _lavis_text_processors():
    if importlib.util.find_spec("lavis") is None:
        pytest.skip("LAVIS is not installed (the lavis backend installs it); processor parity not checked")
    from helpers.backends import lavis_compat

    lavis_compat.apply()
    from lavis.processors.blip_processors import BlipCaptionProcessor, BlipQuestionProcessor

    return BlipQuestionProcessor, BlipCaptionProcessor


def test_lavis_processors_match_the_installed_lavis_on_generated_strings():
    question_class, caption_class = _lavis_text_processors()
    rng = random.Random(0)
    pool = [*"aAbZ .!\"()*#:;~?,'\t\n", "  ", "Dog", "É", "\u00a0", "\r\n", "word"]
    for max_words in (50, 3):
        question, caption = question_class(max_words=max_words), caption_class(max_words=max_words)
        for _ in range(1500):
            text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 80)))
            assert lavis_question(text, max_words) == question(text), repr(text)
            assert lavis_caption(text, max_words) == caption.pre_caption(text), repr(text)


def test_questions_and_retrieval_texts_reach_the_model_cleaned(offline_model):
    from helpers.toyworld.samples import toy_samples

    sample = toy_samples(1)[0]
    question = sample.questions[0].question
    shouted = question.upper().rstrip("?") + "?!"
    assert offline_model.ask(sample.image, shouted) == offline_model.ask(sample.image, question)
    messy = f'  "{sample.caption.upper()}."  '
    same = offline_model.itc_scores(sample.image, [messy, sample.caption])[0]
    assert same[0].item() == pytest.approx(same[1].item())

"""`python -m helpers` run as a user would: in a subprocess, offline profile, checking stdout and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import GREEDY, GenerationSettings, load_blip2, sample_path
from helpers.cli import main

NAMES = ("cat", "rocket", "coffee", "astronaut")


def _run(
    *args: str, cwd: Path | None = None, launcher: list[str] | None = None
) -> subprocess.CompletedProcess:
    env = os.environ | {"BLIP2_PROFILE": "offline"}
    command = (launcher or [sys.executable, "-m"]) + ["helpers", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    for name in NAMES:
        shutil.copy(sample_path(name), tmp_path / "images" / f"{name}.jpg")
    (tmp_path / "train.tsv").write_text("".join(f"images/{n}.jpg\ta photo of a {n}\n" for n in NAMES))
    return tmp_path


def test_caption_prints_one_json_record_per_image_and_progress_only_on_stderr(offline_model) -> None:
    images = [str(sample_path("cat")), str(sample_path("rocket"))]
    done = _run("caption", *images, "--num-beams", "1", "--max-new-tokens", "5", "--json")
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)  # nothing but the JSON on stdout
    assert [record["image"] for record in records] == images
    expected = offline_model.caption(images, GenerationSettings(num_beams=1, max_new_tokens=5))
    assert [record["caption"] for record in records] == expected
    assert "profile 'offline'" in done.stderr


def test_vqa_and_retrieval_text_output() -> None:
    cat = str(sample_path("cat"))
    answered = _run("vqa", cat, "What animal is this?", "--num-beams", "1", "--max-new-tokens", "4")
    assert answered.returncode == 0, answered.stderr
    image, question, answer = answered.stdout.rstrip("\n").split("\t")
    assert (image, question) == (cat, "What animal is this?") and answer
    ranked = _run("retrieval", cat, "a cat", "a rocket", "a cup", "--top-k", "2", "--json")
    assert ranked.returncode == 0, ranked.stderr
    records = json.loads(ranked.stdout)
    assert sorted(record["text"] for record in records) == ["a cat", "a cup", "a rocket"]
    assert [record["itm"] is not None for record in records] == [True, True, False]


def test_bad_input_exits_2_with_a_one_line_reason_and_no_traceback(tmp_path: Path) -> None:
    missing = _run("caption", str(tmp_path / "nothing.jpg"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ") and "nothing.jpg" in missing.stderr
    assert "Traceback" not in missing.stderr and missing.stdout == ""


def test_unknown_profile_and_missing_options_are_usage_errors(capsys) -> None:
    assert main(["caption", str(sample_path("cat")), "--profile", "tpu-pod"]) == 2
    assert "not a known profile" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # argparse: --task and --output-dir are required
        main(["train", "x.tsv"])
    assert usage.value.code == 2 and "required" in capsys.readouterr().err


def test_check_manifest_lists_every_bad_line(dataset: Path, capsys) -> None:
    manifest = dataset / "bad.tsv"
    manifest.write_text("images/cat.jpg\ta cat\nimages/none.jpg\ta ghost\nimages/cat.jpg\n")
    assert main(["check-manifest", str(manifest), "--task", "caption"]) == 2
    err = capsys.readouterr().err
    assert f"{manifest}:2: image not found" in err and f"{manifest}:3: 1 column(s)" in err
    assert main(["check-manifest", str(dataset / "train.tsv"), "--task", "caption", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == len(NAMES)


def test_train_then_caption_with_the_fine_tuned_model(dataset: Path) -> None:
    out = dataset / "run"
    trained = _run(
        "train", "train.tsv", "--task", "caption", "--output-dir", str(out), "--epochs", "1",
        "--batch-size", "2", "--learning-rate", "1e-3", "--warmup-steps", "1", "--json", cwd=dataset,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert summary["steps"] == 2 and summary["first_loss"] > 0
    assert "fine-tuning (caption)" not in trained.stdout  # progress never mixes with the JSON
    captioned = _run(
        "caption", str(sample_path("cat")), "--model-source", str(out), "--num-beams", "1", "--json"
    )
    assert captioned.returncode == 0, captioned.stderr
    reloaded = load_blip2("offline", model_id=str(out), verbose=False)
    assert json.loads(captioned.stdout)[0]["caption"] == reloaded.caption(sample_path("cat"), GREEDY)[0]


def test_two_process_cpu_run_with_accelerate_launch(dataset: Path) -> None:
    out = dataset / "ddp"
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    launch = [*accelerate, "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m"]
    done = _run(
        "train", "train.tsv", "--task", "caption", "--output-dir", str(out), "--epochs", "1",
        "--batch-size", "1", "--warmup-steps", "1", "--device", "cpu", "--json", cwd=dataset, launcher=launch,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # only the main process prints
    assert summary["steps"] == 2  # 4 examples, 1 per process per step, 2 processes
    checkpoint = next((out / "checkpoints").iterdir())
    assert sorted(p.name for p in checkpoint.glob("random_states_*.pkl")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in logged] == [1, 2]  # written once, by the main process
    reloaded = load_blip2("offline", model_id=str(out), verbose=False)
    assert reloaded.caption(sample_path("cat"), GREEDY)

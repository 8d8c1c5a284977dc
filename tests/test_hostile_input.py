"""Issue 16: bad input from a hostile user never hangs, is never silently misread, and never ends in a
traceback: each case gets one clear error (the CLI exits 2), checked before any model loads where it can be."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from helpers import (
    GREEDY,
    GenerationSettings,
    ImageLoadError,
    cli,
    load_blip2,
    load_image,
    offline,
    sample_path,
    vqa_prompt,
)
from helpers.cli import main
from helpers.finetune import TrainingConfig, check_manifest, train
from helpers.finetune.data import EpochShuffle
from helpers.loading import BACKENDS
from helpers.precision import choose_device

NAMES = ("cat", "rocket", "coffee", "astronaut", "camera")
OFFLINE_POSITIONS = 128  # the offline OPT's max_position_embeddings


@pytest.fixture(params=BACKENDS)
def model(request, offline_model, lavis_model):
    return offline_model if request.param == "hf" else lavis_model


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    for name in NAMES:
        shutil.copy(sample_path(name), tmp_path / "images" / f"{name}.jpg")
    for task, line in {"caption": "{n}\ta photo of a {n}", "retrieval": "{n}\ta {n}"}.items():
        lines = [line.format(n=f"images/{n}.jpg") for n in NAMES[:4]]
        (tmp_path / f"{task}.tsv").write_text("\n".join(lines) + "\n")
    (tmp_path / "retrieval5.tsv").write_text("".join(f"images/{n}.jpg\ta {n}\n" for n in NAMES))
    return tmp_path


def _config(dataset: Path, task: str = "caption", **overrides) -> TrainingConfig:
    settings = {
        "task": task,
        "train_manifest": dataset / f"{task}.tsv",
        "output_dir": dataset / "out",
        "epochs": 1,
        "batch_size": 2,
        "learning_rate": 1e-3,
        "warmup_steps": 1,
        "checkpoint_every": None,
    }
    return TrainingConfig(**(settings | overrides))


def _one_error_line(capsys) -> str:
    """The CLI's stderr for a user error: exactly one line, no traceback; nothing on stdout."""
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, captured.err
    return lines[0]


# ---- defect 1: a URL that drip-feeds its headers -----------------------------------------------------------
@pytest.fixture
def drip_url() -> Iterator[str]:
    """A server that sends its status line and headers one byte every 0.2 s, for at most 8 s, then hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(8)
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection:
            headers = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Slow: " + b"a" * 1000
            for byte in headers:
                if stop.wait(0.2):
                    break
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/slow.jpg"
    stop.set()
    listener.close()
    thread.join(10)


def test_a_url_that_drip_feeds_its_headers_hits_the_whole_download_deadline(drip_url: str) -> None:
    with pytest.raises(ImageLoadError, match=r"download failed \(download took longer than 1\.0 s\)") as info:
        load_image(drip_url, timeout=1.0)
    assert drip_url in str(info.value)


# ---- defect 2: context turns -------------------------------------------------------------------------------
def test_a_context_pair_not_wrapped_in_a_list_is_refused_not_read_letter_by_letter(model) -> None:
    with pytest.raises(ValueError, match=r"not wrapped in a list; pass context=\[\('hi', 'no'\)\]"):
        vqa_prompt("what colour?", ("hi", "no"))
    with pytest.raises(ValueError, match="not wrapped in a list"):
        model.ask(sample_path("cat"), "what colour?", context=("hi", "no"), settings=GREEDY)
    with pytest.raises(TypeError, match=r"context\[0\] answer is NoneType"):
        model.ask(sample_path("cat"), "what colour?", context=[("q", None)], settings=GREEDY)
    with pytest.raises(TypeError, match=r"context\[0\]=None must be a \(question, answer\) pair"):
        model.ask(sample_path("cat"), "what colour?", context=[None], settings=GREEDY)
    assert (
        vqa_prompt("what colour?", [("hi", "no")])
        == "Question: hi Answer: no. Question: what colour? Answer:"
    )


# ---- defect 3: --no-resume, epochs, resolved paths, --json -----------------------------------------------
def test_no_resume_deletes_the_old_checkpoints_so_a_later_run_never_restores_them(dataset: Path) -> None:
    three_epochs = train(load_blip2("offline", verbose=False), _config(dataset, checkpoint_every=1, epochs=3))
    assert three_epochs.steps == 6
    fresh = train(load_blip2("offline", verbose=False), _config(dataset, checkpoint_every=1, resume=False))
    assert fresh.steps == 2
    one_epoch = load_file(dataset / "out" / "model.safetensors")
    again = train(load_blip2("offline", verbose=False), _config(dataset, checkpoint_every=1))
    assert again.steps == 2  # resumed from the 1-epoch run's end, not the 3-epoch run's step 6
    final = load_file(dataset / "out" / "model.safetensors")
    assert all(torch.equal(one_epoch[key], final[key]) for key in final)


def test_resume_compares_epochs_and_resolves_manifest_paths(dataset: Path, monkeypatch) -> None:
    train(load_blip2("offline", verbose=False), _config(dataset, checkpoint_every=1))
    with pytest.raises(ValueError, match=r"epochs: 1 -> 2.*--no-resume"):
        train(load_blip2("offline", verbose=False), _config(dataset, checkpoint_every=1, epochs=2))
    monkeypatch.chdir(dataset)  # the same manifest, typed as a relative path
    resumed = train(
        load_blip2("offline", verbose=False),
        _config(dataset, checkpoint_every=1, train_manifest=Path("caption.tsv"), output_dir=Path("out")),
    )
    assert resumed.steps == 2


def test_cli_json_stays_valid_when_resuming_and_no_resume_says_what_it_deletes(dataset: Path, capsys) -> None:
    args = ["train", str(dataset / "caption.tsv"), "--task", "caption", "--output-dir", str(dataset / "out")]
    args += ["--epochs", "1", "--batch-size", "2", "--warmup-steps", "1", "--profile", "offline", "--json"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0  # resumes from the final checkpoint
    captured = capsys.readouterr()
    assert json.loads(captured.out)["steps"] == 2
    assert "resumed from" in captured.err
    assert main([*args, "--no-resume"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["steps"] == 2
    assert "--no-resume: deleted" in captured.err and "checkpoints" in captured.err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "DELETES" in " ".join(capsys.readouterr().out.split())


# ---- defect 4: retrieval's last batch of one ---------------------------------------------------------------
def test_merged_batches_never_leave_a_last_batch_of_one() -> None:
    from helpers.finetune.data import MergedBatches

    batches = list(MergedBatches(EpochShuffle(5, seed=0), batch_size=2, smallest=2))
    assert [len(batch) for batch in batches] == [2, 3] and sorted(i for batch in batches for i in batch) == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert len(MergedBatches(EpochShuffle(5, seed=0), 2, smallest=2)) == 2
    assert [len(b) for b in MergedBatches(EpochShuffle(5, seed=0), 2, smallest=1)] == [2, 2, 1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_retrieval_training_merges_a_last_batch_of_one(dataset: Path, backend: str, capsys) -> None:
    config = _config(dataset, "retrieval", train_manifest=dataset / "retrieval5.tsv")
    result = train(load_blip2("offline", backend=backend, verbose=False), config)
    assert result.steps == 2 and all(math.isfinite(loss) for loss in result.losses)
    assert "merged into the batch before it" in capsys.readouterr().err


# ---- prompts against the language model's positions -------------------------------------------------------
def test_a_question_too_long_for_the_language_model_names_the_limit(model) -> None:
    with pytest.raises(ValueError, match=f"the language model has {OFFLINE_POSITIONS}") as info:
        model.ask(sample_path("cat"), "why " * 2500, settings=GREEDY)
    assert "questions[0]" in str(info.value) and "Shorten it to at most 91 tokens" in str(info.value)
    with pytest.raises(ValueError, match="Set max_new_tokens to at most 120"):
        model.caption(sample_path("cat"), GenerationSettings(num_beams=1, max_new_tokens=OFFLINE_POSITIONS))
    at_the_limit = GenerationSettings(num_beams=1, max_new_tokens=120, min_new_tokens=120)
    assert model.caption(sample_path("cat"), at_the_limit)  # 8 + 1 + 120 - 1 = 128 positions: runs


def test_cli_question_too_long_exits_2(capsys) -> None:
    question = "why " * 2500
    assert main(["vqa", str(sample_path("cat")), question, "--profile", "offline", "--num-beams", "1"]) == 2
    assert f"the language model has {OFFLINE_POSITIONS}" in _one_error_line(capsys)


# ---- questions, instructions, top_k, settings -------------------------------------------------------------
def test_questions_instructions_and_top_k_are_checked(offline_model) -> None:
    cat = sample_path("cat")
    with pytest.raises(TypeError, match="questions is NoneType"):
        offline_model.ask(cat, None)
    with pytest.raises(TypeError, match=r"questions\[0\] is NoneType"):
        offline_model.ask(cat, [None])
    with pytest.raises(ValueError, match="instruction is empty"):
        offline_model.instruct(cat, "   ")
    with pytest.raises(ValueError, match="top_k=-1 must be 0 or more"):
        offline_model.rank_texts(cat, ["a cat", "a dog"], top_k=-1)
    ranked = offline_model.rank_texts(cat, ["a cat", "a dog"], top_k=0)
    assert [item.itm for item in ranked] == [None, None]  # 0: ITC alone, as documented


def test_cli_negative_top_k_exits_2_before_loading(capsys, monkeypatch) -> None:
    monkeypatch.setattr(cli, "load_blip2", _must_not_load)
    assert main(["retrieval", str(sample_path("cat")), "a cat", "--top-k", "-1", "--profile", "offline"]) == 2
    assert "top_k=-1 must be 0 or more" in _one_error_line(capsys)


def test_settings_must_be_generation_settings_with_whole_and_finite_numbers(offline_model) -> None:
    with pytest.raises(TypeError, match=r"pass GenerationSettings\(\*\*settings\)"):
        offline_model.caption(sample_path("cat"), {"num_beams": 1})
    with pytest.raises(TypeError, match=r"num_beams=2\.5 must be a whole number"):
        GenerationSettings(num_beams=2.5)
    with pytest.raises(ValueError, match="temperature=nan must be a finite number"):
        GenerationSettings(temperature=float("nan"))


# ---- devices and model sources ----------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["tpu", "mps", "cuda:x"])
def test_unsupported_devices_list_the_supported_ones(device: str) -> None:
    with pytest.raises(ValueError, match=r"use one of auto, cpu, cuda, cuda:N"):
        choose_device(device)


def test_cli_unsupported_device_exits_2(capsys) -> None:
    assert main(["caption", str(sample_path("cat")), "--device", "tpu", "--profile", "offline"]) == 2
    assert "device='tpu' is not supported" in _one_error_line(capsys)


def _broken_sources(root: Path) -> dict[str, tuple[Path, str]]:
    """A missing folder, an empty folder, a file, and a folder with a truncated safetensors file."""
    (root / "empty").mkdir()
    (root / "a-file").write_text("not a model")
    truncated = root / "truncated"
    truncated.mkdir()
    weights = offline.checkpoint_path(offline.CAPTION)
    shutil.copy(weights / "config.json", truncated / "config.json")
    (truncated / "model.safetensors").write_bytes((weights / "model.safetensors").read_bytes()[:50_000])
    return {
        "missing": (root / "no" / "such" / "run", "no such folder"),
        "empty": (root / "empty", "has no config.json"),
        "file": (root / "a-file", "is a file, not a checkpoint folder"),
        "truncated": (truncated, f"{truncated / 'model.safetensors'}: weights file cannot be opened"),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_model_sources_are_refused_by_name_before_loading(tmp_path: Path, backend: str) -> None:
    for source, expected in _broken_sources(tmp_path).values():
        with pytest.raises(ValueError, match="model_id ") as info:
            load_blip2("offline", backend=backend, model_id=str(source), verbose=False)
        assert expected in str(info.value)


def test_cli_bad_model_sources_exit_2(tmp_path: Path, capsys) -> None:
    for source, expected in _broken_sources(tmp_path).values():
        args = ["caption", str(sample_path("cat")), "--model-source", str(source), "--profile", "offline"]
        assert main(args) == 2
        line = _one_error_line(capsys)
        assert expected in line and "--model-source" in line


def test_a_real_profile_without_network_is_a_clear_error(tmp_path: Path, capsys, monkeypatch) -> None:
    from huggingface_hub import constants

    with socket.socket() as closed:  # a port nothing listens on: the hub "cannot be reached"
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("BLIP2_CHECKPOINT_DIR", raising=False)
    monkeypatch.setattr("helpers.loading.check_fits", _must_not_load)  # the first step that needs the hub
    assert main(["caption", str(sample_path("cat")), "--profile", "t4"]) == 2
    error = _one_error_line(capsys)
    assert "Salesforce/blip2-opt-2.7b" in error and "cannot be reached" in error


def test_a_hub_id_that_is_cached_needs_no_network(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    from helpers.user_input import check_model_source

    snapshot = tmp_path / "models--owner--model" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--owner--model" / "refs").mkdir()
    (tmp_path / "models--owner--model" / "refs" / "main").write_text("abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    assert check_model_source("owner/model") == "owner/model"
    with pytest.raises(ValueError, match="cannot be reached"):
        check_model_source("owner/other")


# ---- file:// and ftp:// URLs ---------------------------------------------------------------------------------
def test_file_urls_load_and_other_schemes_are_refused_not_mangled() -> None:
    cat = sample_path("cat")
    assert load_image(cat.as_uri()).tobytes() == load_image(cat).tobytes()
    with pytest.raises(
        ImageLoadError, match=r"ftp:// URLs are not supported \(only http://, https:// and file://\)"
    ):
        load_image("ftp://example.com/cat.jpg")
    with pytest.raises(ImageLoadError, match="on another host"):
        load_image("file://server/share/cat.jpg")


def test_cli_ftp_url_exits_2_naming_the_scheme(capsys) -> None:
    assert main(["caption", "ftp://example.com/cat.jpg", "--profile", "offline"]) == 2
    assert "ftp:// URLs are not supported" in _one_error_line(capsys)


# ---- output folders -------------------------------------------------------------------------------------------
def _read_only_dir() -> Path:
    """A folder this process cannot write into, even as root (a read-only /sys), or skip."""
    for folder in (Path("/sys"), Path("/proc/1")):
        try:
            handle, probe = tempfile.mkstemp(dir=folder)
        except OSError:
            return folder
        os.close(handle)
        os.remove(probe)
    pytest.skip("no read-only folder on this machine")


def test_an_output_dir_that_is_a_file_or_read_only_is_refused_before_loading(
    dataset: Path, capsys, monkeypatch
) -> None:
    from helpers.user_input import check_output_dir

    taken = dataset / "taken"
    taken.write_text("a file")
    with pytest.raises(ValueError, match="is an existing file, not a folder"):
        check_output_dir(taken)
    with pytest.raises(ValueError, match="cannot write into"):
        check_output_dir(_read_only_dir() / "run")
    monkeypatch.setattr(cli, "load_blip2", _must_not_load)
    for out, expected in ((taken, "is an existing file"), (_read_only_dir() / "run", "cannot write into")):
        args = ["train", str(dataset / "caption.tsv"), "--task", "caption", "--output-dir", str(out)]
        assert main([*args, "--profile", "offline"]) == 2
        assert expected in _one_error_line(capsys)


# ---- manifests ----------------------------------------------------------------------------------------------
def _must_not_load(*args, **kwargs):
    raise AssertionError("the model was loaded before the input was checked")


def test_check_manifest_refuses_what_training_would_refuse_max_pixels(dataset: Path, capsys) -> None:
    Image.new("1", (10_000, 10_000)).save(dataset / "images" / "huge.png")  # 100 megapixels, a small file
    manifest = dataset / "huge.tsv"
    manifest.write_text("images/cat.jpg\ta cat\nimages/huge.png\ta huge picture\n")
    examples, problems = check_manifest(manifest, "caption")
    assert len(examples) == 1 and [problem.line for problem in problems] == [2]
    assert "exceeds max_pixels=64,000,000" in problems[0].reason
    assert main(["check-manifest", str(manifest), "--task", "caption"]) == 2
    assert "exceeds max_pixels" in capsys.readouterr().err


def test_train_checks_manifests_before_loading_the_model(dataset: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(cli, "load_blip2", _must_not_load)
    (dataset / "bad.tsv").write_text("images/none.jpg\ta ghost\n")
    args = ["train", str(dataset / "bad.tsv"), "--task", "caption", "--output-dir", str(dataset / "o")]
    assert main([*args, "--profile", "offline"]) == 2
    assert "image not found" in capsys.readouterr().err
    args = ["check-manifest", str(dataset / "images"), "--task", "caption"]
    assert main(args) == 2
    assert "is a directory; pass the path of a TSV file inside it" in _one_error_line(capsys)


def test_the_cli_still_shows_a_traceback_for_bugs(monkeypatch) -> None:
    def bug(*args, **kwargs):
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setattr(cli, "load_blip2", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["caption", str(sample_path("cat")), "--profile", "offline"])

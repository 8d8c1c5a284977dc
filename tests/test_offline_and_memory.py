"""The offline profile loads the shipped toy-world checkpoints, wherever the kit is installed; memory is estimated exactly."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from helpers import memory, offline
from helpers.loading import checkpoint_locations
from helpers.precision import Precision
from helpers.profiles import choose_profile


def test_the_offline_profile_loads_the_shipped_toy_world_weights() -> None:
    choice = choose_profile("offline")
    caption, retrieval = checkpoint_locations(choice)
    assert Path(caption) == offline.checkpoint_path(offline.CAPTION)
    assert Path(retrieval) == offline.checkpoint_path(offline.RETRIEVAL)
    manifest = json.loads((offline.weights_dir() / "manifest.json").read_text())
    config = json.loads((Path(caption) / "config.json").read_text())
    assert config["num_query_tokens"] == manifest["recipe"]["sizes"]["num_query_tokens"]


def test_missing_weights_are_reported_with_the_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(offline, "weights_dir", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="make toyworld"):
        offline.checkpoint_path(offline.CAPTION)
    with pytest.raises(ValueError, match="'caption' and 'retrieval'"):
        offline.checkpoint_path("vqa")


def test_a_wheel_carries_the_offline_weights(tmp_path) -> None:
    # `pip install git+...` (the notebooks' Colab cell) builds a wheel: the weights must be in it.
    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            tmp_path,
            root,
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in (offline.CAPTION, offline.RETRIEVAL):
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            assert f"helpers/toyworld/weights/{kind}/{name}" in names
    assert "helpers/toyworld/weights/manifest.json" in names


def test_weight_estimate_equals_the_loaded_model(offline_model):
    model = offline_model.model
    loaded = sum(p.numel() * p.element_size() for p in model.parameters())
    assert memory.weight_bytes(offline_model.caption_model, torch.float32) == loaded


def test_half_precision_keeps_the_qformer_in_fp32(offline_model):
    model = offline_model.model
    qformer = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("qformer", "query_tokens")))
    total = sum(p.numel() for p in model.parameters())
    expected = 4 * qformer + 2 * (total - qformer)
    assert memory.weight_bytes(offline_model.caption_model, torch.float16) == expected


def test_a_model_that_does_not_fit_is_refused_with_the_fix(offline_model, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)
    precision = Precision(torch.device("cpu"), torch.float32, "test")
    with pytest.raises(MemoryError, match="smaller variant"):
        memory.check_fits(offline_model.caption_model, precision)

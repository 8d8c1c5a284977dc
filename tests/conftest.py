"""Shared fixtures: the offline model is built and loaded once per test session, its LAVIS twin once per module."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def offline_model():
    from helpers import load_blip2

    return load_blip2("offline", backend="hf", verbose=False)


@pytest.fixture(scope="module")
def lavis_model():
    """The offline checkpoints through the LAVIS backend; per module, so no module sees another's changes."""
    from helpers import load_blip2

    return load_blip2("offline", backend="lavis", verbose=False)


@pytest.fixture(scope="session")
def samples():
    from helpers import sample_image, sample_names

    return [sample_image(name) for name in sample_names()[:3]]

"""The setup report: consistent fields, one table line per row, and warnings that match the facts."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from helpers import environment
from helpers.environment import EnvironmentReport, environment_report


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> EnvironmentReport:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return environment_report()


@pytest.fixture
def fake_t4(monkeypatch: pytest.MonkeyPatch) -> EnvironmentReport:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=0: (14 * 2**30, 15 * 2**30))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    return environment_report()


def test_fields_are_typed_and_consistent(no_gpu: EnvironmentReport) -> None:
    assert no_gpu.python_version == ".".join(map(str, sys.version_info[:3]))
    assert no_gpu.torch_version == torch.__version__
    assert no_gpu.on_colab is ("google.colab" in sys.modules)
    assert 0 < no_gpu.ram_available_bytes <= no_gpu.ram_total_bytes
    assert no_gpu.disk_free_bytes > 0
    assert no_gpu.transformers_version[0].isdigit()


def test_without_a_gpu_the_gpu_fields_are_none_and_a_warning_says_what_to_do(
    no_gpu: EnvironmentReport,
) -> None:
    assert no_gpu.cuda_available is False
    assert (no_gpu.gpu_name, no_gpu.gpu_total_bytes, no_gpu.gpu_free_bytes, no_gpu.gpu_bf16) == (None,) * 4
    no_gpu_warnings = [text for text in no_gpu.warnings() if text.startswith("No GPU")]
    assert len(no_gpu_warnings) == 1
    assert "offline profile" in no_gpu_warnings[0] and "T4 GPU" in no_gpu_warnings[0]
    assert dict(no_gpu.as_rows())["GPU"] == "none"


def test_a_t4_is_reported_without_bf16_and_without_the_no_gpu_warning(fake_t4: EnvironmentReport) -> None:
    assert fake_t4.cuda_available is True
    assert fake_t4.gpu_name == "Tesla T4"
    assert fake_t4.gpu_free_bytes <= fake_t4.gpu_total_bytes
    assert fake_t4.gpu_bf16 is False
    assert not any(text.startswith("No GPU") for text in fake_t4.warnings())
    rows = dict(fake_t4.as_rows())
    assert rows["GPU memory"] == "14.0 GiB free of 15.0 GiB"
    assert rows["GPU bf16"] == "no"


def test_on_colab_the_no_gpu_warning_names_the_menu(no_gpu: EnvironmentReport) -> None:
    on_colab = dataclasses.replace(no_gpu, on_colab=True)
    assert any(environment.COLAB_GPU_STEP in text for text in on_colab.warnings())


def test_low_ram_and_disk_are_warned_about_only_when_low(no_gpu: EnvironmentReport) -> None:
    roomy = dataclasses.replace(
        no_gpu,
        ram_available_bytes=environment.MIN_FREE_RAM_BYTES,
        disk_free_bytes=environment.MIN_FREE_DISK_BYTES,
    )
    assert not any("RAM" in text or "disk" in text for text in roomy.warnings())
    cramped = dataclasses.replace(roomy, ram_available_bytes=2**30, disk_free_bytes=2**30)
    assert sum("free RAM" in text for text in cramped.warnings()) == 1
    assert sum("free disk" in text for text in cramped.warnings()) == 1


def test_hf_is_importable_and_lavis_is_reported_without_importing_it(no_gpu: EnvironmentReport) -> None:
    assert no_gpu.backends["hf"] is True
    assert isinstance(no_gpu.backends["lavis"], bool)
    report_only = "from helpers.environment import environment_report; import sys; environment_report(); print('lavis' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", report_only], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "False"  # the report looks for LAVIS without importing it (slow)
    rows = dict(no_gpu.as_rows())
    assert rows["backend hf"] == "importable"
    assert rows["backend lavis"] in ("installed", "not installed")


def test_the_table_has_one_aligned_line_per_row(no_gpu: EnvironmentReport) -> None:
    rows = no_gpu.as_rows()
    lines = str(no_gpu).splitlines()
    assert len(lines) == len(rows)
    for line, (label, value) in zip(lines, rows, strict=True):
        assert line.startswith(label) and line.endswith(value)
    assert len({len(line) - len(value) for line, (_, value) in zip(lines, rows, strict=True)}) == 1, (
        "values start in the same column"
    )
    assert no_gpu._repr_html_().count("<tr>") == len(rows)


def test_sizes_below_a_gib_are_shown_in_mib() -> None:
    assert environment.format_bytes(5 * 2**20) == "5.0 MiB"
    assert environment.format_bytes(15 * 2**30) == "15.0 GiB"

"""The GPU check without a GPU: its plan, the T4 arithmetic and emulation logic, the checkpoint override,
the kernel hook, the driver sampler, the report format and the wheel list. No downloads, no full-size
builds: CUDA calls are replaced by fakes where a test needs them, checkpoints are the offline toy world's."""

from __future__ import annotations

import json
import tomllib
from types import SimpleNamespace

import pytest
import torch

from helpers import full_size, load_blip2, memory, offline, profiles
from helpers.gpu_check import (
    checkpoints,
    driver_memory,
    finetune_job,
    kernel,
    memory_job,
    notebook_job,
    report,
    t4,
    wheels,
)
from helpers.gpu_check import plan as planning
from helpers.gpu_check.__main__ import main as gpu_check_main
from helpers.precision import choose_precision
from helpers.variants import variant_config

GIB = 2**30
H200_BYTES = 139 * GIB
BUILT = (full_size.GENERATION, full_size.RETRIEVAL)
ALL_TOOLS = ("java", "pycocoevalcap")


# ---- plan -------------------------------------------------------------------------------------------
def test_plan_runs_every_listed_notebook_in_both_backends_then_the_measuring_jobs():
    plan = planning.make_plan(built=(), tools=ALL_TOOLS)
    names = [job.name for job in plan.jobs]
    notebooks = [job for job in plan.jobs if job.kind == "notebook"]
    assert {(job.target, job.backend) for job in notebooks} == {
        (notebook, backend) for notebook in planning.NOTEBOOKS for backend in ("hf", "lavis")
    }
    assert names[:2] == [f"build {full_size.GENERATION}", f"build {full_size.RETRIEVAL}"]
    phases = [job.phase for job in plan.jobs]
    assert phases == sorted(phases, key=planning.PHASES.index)  # builds, then notebooks, then the rest
    kinds = {job.kind for job in plan.jobs}
    assert {"memory", "memory-refusal", "finetune", "generation"} <= kinds


def test_plan_reuses_built_checkpoints():
    plan = planning.make_plan(built=BUILT, tools=ALL_TOOLS)
    assert not [job for job in plan.jobs if job.kind == "build"]


def test_plan_lists_what_a_missing_tool_leaves_out_and_why():
    plan = planning.make_plan(built=BUILT, tools=())
    left_out = {job.name: reason for job, reason in plan.left_out}
    for backend in ("hf", "lavis"):
        reason = left_out[f"notebook 06_finetuning ({backend})"]
        assert "java" in reason and "pycocoevalcap" in reason and "CIDEr" in reason
    assert "notebook 06_finetuning (hf)" not in [job.name for job in plan.jobs]
    assert "notebook 06_finetuning (lavis)" in plan.to_dict()["required_left_out"]


def test_optional_jobs_join_only_within_the_budget():
    tight = planning.make_plan(built=BUILT, tools=ALL_TOOLS, budget_seconds=60)
    roomy = planning.make_plan(built=BUILT, tools=ALL_TOOLS, budget_seconds=10_000)
    lavis_finetune = "finetune blip2-opt-2.7b, 20 fp16 steps (lavis)"
    assert lavis_finetune in [job.name for job in roomy.jobs]
    assert "budget" in dict((job.name, reason) for job, reason in tight.left_out)[lavis_finetune]
    assert tight.to_dict()["required_left_out"] == []
    # required jobs run even when their estimate alone passes the budget
    assert [job for job in tight.jobs if job.kind == "notebook"]


def test_estimate_runs_notebooks_in_parallel_and_the_rest_in_series():
    notebooks = [planning.Job("notebook", f"n{i}", "hf", 60.0) for i in range(10)]
    alone = [planning.Job("generation", "g", None, 100.0), planning.Job("build", "b", None, 30.0)]
    assert planning.estimate(notebooks + alone, workers=5) == pytest.approx(2 * 60 + 130)
    assert planning.estimate(notebooks + alone, workers=4) == pytest.approx(3 * 60 + 130)
    assert planning.estimate(notebooks, workers=1) == pytest.approx(600)


def test_plan_refuses_impossible_settings():
    with pytest.raises(ValueError, match="workers=0"):
        planning.make_plan(workers=0)
    with pytest.raises(ValueError, match="budget_seconds"):
        planning.make_plan(budget_seconds=0)


def test_plan_only_command_runs_without_a_gpu(capsys, monkeypatch):
    assert gpu_check_main(["--plan-only"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["budget_seconds"] == planning.BUDGET_SECONDS and printed["jobs"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check_main(["--out", "unused"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


# ---- T4 emulation -----------------------------------------------------------------------------------
def test_memory_fraction_leaves_the_process_15_gib():
    fraction = t4.memory_fraction(H200_BYTES)
    assert fraction * H200_BYTES == pytest.approx(t4.T4_MEMORY_BYTES)
    assert t4.memory_fraction(t4.T4_MEMORY_BYTES) == 1.0
    with pytest.raises(ValueError, match=r"has 8\.0 GiB, less than the 15 GiB"):
        t4.memory_fraction(8 * GIB)


@pytest.fixture
def fake_h200(monkeypatch):
    """torch.cuda as an H200 would answer, with bf16; records the fraction the emulation sets."""
    calls = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda device=None: SimpleNamespace(name="NVIDIA H200", total_memory=H200_BYTES),
    )
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(
        torch.cuda,
        "set_per_process_memory_fraction",
        lambda fraction, device=None: calls.update(fraction=fraction, device=device),
    )
    return calls


def test_emulation_caps_memory_and_takes_the_t4_dtype_branch(fake_h200):
    assert choose_precision("cuda").dtype == torch.bfloat16  # the H200 as it is
    emulation = t4.emulate()
    assert fake_h200 == {"fraction": pytest.approx(15 / 139), "device": 0}
    assert emulation.cap_bytes == t4.T4_MEMORY_BYTES and not emulation.bf16_supported
    assert emulation.auto_dtype == "float16"
    assert emulation.bf16_request.startswith("refused") and "no bf16" in emulation.bf16_request
    assert choose_precision("cuda", encoder_decoder_lm=True).dtype == torch.float32  # T5 never in fp16
    described = emulation.describe()
    assert described["emulates"].startswith("Tesla T4: 15 GiB") and described["device_name"] == "NVIDIA H200"


def test_preflight_counts_the_per_process_cap(monkeypatch):
    reserved = 2 * GIB
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (130 * GIB, H200_BYTES))
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device=None: 15 / 139)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: reserved)
    assert memory.available_bytes(torch.device("cuda")) == pytest.approx(15 * GIB - reserved, abs=1)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device=None: 1.0)
    assert memory.available_bytes(torch.device("cuda")) == 130 * GIB  # no cap: the driver's free memory


def test_t4_arithmetic_of_the_released_variants(tmp_path):
    """What the pre-flight says on a T4: OPT-2.7B fits in fp16, Flan-T5-XL in fp32 does not."""
    root = tmp_path / "checkpoints"
    for hub_id, variant in {**checkpoints.CONFIG_ONLY, "Salesforce/blip2-opt-2.7b": "blip2-opt-2.7b"}.items():
        (root / hub_id).mkdir(parents=True)
        (root / hub_id / "config.json").write_text(json.dumps(variant_config(variant).to_dict()))
    opt = memory.weight_bytes(str(root / "Salesforce/blip2-opt-2.7b"), torch.float16)
    flan = memory.weight_bytes(str(root / "Salesforce/blip2-flan-t5-xl"), torch.float32)
    assert opt * memory.HEADROOM < t4.T4_MEMORY_BYTES < flan * memory.HEADROOM
    assert 7.0e9 < opt < 8.0e9 and 15.0e9 < flan < 16.5e9


def test_preflight_sizes_a_retrieval_checkpoint_with_its_own_class():
    folder = offline.checkpoint_path(offline.RETRIEVAL)
    model = __import__("transformers").Blip2ForImageTextRetrieval.from_pretrained(folder)
    expected = sum(p.numel() for p in model.parameters()) * 4
    assert memory.weight_bytes(str(folder), torch.float32) == expected


# ---- the checkpoint-location override ---------------------------------------------------------------
def test_checkpoint_location_is_the_hub_id_without_the_variable(monkeypatch):
    monkeypatch.delenv(profiles.CHECKPOINT_DIR_ENV_VAR, raising=False)
    assert profiles.checkpoint_location("Salesforce/blip2-opt-2.7b") == "Salesforce/blip2-opt-2.7b"


def test_checkpoint_location_errors_name_the_folder_and_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv(profiles.CHECKPOINT_DIR_ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"BLIP2_CHECKPOINT_DIR=.*nowhere.* is not a folder"):
        profiles.checkpoint_location("Salesforce/blip2-opt-2.7b")
    monkeypatch.setenv(profiles.CHECKPOINT_DIR_ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"blip2-opt-2\.7b/config\.json is missing.*hf download"):
        load_blip2("t4", device="cpu", verbose=False)


@pytest.fixture
def toy_checkpoint_dir(monkeypatch, tmp_path):
    """The `t4` profile's hub ids pointing at the offline toy-world checkpoints."""
    root = tmp_path / "models"
    (root / "Salesforce").mkdir(parents=True)
    (root / "Salesforce/blip2-opt-2.7b").symlink_to(offline.checkpoint_path(offline.CAPTION))
    (root / "Salesforce/blip2-itm-vit-g").symlink_to(offline.checkpoint_path(offline.RETRIEVAL))
    monkeypatch.setenv(profiles.CHECKPOINT_DIR_ENV_VAR, str(root))
    return root


@pytest.mark.parametrize("backend", ["hf", "lavis"])
def test_t4_profile_loads_from_the_checkpoint_dir(toy_checkpoint_dir, backend, samples):
    model = load_blip2("t4", backend=backend, device="cpu", verbose=False)
    assert model.caption_model == str(toy_checkpoint_dir / "Salesforce/blip2-opt-2.7b")
    assert model.retrieval_model == str(toy_checkpoint_dir / "Salesforce/blip2-itm-vit-g")
    offline_model = load_blip2("offline", backend=backend, device="cpu", verbose=False)
    assert model.caption(samples[:1]) == offline_model.caption(samples[:1])  # same weights, same caption
    assert model.match(samples[:2], ["a cat", "a rocket"]).itm.shape == (2, 2)


def test_check_links_hub_ids_to_built_full_size_checkpoints(monkeypatch, tmp_path):
    monkeypatch.setenv(full_size.CACHE_ENV_VAR, str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="not built"):
        checkpoints.prepare(tmp_path / "root")
    for variant in BUILT:  # stand-ins for built checkpoints: the index marks one as complete
        full_size.folder(variant).mkdir(parents=True)
        (full_size.folder(variant) / "model.safetensors.index.json").write_text("{}")
        (full_size.folder(variant) / "config.json").write_text("{}")
    root = checkpoints.prepare(tmp_path / "root")
    checkpoints.prepare(root)  # again: links are replaced, not duplicated
    assert (root / "Salesforce/blip2-opt-2.7b").resolve() == full_size.folder(full_size.GENERATION).resolve()
    assert (root / "Salesforce/blip2-itm-vit-g").resolve() == full_size.folder(full_size.RETRIEVAL).resolve()
    monkeypatch.setenv(profiles.CHECKPOINT_DIR_ENV_VAR, str(root))
    assert profiles.checkpoint_location("Salesforce/blip2-flan-t5-xl") == str(
        root / "Salesforce/blip2-flan-t5-xl"
    )
    assert sorted(p.name for p in (root / "Salesforce").iterdir()) == [
        "blip2-flan-t5-xl",
        "blip2-itm-vit-g",
        "blip2-opt-2.7b",
    ]


# ---- inside the notebook kernel ---------------------------------------------------------------------
def test_kernel_hook_emulates_then_records_peaks_after_every_cell(monkeypatch, tmp_path):
    peaks_file = tmp_path / "peaks.json"
    emulation = t4.Emulation(
        "NVIDIA H200", H200_BYTES, t4.T4_MEMORY_BYTES, 15 / 139, False, "float16", "refused"
    )
    monkeypatch.setattr(t4, "emulate", lambda: emulation)
    allocated = iter([1 * GIB, 5 * GIB])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: next(allocated))
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda: 6 * GIB)
    registered = []
    shell = SimpleNamespace(
        events=SimpleNamespace(register=lambda event, hook: registered.append((event, hook)))
    )
    monkeypatch.delenv(kernel.PEAKS_ENV_VAR, raising=False)
    with pytest.raises(RuntimeError, match=kernel.PEAKS_ENV_VAR):
        kernel.install(shell)
    monkeypatch.setenv(kernel.PEAKS_ENV_VAR, str(peaks_file))
    kernel.install(shell)
    assert kernel.read_peaks(peaks_file)["torch_peak_allocated_bytes"] == 1 * GIB  # written at start
    [(event, hook)] = registered
    assert event == "post_run_cell"
    hook(None)
    written = kernel.read_peaks(peaks_file)
    assert (
        written["torch_peak_allocated_bytes"] == 5 * GIB and written["torch_peak_reserved_bytes"] == 6 * GIB
    )
    assert written["emulation"]["fraction"] == pytest.approx(15 / 139)
    assert kernel.read_peaks(tmp_path / "never.json") is None


def test_ipython_dir_runs_the_hook_at_kernel_start(tmp_path):
    folder = kernel.write_ipython_dir(tmp_path / "ipython")
    script = (folder / "profile_default" / "startup" / kernel.STARTUP_FILE).read_text()
    assert "kernel.install(get_ipython())" in script
    compile(script, kernel.STARTUP_FILE, "exec")


def test_notebook_run_uses_the_t4_profile_and_the_checkpoint_dir(tmp_path):
    setting = notebook_job.Setting(tmp_path, tmp_path / "ipython", tmp_path / "models")
    environment = notebook_job.environment(setting, tmp_path / "peaks.json")
    assert environment["IPYTHONDIR"] == str(tmp_path / "ipython")
    assert environment[profiles.CHECKPOINT_DIR_ENV_VAR] == str(tmp_path / "models")
    assert environment[profiles.PROFILE_ENV_VAR] == "t4"
    assert environment["PYTHONPATH"].split(":")[0] == str(notebook_job.REPOSITORY)
    command = notebook_job.command(
        notebook_job.notebook_path("01_captioning"), tmp_path / "out.ipynb", "lavis"
    )
    joined = " ".join(command)
    assert "-p PROFILE t4" in joined and "-p BACKEND lavis" in joined and "-p DEVICE cuda" in joined
    with pytest.raises(FileNotFoundError, match="99_missing"):
        notebook_job.notebook_path("99_missing")


def test_notebook_verdict_needs_success_and_the_confirmed_emulation(tmp_path):
    peaks = {
        "pid": 7,
        "torch_peak_allocated_bytes": 8 * GIB,
        "torch_peak_reserved_bytes": 9 * GIB,
        "emulation": {},
    }
    passed = notebook_job.verdict("01_captioning", "hf", 0, "", 42.0, peaks, tmp_path / "o.ipynb")
    assert passed["status"] == "pass" and passed["kernel_pid"] == 7 and passed["error"] is None
    unconfirmed = notebook_job.verdict("01_captioning", "hf", 0, "", 42.0, None, tmp_path / "o.ipynb")
    assert unconfirmed["status"] == "fail" and "emulation" in unconfirmed["error"]
    crashed = notebook_job.verdict("01_captioning", "hf", 1, b"OutOfMemoryError: CUDA", 3.0, peaks, tmp_path)
    assert crashed["status"] == "fail" and "OutOfMemoryError" in crashed["error"]


# ---- the driver's figures ---------------------------------------------------------------------------
def test_nvidia_smi_output_is_parsed_to_bytes():
    assert driver_memory.parse_processes("1234, 8000\n99, [N/A]\n") == {1234: 8000 * 2**20}
    assert driver_memory.parse_device("9000\n") == 9000 * 2**20


def test_driver_peak_per_process_or_device_rise_when_alone():
    peak = driver_memory.DriverPeak(baseline_device_bytes=500)
    peak.observe({10: 4000, 11: 100}, 5000)
    peak.observe({10: 3000}, 6000)
    assert peak.summary([10], alone=False) == {"bytes": 4000, "method": "nvidia-smi, per process"}
    assert peak.summary([42], alone=True)["bytes"] == 5500  # ids from another pid namespace
    assert peak.summary([42], alone=False)["bytes"] is None
    peak.error = "nvidia-smi: not found"
    assert "failed" in peak.summary([10], alone=True)["method"]


def test_driver_sampler_samples_until_the_block_ends():
    readings = iter(range(1, 10_000))

    def query(arguments):
        value = next(readings)
        return f"77, {value}\n" if arguments == driver_memory.PROCESSES_QUERY else f"{value}\n"

    with driver_memory.DriverSampler(interval=0.001, query=query) as peak:
        pass
    assert peak.baseline_device_bytes == 1 * 2**20
    assert peak.process_bytes[77] > 0 and peak.device_bytes > peak.baseline_device_bytes


# ---- the report -------------------------------------------------------------------------------------
def _notebook(name, backend, status="pass", driver=9 * GIB):
    return {
        "notebook": name,
        "backend": backend,
        "status": status,
        "seconds": 41.7,
        "torch_peak_allocated_bytes": 8 * GIB,
        "driver_peak_bytes": driver,
    }


def _fake_report(notebooks, left_out=None):
    measured = {
        "hf": {"models": {"blip2-opt-2.7b": memory_job.comparison(int(8.4 * GIB), 8 * GIB)}},
    }
    refusal = {"refused": True}
    finetune = {"hf": {"passed": True}}
    records = [
        report.notebook_record(notebooks, {"emulates": "Tesla T4"}),
        report.memory_record(measured, refusal),
        report.finetune_record(finetune),
    ]
    left_out = left_out or {}
    required = [name for name in left_out if "optional" not in left_out[name]]
    plan = {"jobs": [], "left_out": left_out, "required_left_out": required}
    return report.build_report(records, plan, 431.0, {"emulates": "Tesla T4"})


def test_report_passes_only_when_everything_ran_and_fit(tmp_path):
    good = _fake_report([_notebook("01_captioning", "hf")])
    assert good["passed"] is True and good["schema"] == report.SCHEMA
    assert _fake_report([_notebook("01_captioning", "hf", status="fail")])["passed"] is False
    assert _fake_report([_notebook("01_captioning", "hf", driver=16 * GIB)])["passed"] is False
    left = _fake_report(
        [_notebook("01_captioning", "hf")], left_out={"notebook 06_finetuning (hf)": "needs java"}
    )
    assert left["passed"] is False
    optional = _fake_report(
        [_notebook("01_captioning", "hf")], left_out={"finetune (lavis)": "optional, and ..."}
    )
    assert optional["passed"] is True  # an optional job the budget left out does not fail the check


def test_memory_comparison_tolerance():
    assert memory_job.comparison(108, 100)["within_tolerance"] is True
    assert memory_job.comparison(115, 100)["within_tolerance"] is False
    assert memory_job.comparison(85, 100)["within_tolerance"] is False


def test_report_files_are_written_whole_with_the_tables(tmp_path):
    result = _fake_report(
        [_notebook("01_captioning", "hf"), _notebook("03_retrieval_and_features", "lavis", "fail", None)],
        left_out={"notebook 06_finetuning (hf)": "needs java, missing on this machine"},
    )
    data, summary = report.save(result, tmp_path)
    assert json.loads(data.read_text())["records"][0]["benchmark"] == "gpu-check notebooks"
    text = summary.read_text()
    assert text.startswith("# GPU check: FAIL")
    assert "| Benchmark | Measure | Measured | Goal | Result | Machine |" in text
    assert "| 01_captioning | hf | pass | 42 | 8.00 | 9.00 |" in text
    assert "| 03_retrieval_and_features | lavis | fail | 42 | 8.00 | - |" in text
    assert (
        "| gpu-check memory | blip2-opt-2.7b (hf): pre-flight error (predicted / torch peak - 1, either way) | 0.05 | <= 0.1 | pass |"
        in text
    )
    assert "- notebook 06_finetuning (hf): needs java" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([report.REPORT_NAME, report.SUMMARY_NAME])


def test_a_crashed_part_fails_with_its_error():
    record = report.failed_record("generation", "CUDA out of memory")
    assert record["passed"] is False and record["figures"]["error"] == "CUDA out of memory"


# ---- fine-tuning checks -----------------------------------------------------------------------------
def test_finetune_verdict_needs_every_check():
    good = {
        "steps": finetune_job.STEPS,
        "losses_finite": True,
        "scaler_steps_taken": 19,
        "checkpoint_equals_model": True,
        "reloaded_equals_checkpoint": True,
        "reloaded_captions_equal": True,
    }
    assert finetune_job.passed(good)
    for key, bad in [
        ("steps", 19),
        ("losses_finite", False),
        ("scaler_steps_taken", 0),
        ("reloaded_equals_checkpoint", False),
    ]:
        assert not finetune_job.passed({**good, key: bad})


def test_checkpoint_comparison_uses_the_models_dtype():
    saved = {"w": torch.tensor([0.1, 0.2], dtype=torch.float32)}
    assert finetune_job.equal_to_checkpoint(saved, {"w": torch.tensor([0.1, 0.2]).half()})
    assert not finetune_job.equal_to_checkpoint(saved, {"w": torch.tensor([0.1, 0.3]).half()})
    assert not finetune_job.equal_to_checkpoint(saved, {})


def test_scaler_step_counting_restores_accelerate():
    from accelerate.optimizer import AcceleratedOptimizer

    original = AcceleratedOptimizer.step
    with finetune_job.scaler_steps() as steps:
        assert AcceleratedOptimizer.step is not original
    assert AcceleratedOptimizer.step is original and steps == []


def test_finetune_manifest_has_the_planned_number_of_examples(tmp_path):
    from helpers.finetune import read_manifest

    manifest = read_manifest(finetune_job.write_manifest(tmp_path), "caption")
    assert len(manifest) == finetune_job.EXAMPLES
    assert finetune_job.EXAMPLES // finetune_job.BATCH_SIZE * 5 == finetune_job.STEPS  # 5 epochs


# ---- wheels for a machine without network -----------------------------------------------------------
def _pyproject():
    return tomllib.loads((wheels.REPOSITORY / "pyproject.toml").read_text())


def test_wheel_list_has_the_notebook_stack_and_the_lavis_extra():
    wanted = {wheels.requirement_name(r) for r in wheels.wanted(_pyproject())}
    assert {"papermill", "nbformat", "ipykernel", "nbclient"} <= wanted
    lavis_extra = {
        wheels.requirement_name(r) for r in _pyproject()["project"]["optional-dependencies"]["lavis"]
    }
    assert lavis_extra <= wanted and "omegaconf" in lavis_extra
    assert "pycocoevalcap" not in wanted  # too large to carry; the plan leaves notebook 06 out instead
    assert "salesforce-lavis" not in wanted  # installed without dependencies
    assert any(r.startswith("salesforce-lavis") for r in wheels.NO_DEPS)


def test_what_the_gpu_machine_has_is_not_carried():
    report_json = {
        "install": [
            {"metadata": {"name": "Jupyter_Client", "version": "8.6.0"}},
            {"metadata": {"name": "numpy", "version": "2.1.0"}},
            {"metadata": {"name": "papermill", "version": "2.6.0"}},
        ]
    }
    needed = wheels.resolved(report_json)
    assert needed == {"jupyter-client": "8.6.0", "numpy": "2.1.0", "papermill": "2.6.0"}
    assert wheels.to_carry(needed, ["NumPy", "torch"]) == {"jupyter-client": "8.6.0", "papermill": "2.6.0"}


def test_wheel_size_check_against_the_carry_limit(tmp_path):
    (tmp_path / "big.whl").write_bytes(b"x" * 3000)
    (tmp_path / "small.whl").write_bytes(b"x" * 1000)
    over = wheels.size_check(tmp_path.glob("*.whl"), limit=3500)
    assert over == {
        "total_bytes": 4000,
        "limit_bytes": 3500,
        "fits": False,
        "largest": [("big.whl", 3000), ("small.whl", 1000)],
    }
    assert wheels.size_check(tmp_path.glob("*.whl"))["fits"]
    assert wheels.CARRY_LIMIT_BYTES == 64 * 2**20


def _item(name, version, *requires):
    return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)}}


def test_target_only_dependencies_and_what_the_machine_brings():
    report_json = {
        "install": [
            _item(
                "papermill",
                "2.6.0",
                'aiohttp>=3.9; python_version == "3.12"',
                "nbclient",
                'boto3; extra == "s3"',
            ),
            _item("nbclient", "0.10.0", "jupyter-client"),
            _item("jupyter_client", "8.6.0"),
            _item("torch", "2.11.0", "sympy", 'nvidia-cublas-cu12; platform_system == "Linux"'),
            _item("sympy", "1.13.0"),
            _item("nvidia-cublas-cu12", "12.8"),
        ]
    }
    # pip judged the marker for the Python it runs on; the target is 3.12, and extras never count
    assert wheels.missing_for_target(report_json) == ["aiohttp>=3.9"]
    assert wheels.closure(report_json, ["torch"]) == {"torch", "sympy", "nvidia-cublas-cu12"}
    carry = wheels.to_carry(wheels.resolved(report_json), wheels.closure(report_json, ["torch"]))
    assert list(carry) == ["jupyter-client", "nbclient", "papermill"]


def test_runner_turns_every_planned_job_into_the_report(monkeypatch, tmp_path):
    """The runner's wiring with the GPU work replaced: each job's result lands in its part of the report."""
    from helpers import benchmarking
    from helpers.gpu_check import runner

    plan = planning.make_plan(built=(), tools=ALL_TOOLS, budget_seconds=10_000)
    built, ran = [], []
    monkeypatch.setattr(runner.full_size, "checkpoint_path", built.append)
    monkeypatch.setattr(runner.checkpoints, "prepare", lambda root: root)
    monkeypatch.setattr(runner.shutil, "which", lambda tool: None)  # no nvidia-smi: driver figures say so

    def notebook(name, backend, setting):
        ran.append((name, backend))
        assert setting.checkpoint_dir == (tmp_path / "checkpoints").resolve()
        return {**_notebook(name, backend), "kernel_pid": 1, "emulation": {"emulates": "Tesla T4"}}

    def alone(self, job, arguments, result_file):
        if job.kind == "memory":
            return {"models": {"blip2-opt-2.7b": memory_job.comparison(105, 100)}}
        if job.kind == "memory-refusal":
            return {"refused": True}
        if job.kind == "finetune":
            return {"passed": True}
        assert arguments[0] == str(runner.GENERATION_SCRIPT) and "--emulate-t4" in arguments
        goal = benchmarking.Goal("hf greedy: batch 32 vs one at a time (wall)", 12.0, ">=", 8.0, "x")
        return {**benchmarking.record("generation", {}, {}, [goal]), "seconds": 30.0, "driver_peak": {}}

    monkeypatch.setattr(runner.notebook_job, "run", notebook)
    monkeypatch.setattr(runner.Runner, "alone", alone)
    result = runner.Runner(plan, tmp_path).run()
    assert built == [full_size.GENERATION, full_size.RETRIEVAL]
    assert len(ran) == 2 * len(planning.NOTEBOOKS)
    assert [record["benchmark"] for record in result["records"]] == [
        "gpu-check notebooks",
        "gpu-check memory",
        "gpu-check fine-tuning",
        "generation",
    ]
    assert result["passed"] is True and result["emulation"] == {"emulates": "Tesla T4"}
    notebooks = result["records"][0]["figures"]["notebooks"]
    assert notebooks[0]["driver_peak_bytes"] is None and "nvidia-smi" in notebooks[0]["driver_method"]
    assert set(result["records"][2]["figures"]) == {"hf", "lavis"}  # the optional LAVIS run fit the budget


def test_refusal_job_stops_flan_t5_xl_in_fp32_before_any_weight_loads(fake_h200, monkeypatch, tmp_path):
    """The job's own code path, with an H200 under T4 emulation faked; the checkpoint is a config alone."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (130 * GIB, H200_BYTES))
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device=None: 15 / 139)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    root = tmp_path / "models"
    (root / "Salesforce").mkdir(parents=True)
    (root / "Salesforce/blip2-itm-vit-g").symlink_to(offline.checkpoint_path(offline.RETRIEVAL))
    [(flan_id, flan_variant)] = checkpoints.CONFIG_ONLY.items()
    (root / flan_id).mkdir()
    (root / flan_id / "config.json").write_text(json.dumps(variant_config(flan_variant).to_dict()))
    monkeypatch.setenv(profiles.CHECKPOINT_DIR_ENV_VAR, str(root))
    t4.emulate()
    result = memory_job.refusal()
    assert result["refused"] is True and result["dtype"] == "float32"
    assert "blip2-flan-t5-xl" in result["message"] and "8-bit" in result["message"]
    assert result["fp32_weight_bytes"] * memory.HEADROOM > t4.T4_MEMORY_BYTES


def test_the_kit_wheel_carries_the_check():
    """The GPU machine installs the kit from its wheel: the package list must name helpers.gpu_check."""
    assert "helpers.gpu_check" in _pyproject()["tool"]["setuptools"]["packages"]

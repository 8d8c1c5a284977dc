"""The benchmark records and summary: shape of the JSON, verdicts, the markdown table. No timing here."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import benchmarking, full_size


def test_goal_verdicts_and_ratio():
    at_most = benchmarking.Goal("peak / fp16 bytes", 1.1, "<=", 1.2)
    at_least = benchmarking.Goal("speed-up", 10.0, ">=", 20.0, "x")
    assert at_most.passed and not at_least.passed
    assert at_most.ratio == pytest.approx(1.1 / 1.2)
    assert at_least.to_dict() == {
        "name": "speed-up",
        "value": 10.0,
        "op": ">=",
        "target": 20.0,
        "unit": "x",
        "ratio": 0.5,
        "passed": False,
    }


def test_goal_rejects_unknown_operator():
    with pytest.raises(ValueError, match="op='<'"):
        benchmarking.Goal("speed", 1.0, "<", 2.0)


def test_record_carries_machine_versions_settings_and_verdict():
    goals = [benchmarking.Goal("a", 1.0, "<=", 2.0), benchmarking.Goal("b", 3.0, ">=", 2.0)]
    result = benchmarking.record("demo", {"batch": 4}, {"seconds": 1.5}, goals)
    assert result["benchmark"] == "demo" and result["passed"] is True and result["skipped"] is False
    assert result["settings"] == {"batch": 4} and result["figures"] == {"seconds": 1.5}
    assert result["machine"]["cpu_count"] >= 1 and result["machine"]["ram_bytes"] > 0
    assert result["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert {"python", "transformers", "salesforce-lavis"} <= set(result["versions"])
    failing = benchmarking.record("demo", {}, {}, [benchmarking.Goal("a", 3.0, "<=", 2.0)])
    assert failing["passed"] is False
    json.dumps(result)  # serialisable as is


def test_skipped_record_has_reason_and_no_verdict():
    result = benchmarking.record("generation", {}, {}, skipped="no CUDA GPU")
    assert result["skipped"] is True and result["passed"] is None and result["skip_reason"] == "no CUDA GPU"
    with pytest.raises(ValueError, match="skipped"):
        benchmarking.record("generation", {}, {}, [benchmarking.Goal("a", 1.0, "<=", 2.0)], skipped="no GPU")


def test_save_writes_named_json_and_leaves_no_temporary_file(tmp_path):
    result = benchmarking.record("loading", {}, {"x": 1}, [benchmarking.Goal("a", 1.0, "<=", 2.0)])
    path = benchmarking.save(result, tmp_path / "bench")
    assert path.name == "loading.json"
    assert json.loads(path.read_text())["figures"] == {"x": 1}
    assert [p.name for p in path.parent.iterdir()] == ["loading.json"]
    assert path.stat().st_mode & 0o777 == 0o644, (
        "others must be able to read what make toyworld or bench wrote"
    )


def test_summary_table_lists_goals_skips_and_foreign_records(tmp_path):
    goals = [
        benchmarking.Goal("hf: peak / fp16 bytes", 1.05, "<=", 1.2),
        benchmarking.Goal("s", 4.0, ">=", 8.0, "x"),
        benchmarking.Goal("lavis: peak / fp16 bytes", 1.2028, "<=", 1.2),
    ]
    benchmarking.save(benchmarking.record("loading", {}, {}, goals), tmp_path)
    benchmarking.save(benchmarking.record("generation", {}, {}, skipped="no CUDA GPU"), tmp_path)
    (tmp_path / "toyworld.json").write_text(json.dumps({"benchmark": "toyworld", "figures": {"f1": 0.9}}))
    summary = benchmarking.write_summary(tmp_path).read_text()
    lines = summary.splitlines()
    assert lines[0].startswith("| Benchmark | Measure | Measured | Goal | Result")
    assert "| loading | hf: peak / fp16 bytes | 1.05 | <= 1.2 | pass |" in summary
    assert "| loading | s | 4 x | >= 8 x | FAIL |" in summary
    assert "| loading | lavis: peak / fp16 bytes | 1.203 | <= 1.2 | FAIL |" in summary, "a FAIL reads as one"
    assert "| generation | - | no CUDA GPU | - | skipped |" in summary
    assert "| toyworld | - | no goal recorded |" in summary
    assert len(lines) == 2 + 5


def test_summary_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="make bench"):
        benchmarking.write_summary(tmp_path)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match=r"broken\.json"):
        benchmarking.load_results(tmp_path)


def test_full_size_checkpoints_are_the_two_benchmarked_variants():
    with pytest.raises(ValueError, match=r"blip2-opt-2\.7b"):
        full_size.checkpoint_path("blip2-opt-6.7b")


def test_full_size_random_values_keep_norms_and_biases_neutral():
    generator = torch.Generator().manual_seed(0)
    shape = torch.Size([64, 32])
    weight = full_size._random_tensor("qformer.layer.0.attention.output.dense.weight", shape, generator)
    assert weight.dtype == full_size.DTYPE and weight.float().std() == pytest.approx(
        full_size.WEIGHT_STD, rel=0.2
    )
    assert torch.equal(
        full_size._random_tensor("vision_model.post_layernorm.weight", shape, generator),
        torch.ones(shape, dtype=full_size.DTYPE),
    )
    assert not full_size._random_tensor("itm_head.bias", shape, generator).any()


def test_interleaved_timing_alternates_the_sides_and_keeps_medians():
    calls = []
    timings = benchmarking.interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repetitions=3
    )
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert len(timings["a"].wall_seconds) == len(timings["a"].cpu_seconds) == 3
    timing = benchmarking.Timing(wall_seconds=(3.0, 1.0, 2.0), cpu_seconds=(0.5, 0.7, 0.6))
    assert timing.wall == 2.0 and timing.cpu == 0.6
    assert timing.to_dict()["wall_seconds_median"] == 2.0


def test_interleaved_timing_counts_this_process_cpu_time_beside_the_wall_clock():
    def busy() -> None:
        total = 0
        for i in range(200_000):
            total += i * i

    def asleep() -> None:
        import time

        time.sleep(0.05)

    timings = benchmarking.interleaved({"busy": busy, "asleep": asleep}, repetitions=2)
    assert timings["busy"].cpu > 0
    assert timings["asleep"].wall >= 0.05 and timings["asleep"].cpu < timings["asleep"].wall


def test_interleaved_timing_synchronizes_around_every_reading():
    events = []
    benchmarking.interleaved(
        {"a": lambda: events.append("run")}, 2, synchronize=lambda: events.append("sync")
    )
    assert events == ["sync", "run", "sync"] * 2


def test_speedup_is_stated_on_both_clocks_and_timings_combine_round_by_round():
    slow = benchmarking.Timing((10.0, 12.0, 11.0), (8.0, 8.0, 9.0))
    fast = benchmarking.Timing((1.0, 1.0, 1.1), (2.0, 2.0, 2.0))
    assert benchmarking.speedup(slow, fast) == {"wall": pytest.approx(11.0), "cpu": pytest.approx(4.0)}
    combined = slow + fast.scaled(10)
    assert combined.wall_seconds == pytest.approx((20.0, 22.0, 22.0))
    assert combined.cpu_seconds == pytest.approx((28.0, 28.0, 29.0))
    with pytest.raises(ValueError, match="same rounds"):
        slow + benchmarking.Timing((1.0,), (1.0,))


def test_interleaved_timing_refuses_nothing_to_time():
    with pytest.raises(ValueError, match="repetitions=0"):
        benchmarking.interleaved({"a": lambda: None}, repetitions=0)
    with pytest.raises(ValueError, match="no sides"):
        benchmarking.interleaved({}, repetitions=1)

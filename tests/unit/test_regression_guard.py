"""The regression guard: its baseline file (one entry per CPU model, picked by the CPU it runs on), per-unit ratios
and what it does with workloads an entry lacks. No timing: the clock and the measurements are stand-ins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import regression_guard
from benchmarks.regression_guard import Reference, Workload, baseline_for, compare, load_baselines, measure, with_entry


def _entry(cpu: str, ratio: float, cpu_id: str | None = None) -> dict:
    machine = {"cpu": cpu, **({"cpu_id": cpu_id} if cpu_id else {})}
    return {"machine": machine, "commit": "c", "ratios": {"rules_2k_matches": ratio}}


def test_the_entry_of_this_cpu_is_used_else_the_first(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"threshold": 0.25, "machines": [_entry("AMD EPYC", 0.81), _entry("Intel Xeon", 1.05)]}))
    baselines = load_baselines(path)
    assert baseline_for(baselines, "Intel Xeon")["ratios"]["rules_2k_matches"] == 1.05
    assert baseline_for(baselines, "Some ARM")["ratios"]["rules_2k_matches"] == 0.81


def test_a_masked_cpu_name_is_told_apart_by_family_model_and_stepping():
    xeon = "Intel(R) Xeon(R) Processor"
    baselines = {"machines": [_entry("AMD EPYC", 0.81), _entry(xeon, 1.05),
                              _entry(xeon, 1.50, "family 6 model 207 stepping 2")]}
    assert baseline_for(baselines, xeon, "family 6 model 207 stepping 2")["ratios"]["rules_2k_matches"] == 1.50
    # another generation under the same name: the entry that recorded no id (older), not the other generation's
    assert baseline_for(baselines, xeon, "family 6 model 143 stepping 8")["ratios"]["rules_2k_matches"] == 1.05
    only_207 = {"machines": [_entry("AMD EPYC", 0.81), _entry(xeon, 1.50, "family 6 model 207 stepping 2")]}
    assert baseline_for(only_207, xeon, None)["ratios"]["rules_2k_matches"] == 1.50  # same name beats the first
    updated = with_entry(baselines, _entry(xeon, 1.60, "family 6 model 207 stepping 2"), None)
    assert [e["ratios"]["rules_2k_matches"] for e in updated["machines"]] == [0.81, 1.05, 1.60]


def test_this_machine_records_its_cpu_id_where_proc_cpuinfo_gives_one():
    here, cpuinfo = regression_guard.machine(), Path("/proc/cpuinfo")
    assert here["cpu"]
    if cpuinfo.exists() and "stepping" in cpuinfo.read_text():
        assert here["cpu_id"].startswith("family ") and " model " in here["cpu_id"]


def test_an_older_single_entry_file_reads_as_one_machine(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"threshold": 0.3, **_entry("AMD EPYC", 0.81)}))
    baselines = load_baselines(path)
    assert baselines["threshold"] == 0.3 and [e["machine"]["cpu"] for e in baselines["machines"]] == ["AMD EPYC"]


def test_updating_replaces_only_this_cpus_entry():
    baselines = {"threshold": 0.25, "machines": [_entry("AMD EPYC", 0.81), _entry("Intel Xeon", 1.05)]}
    updated = with_entry(baselines, _entry("Intel Xeon", 1.10), None)
    assert [(e["machine"]["cpu"], e["ratios"]["rules_2k_matches"]) for e in updated["machines"]] == [
        ("AMD EPYC", 0.81), ("Intel Xeon", 1.10)]
    assert updated["threshold"] == 0.25


class _Clock:
    """A stand-in for `time`: calls advance it by fixed amounts, so the guard's arithmetic is exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def costing(self, seconds: float):
        def call() -> None:
            self.now += seconds

        return call


def test_ratios_are_per_reference_step_and_per_trace(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(regression_guard, "time", clock)
    # the encoder reference: ten 1 ms steps a call; the workload: four 10 ms traces a call
    refs = {"encoder": Reference(clock.costing(0.010), units=10)}
    work = Workload("filter_short", "encoder", clock.costing(0.040), "four traces", units=4, alternations=3)
    measured = measure(refs, [work], rounds=2)["filter_short"]
    assert measured["ratio"] == pytest.approx(10.0)
    assert (measured["ms"], measured["reference_ms"]) == (pytest.approx(10.0), pytest.approx(1.0))
    assert measured["spread"] == pytest.approx(0.0)


def test_a_workload_missing_from_the_baseline_is_reported_not_failed():
    measured = {"rules_2k_matches": {"ratio": 0.82}, "filter_short": {"ratio": 40.0}, "filter_3k": {"ratio": 90.0}}
    assert compare(measured, {"rules_2k_matches": 0.81, "filter_3k": 50.0}, 0.25) == {
        "rules_2k_matches": "ok", "filter_short": "no baseline", "filter_3k": "SLOWER"}


def test_a_workload_with_its_own_threshold_is_judged_by_it():
    measured = {"rules_2k_matches": {"ratio": 1.06}, "segment_2k": {"ratio": 0.62}}  # both about +30%
    base = {"rules_2k_matches": 0.8355, "segment_2k": 0.48}
    assert compare(measured, base, 0.25, {"rules_2k_matches": regression_guard.RE2_THRESHOLD, "segment_2k": None}) == {
        "rules_2k_matches": "ok", "segment_2k": "SLOWER"}
    assert compare({"rules_2k_matches": {"ratio": 1.30}}, base, 0.25, {"rules_2k_matches": 0.5}) == {
        "rules_2k_matches": "SLOWER"}  # +56%


def _fake_run(monkeypatch, ratios: dict[str, float]) -> None:
    """`main` over fake workloads whose every measurement reads `ratios`."""
    refs = {"encoder": Reference(lambda: None)}
    guarded = [Workload(name, "encoder", lambda: None, name) for name in ratios]
    monkeypatch.setattr(regression_guard, "workloads", lambda with_model: (refs, guarded))
    monkeypatch.setattr(regression_guard, "measure", lambda refs, ws, rounds: {
        w.name: {"ratio": ratios[w.name], "spread": 0.0, "ms": 1.0, "reference_ms": 1.0} for w in ws})


def test_an_older_cpu_entry_without_the_filter_workloads_passes(tmp_path, monkeypatch, capsys):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"threshold": 0.25, "machines": [_entry("Another CPU", 0.81)]}))
    _fake_run(monkeypatch, {"rules_2k_matches": 0.85, "filter_short": 40.0})
    assert regression_guard.main(["--baseline", str(path)]) == 0
    out = capsys.readouterr().out
    assert "no baseline" in out and "passed" in out


def test_a_regression_seen_twice_fails(tmp_path, monkeypatch, capsys):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"threshold": 0.25, "machines": [_entry("This CPU", 0.81, "family 6 model 1")]}))
    monkeypatch.setattr(regression_guard, "machine", lambda: {"cpu": "This CPU", "cpu_id": "family 6 model 1"})
    _fake_run(monkeypatch, {"rules_2k_matches": 1.2, "filter_short": 40.0})
    assert regression_guard.main(["--baseline", str(path)]) == 1
    assert "FAILED: rules_2k_matches" in capsys.readouterr().out


def test_slower_than_another_cpus_baseline_is_reported_not_failed(tmp_path, monkeypatch, capsys):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"threshold": 0.25, "machines": [_entry("This CPU", 0.81)]}))  # no cpu_id: older
    monkeypatch.setattr(regression_guard, "machine", lambda: {"cpu": "This CPU", "cpu_id": "family 6 model 1"})
    _fake_run(monkeypatch, {"rules_2k_matches": 1.2, "filter_short": 40.0})
    assert regression_guard.main(["--baseline", str(path)]) == 0
    out = capsys.readouterr().out
    assert "not failed: rules_2k_matches" in out and "--update-baseline" in out


def test_updating_keeps_the_files_other_keys():
    baselines = {"threshold": 0.25, "note": "kept", "machines": [_entry("Intel Xeon", 1.05)]}
    assert with_entry(baselines, _entry("Intel Xeon", 1.10), 0.3) == {
        "threshold": 0.3, "note": "kept", "machines": [_entry("Intel Xeon", 1.10)]}

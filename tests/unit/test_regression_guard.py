"""The regression guard's baseline file: one entry per CPU model, picked by the CPU it runs on."""

from __future__ import annotations

import json

from benchmarks.regression_guard import baseline_for, load_baselines, with_entry


def _entry(cpu: str, ratio: float) -> dict:
    return {"machine": {"cpu": cpu}, "commit": "c", "ratios": {"rules_2k_matches": ratio}}


def test_the_entry_of_this_cpu_is_used_else_the_first(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"threshold": 0.25, "machines": [_entry("AMD EPYC", 0.81), _entry("Intel Xeon", 1.05)]}))
    baselines = load_baselines(path)
    assert baseline_for(baselines, "Intel Xeon")["ratios"]["rules_2k_matches"] == 1.05
    assert baseline_for(baselines, "Some ARM")["ratios"]["rules_2k_matches"] == 0.81


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

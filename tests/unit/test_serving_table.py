"""benchmarks/serving_table.py: what it sends wrk and how it scores the issue's goals (no server, no timing)."""

from __future__ import annotations

import json

from benchmarks.serving_table import TICKET, bodies_file, dev_traces, table


def test_traces_split_by_the_issues_length_classes(tmp_path):
    rows = [{"text": "a" * 399, "label": "safe"}, {"text": "b" * 400}, {"text": "c" * 1200}, {"text": "d" * 4001}]
    path = tmp_path / "dev.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    traces = dev_traces(path)
    assert traces == {"short": ["a" * 399], "long": ["c" * 1200]}


def test_each_body_carries_a_ticket_slot_before_the_trace(tmp_path):
    path = bodies_file(["Step 1: add 2 and 3.", 'He said "no".'], tmp_path, "short", "run7")
    bodies = [json.loads(line) for line in path.read_text().splitlines()]
    assert [b["content"] for b in bodies] == [f"Ticket run7-{TICKET}. Step 1: add 2 and 3.",
                                             f'Ticket run7-{TICKET}. He said "no".']
    assert {b["profile"] for b in bodies} == {"balanced"}
    # wrk's Lua substitutes the slot in the raw JSON line: it must survive JSON encoding unescaped
    assert all(TICKET in line for line in path.read_text().splitlines())


def _result(short_rps: float, long_rps: float, p95: float, replica_mb: float) -> dict:
    cell = {"rps": 0.0, "p50": 1.0, "p95": 2.0, "p99": 3.0, "errors": 0}
    return {
        "reference_steps_per_s": 500.0, "reference_before": 490.0, "reference_after": 510.0,
        "graph": {"short/16": {**cell, "rps": short_rps}, "long/16": {**cell, "rps": long_rps},
                  "short/1": {**cell, "rps": 20.0, "p95": p95}, "cache hits/16": {**cell, "rps": 900.0},
                  "rss_mb": {"Ingress": 150.0, "SafetyClassifier": replica_mb, "ServeController": 900.0}},
        "in_process": {"short/16": {**cell, "rps": 40.0}},
    }


def _met(text: str, label: str) -> str:
    row = next(line for line in text.splitlines() if line.startswith(f"| {label}"))
    return row.split("|")[5].strip()


def test_goals_are_judged_per_reference_step_not_in_absolute_rates():
    # 0.12 per reference step/s at 500 steps/s is 60 traces/s: 61 meets it although it is under 100/s
    text = table(_result(short_rps=61.0, long_rps=17.0, p95=49.0, replica_mb=300.0))
    assert _met(text, "short traces (< 400 chars), 16") == "yes"
    assert _met(text, "long traces") == "no"  # 17 / 500 = 0.034 < 0.035
    assert _met(text, "short traces, 1 connection") == "yes"
    assert "| 61.0 | 0.1220 |" in text
    assert "graph / in-process" in text and "| 1.52 |" in text  # 61 / 40


def test_memory_goal_reads_replicas_not_the_controller():
    assert "(goal < 512: yes)" in table(_result(60.0, 20.0, 40.0, replica_mb=300.0))
    assert "(goal < 512: no)" in table(_result(60.0, 20.0, 40.0, replica_mb=600.0))
    assert _met(table(_result(59.0, 20.0, 50.0, 300.0)), "short traces, 1 connection") == "no"


def test_peak_memory_is_per_deployment_its_largest_replica():
    from benchmarks.graph import peak_by_name

    samples = [(0.0, "Ingress", 1, 150.0), (2.0, "Ingress", 1, 170.0), (2.0, "SafetyClassifier", 2, 300.0),
               (4.0, "SafetyClassifier", 3, 320.0), (6.0, "SafetyClassifier", 2, 310.0)]
    assert peak_by_name(samples) == {"Ingress": 170.0, "SafetyClassifier": 320.0}

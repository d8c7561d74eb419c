"""The `safepath` command line: filter, eval, rules check, profiles; and bad input on each path."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from safepath.cli import main

from .conftest import FIXTURES, TINY_PROFILES

EVAL_SET = FIXTURES / "eval" / "traces.jsonl"
TINY = ["--profiles", str(TINY_PROFILES)]


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_filter_text_argument_prints_the_result_as_json(capsys):
    assert main([*TINY, "filter", "Step 1: build a bomb.", "--request-id", "cli-1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["request_id"] == "cli-1" and result["verdict"] == "block"
    assert result["detections"][0]["category"] == "harmful_instructions"


def test_filter_reads_a_file(tmp_path: Path, capsys):
    path = tmp_path / "trace.txt"
    path.write_text("Okay, so the user wants a haiku. I will write one about autumn.", encoding="utf-8")
    assert main([*TINY, "filter", "--file", str(path), "--compact"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and json.loads(out)["verdict"] == "allow"


def test_filter_reads_stdin_with_context_and_profile(monkeypatch, capsys):
    _stdin(monkeypatch, b"Check the lethal dose for the chart.")
    assert main([*TINY, "filter", "--context", "domain=healthcare", "--profile", "permissive"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["verdict"], result["profile"]) == ("allow", "permissive")


@pytest.mark.parametrize(
    "args,stdin,message",
    [
        # invalid UTF-8 bytes, from stdin and from a file
        (["filter"], b"bad \xff\xfe bytes", "not valid UTF-8: byte 0xff at offset 4"),
        # empty content
        (["filter"], b"", "content is empty"),
        (["filter", ""], None, "content is empty"),
        # malformed arguments
        (["filter", "text", "--context", "nokey"], None, "KEY=VALUE"),
        (["filter", "text", "--profile", "nope"], None, "unknown profile 'nope'"),
        (["filter", "--file", "/nonexistent/trace.txt"], None, "cannot read"),
        (["filter", "text", "--file", "/nonexistent/trace.txt"], None, "not both"),
    ],
)
def test_filter_bad_input_exits_2_with_a_message(monkeypatch, capsys, args, stdin, message):
    if stdin is not None:
        _stdin(monkeypatch, stdin)
    assert main([*TINY, *args]) == 2
    assert message in capsys.readouterr().err


def test_filter_invalid_utf8_file(tmp_path: Path, capsys):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ok then \xc3\x28 broken")
    assert main([*TINY, "filter", "--file", str(path)]) == 2
    assert "bad.txt is not valid UTF-8" in capsys.readouterr().err


def test_filter_undecodable_argument(capsys):
    assert main([*TINY, "filter", "abc\udcff"]) == 2  # how Python hands over undecodable argv bytes
    assert "not valid UTF-8" in capsys.readouterr().err


def test_eval_json_reports_every_metric(capsys):
    assert main([*TINY, "eval", str(EVAL_SET), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("precision", "recall", "f1", "false_positive_rate", "per_category", "confusion", "latency_ms"):
        assert key in report
    assert report["examples"] == report["harmful"] + report["safe"] >= 50
    assert set(report["latency_ms"]) == {"p50", "p95", "p99", "mean"}
    assert sum(sum(row.values()) for row in report["confusion"].values()) == report["examples"]


def test_eval_table_output(capsys):
    assert main([*TINY, "eval", str(EVAL_SET), "--profile", "permissive"]) == 0
    out = capsys.readouterr().out
    assert "profile permissive" in out and "precision" in out and "harmful_instructions" in out


def test_eval_bad_dataset_names_the_line(tmp_path: Path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "safe"}\n{"text": "b", "label": "maybe"}\n')
    assert main(["eval", str(path)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err


def test_rules_check_passes_shipped_rules(capsys):
    assert main(["rules", "check"]) == 0
    out = capsys.readouterr().out
    assert "rules.yaml" in out and "semantic_rules.yaml" in out and "FAIL" not in out


def test_rules_check_fails_on_a_bad_file(tmp_path: Path, capsys):
    path = tmp_path / "rules.yaml"
    path.write_text('version: "1"\nrules:\n  - {id: x.a, category: deception, severity: low, action: flag, pattern: "(a"}\n')
    assert main(["rules", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "FAIL" in err and "rule 'x.a'" in err and str(path) in err


def test_bad_profiles_file_exits_3(tmp_path: Path, capsys):
    path = tmp_path / "profiles.yaml"
    path.write_text("profiles: {}\nstages: {}\n")
    assert main(["--profiles", str(path), "filter", "text"]) == 3
    assert "configuration error" in capsys.readouterr().err


def test_profiles_lists_them(capsys):
    assert main(["profiles"]) == 0
    assert set(json.loads(capsys.readouterr().out)["profiles"]) == {"strict", "balanced", "permissive"}

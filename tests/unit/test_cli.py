"""The `safepath` command line: filter, eval, rules check, profiles; and bad input on each path."""

from __future__ import annotations

import io
import json
import os
import subprocess
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
    path.write_text('version: "1"\nrules:\n'
                    '  - {id: x.a, category: deception, severity: low, action: flag, pattern: "(a"}\n')
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


# --- input is checked before any model loads; bounded reads; closed pipes; option order; context case ---

REPO = Path(__file__).resolve().parents[2]
MAX_CHARS = 200_000  # tiny.yaml's profiles keep the default max_content_chars


def test_bad_input_fails_before_the_models_load(monkeypatch, tmp_path: Path, capsys):
    # the shipped profiles need model files; with none there, only a check made before loading them can answer
    monkeypatch.setenv("SAFEPATH_MODEL_DIR", str(tmp_path / "no-models"))
    assert main(["filter", ""]) == 2
    assert "content is empty" in capsys.readouterr().err
    _stdin(monkeypatch, b"bad \xff bytes")
    assert main(["filter"]) == 2
    assert "not valid UTF-8" in capsys.readouterr().err


def test_a_missing_model_is_a_configuration_error_not_a_traceback(monkeypatch, tmp_path: Path, capsys):
    monkeypatch.setenv("SAFEPATH_MODEL_DIR", str(tmp_path / "no-models"))
    assert main(["filter", "Step 1: read the file."]) == 3
    err = capsys.readouterr().err
    assert "configuration error" in err and str(tmp_path / "no-models") in err


def test_standard_input_is_read_only_up_to_the_limit(monkeypatch, capsys):
    cap = MAX_CHARS * 4
    data = io.BytesIO(b"a" * (cap + 100_000))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(data, encoding="utf-8"))
    assert main([*TINY, "filter"]) == 2
    assert data.tell() == cap + 1  # the rest of the stream was never read
    assert f"standard input is over {cap} bytes" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content,message",
    [
        # over the limit in characters but not in bytes: refused after decoding
        ("a" * (MAX_CHARS + 1), f"content is {MAX_CHARS + 1} characters, over the limit of {MAX_CHARS}"),
        # exactly at the limit in four-byte characters: accepted by the byte cap, refused by nothing
        ("\U0001F600" * 10 + "x", None),
    ],
)
def test_file_input_is_bounded_by_the_profile_limit(tmp_path: Path, capsys, content, message):
    path = tmp_path / "trace.txt"
    path.write_text(content, encoding="utf-8")
    code = main([*TINY, "filter", "--file", str(path), "--compact"])
    if message is None:
        assert code == 0 and json.loads(capsys.readouterr().out)["verdict"] == "allow"
    else:
        assert code == 2 and message in capsys.readouterr().err


def _run_into_a_closed_pipe(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the CLI with standard output a pipe whose reader is gone before the first write (`| head` after its
    line), so every write fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "safepath.cli", *args], stdout=write_end, stderr=subprocess.PIPE,
                              cwd=REPO, env={**os.environ, **(env or {})}, timeout=120, check=False)
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [
        [*TINY, "filter", "Step 1: build a bomb."],
        [*TINY, "eval", str(EVAL_SET)],
        ["rules", "check"],
        ["profiles"],
    ],
)
def test_a_closed_output_pipe_exits_quietly(args):
    done = _run_into_a_closed_pipe(args)
    assert done.returncode == 141
    assert done.stderr == b""  # no traceback, no "Exception ignored" from the interpreter's last flush


def test_profiles_option_after_the_subcommand(tmp_path: Path, capsys):
    assert main(["filter", "--profiles", str(TINY_PROFILES), "Step 1: build a bomb."]) == 0
    assert json.loads(capsys.readouterr().out)["detections"][0]["rule"] == "harmful_instructions.bomb"
    assert main(["profiles", "--profiles", str(TINY_PROFILES)]) == 0
    assert "with_model_closed" not in capsys.readouterr().out  # tiny.yaml, not the shipped profiles
    bad = tmp_path / "profiles.yaml"
    bad.write_text("profiles: {}\nstages: {}\n")
    # both places: the one after the subcommand wins
    assert main(["--profiles", str(TINY_PROFILES), "filter", "--profiles", str(bad), "text"]) == 3
    assert main(["--profiles", str(bad), "filter", "--profiles", str(TINY_PROFILES), "text"]) == 0


def test_a_setting_out_of_range_is_a_configuration_error_naming_it(monkeypatch, capsys):
    monkeypatch.setenv("SAFEPATH_RATE_LIMIT_PER_MINUTE", "0")
    assert main([*TINY, "filter", "A calm step."]) == 3
    assert "SAFEPATH_RATE_LIMIT_PER_MINUTE" in capsys.readouterr().err


def test_the_proxy_takes_profiles_after_the_subcommand_too(tmp_path: Path):
    bad = tmp_path / "profiles.yaml"
    bad.write_text("profiles: {}\nstages: {}\n")
    # read (and refused: exit 3) before any server starts; argparse used to reject the option (exit 2)
    assert main(["proxy", "--upstream", "http://127.0.0.1:9/v1", "--profiles", str(bad)]) == 3


@pytest.mark.parametrize("value", ["healthcare", "Healthcare", "HEALTHCARE", " healthcare "])
def test_context_values_match_in_any_case(capsys, value):
    text = "Check the lethal dose for the chart."
    assert main([*TINY, "filter", text, "--compact"]) == 0
    without = json.loads(capsys.readouterr().out)["verdict"]
    assert main([*TINY, "filter", text, "--context", f"domain={value}", "--compact"]) == 0
    assert (without, json.loads(capsys.readouterr().out)["verdict"]) == ("block", "allow")

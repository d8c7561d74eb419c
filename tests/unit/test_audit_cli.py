"""`safepath audit query` and `safepath audit retention` against a real SQLite audit file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from safepath import SafePathFilter
from safepath.audit import AuditRecord, read_archive
from safepath.audit.sqlite import SqliteBackend
from safepath.cli import main

from .audit.test_records import BLOCK_TEXT, REDACT_TEXT
from .conftest import TINY_PROFILES

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def audit_url(tmp_path: Path, tiny_filter: SafePathFilter) -> str:
    """An audit file holding two blocks (one 10 days old), a redact, and counters for two more allows."""
    now = datetime.now(UTC)
    bucket = now.replace(second=0, microsecond=0)
    records = [AuditRecord.from_result(t, tiny_filter.filter(t)) for t in (BLOCK_TEXT, REDACT_TEXT)]
    old = AuditRecord.from_result(BLOCK_TEXT, tiny_filter.filter(BLOCK_TEXT), ts=now - timedelta(days=10))
    with closing(SqliteBackend(tmp_path / "audit.db")) as backend:
        backend.write([*records, old], {(bucket, "balanced", "allow"): 2, (bucket, "balanced", "block"): 1,
                                        (bucket, "balanced", "redact"): 1})
    return f"sqlite:///{tmp_path}/audit.db"


def test_query_prints_a_table_by_category(audit_url: str, capsys):
    assert main(["audit", "query", "--url", audit_url, "--since", "24h"]) == 0
    out = capsys.readouterr().out
    assert "4 decisions, 2 recorded" in out
    row = next(line for line in out.splitlines() if line.startswith("harmful_instructions"))
    assert row.split()[1:3] == ["1", "25.00%"] and "harmful_instructions.bomb (1)" in row


def test_query_json_by_verdict_reads_the_url_from_the_environment(audit_url: str, monkeypatch, capsys):
    monkeypatch.setenv("SAFEPATH_AUDIT_URL", audit_url)
    assert main(["audit", "query", "--since", "30d", "--group-by", "verdict", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["group_by"] == "verdict" and summary["recorded"] == 3
    assert {g["key"]: g["count"] for g in summary["groups"]} == {"allow": 2, "block": 2, "redact": 1}


@pytest.mark.parametrize(
    "args,message,code",
    [
        (["audit", "query", "--since", "yesterday"], "expected a window", 2),
        (["audit", "query", "--url", "mysql://h/db"], "sqlite:/// or postgresql://", 3),
        (["audit", "retention", "--keep-days", "-1"], "--keep-days", 2),
    ],
)
def test_bad_arguments_exit_with_a_message(args, message, code, monkeypatch, tmp_path: Path, capsys):
    monkeypatch.setenv("SAFEPATH_AUDIT_URL", f"sqlite:///{tmp_path}/a.db")
    assert main(args) == code
    assert message in capsys.readouterr().err


def test_a_missing_url_is_an_input_error(monkeypatch, capsys):
    monkeypatch.delenv("SAFEPATH_AUDIT_URL", raising=False)
    assert main(["audit", "query"]) == 2
    assert "SAFEPATH_AUDIT_URL" in capsys.readouterr().err


def test_an_unreadable_database_exits_unavailable(tmp_path: Path, capsys):
    (tmp_path / "audit.db").write_bytes(b"not a database, just bytes " * 100)
    assert main(["audit", "query", "--url", f"sqlite:///{tmp_path}/audit.db"]) == 4
    assert "audit query failed" in capsys.readouterr().err


def test_retention_archives_and_removes_old_records(audit_url: str, tmp_path: Path, capsys):
    archive_dir = tmp_path / "archive"
    assert main(["audit", "retention", "--url", audit_url, "--keep-days", "7", "--archive-dir", str(archive_dir)]) == 0
    assert "removed 1 audit records" in capsys.readouterr().out
    (archive,) = archive_dir.iterdir()
    assert [r.verdict for r in read_archive(archive)] == ["block"]
    with closing(SqliteBackend(tmp_path / "audit.db")) as backend:
        assert backend.count() == 2


@pytest.mark.parametrize("command", [["query"], ["retention", "--keep-days", "7"]])
def test_a_missing_database_is_an_error_and_is_not_created(tmp_path: Path, capsys, command):
    path = tmp_path / "typo" / "audit.db"
    assert main(["audit", *command, "--url", f"sqlite:///{path}"]) == 3
    assert f"the audit database {path} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()


def _cli(args: list[str], env: dict[str, str], stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "safepath.cli", *args], stdout=stdout, stderr=subprocess.PIPE,
                          cwd=REPO, env={**os.environ, **env}, timeout=120, check=False)


def test_a_bad_database_folder_exits_3_with_a_message(tmp_path: Path):
    (tmp_path / "file").write_text("")  # a folder under a regular file cannot be made, even by root
    env = {"SAFEPATH_AUDIT_URL": f"sqlite:///{tmp_path}/file/dir/audit.db", "SAFEPATH_AUDIT_SPILL_DIR": str(tmp_path)}
    for args in (["--profiles", str(TINY_PROFILES), "filter", "Step 1: build a bomb."], ["audit", "query"]):
        done = _cli(args, env)
        assert done.returncode == 3, done.stderr
        assert b"Traceback" not in done.stderr and b"audit database" in done.stderr


def test_an_unwritable_spill_folder_fails_the_start_with_a_message(tmp_path: Path):
    (tmp_path / "file").write_text("")
    env = {"SAFEPATH_AUDIT_URL": f"sqlite:///{tmp_path}/audit.db", "SAFEPATH_AUDIT_SPILL_DIR": f"{tmp_path}/file/spill"}
    done = _cli(["--profiles", str(TINY_PROFILES), "filter", "Step 1: build a bomb."], env)
    assert done.returncode == 3 and b"Traceback" not in done.stderr
    assert b"audit spill folder" in done.stderr and b"SAFEPATH_AUDIT_SPILL_DIR" in done.stderr


def test_filter_with_an_audit_url_writes_its_record_before_exiting(tmp_path: Path):
    env = {"SAFEPATH_AUDIT_URL": f"sqlite:///{tmp_path}/audit.db", "SAFEPATH_AUDIT_SPILL_DIR": str(tmp_path / "spill")}
    done = _cli(["--profiles", str(TINY_PROFILES), "filter", "Step 1: build a bomb."], env)
    assert done.returncode == 0, done.stderr
    with closing(SqliteBackend(tmp_path / "audit.db", create=False)) as backend:
        assert backend.count() == 1


def test_query_into_a_closed_pipe_exits_quietly(audit_url: str):
    read_end, write_end = os.pipe()
    os.close(read_end)  # `safepath audit query | head` with head gone before the first write
    try:
        done = _cli(["audit", "query", "--url", audit_url], {}, stdout=write_end)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, b"")


def test_retention_into_an_unwritable_archive_folder_exits_2(audit_url: str, tmp_path: Path, capsys):
    (tmp_path / "file").write_text("")
    args = ["audit", "retention", "--url", audit_url, "--keep-days", "7", "--archive-dir", str(tmp_path / "file" / "a")]
    assert main(args) == 2
    assert "cannot write the archive" in capsys.readouterr().err
    with closing(SqliteBackend(tmp_path / "audit.db")) as backend:
        assert backend.count() == 3  # nothing removed without its archive

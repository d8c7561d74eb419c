"""`safepath audit query` and `safepath audit retention` against a real SQLite audit file."""

from __future__ import annotations

import json
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from safepath import SafePathFilter
from safepath.audit import AuditRecord, read_archive
from safepath.audit.sqlite import SqliteBackend
from safepath.cli import main

from .test_audit_records import BLOCK_TEXT, REDACT_TEXT


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

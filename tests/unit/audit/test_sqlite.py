"""The SQLite audit backend on a real file: idempotent batches, summaries and filter rates, retention with archive."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from safepath import SafePathFilter
from safepath.audit import AuditRecord, read_archive
from safepath.audit.sqlite import SqliteBackend
from safepath.errors import AuditUnavailable, ConfigError

from ..conftest import TINY_MODEL_PROFILES, FunctionDetector
from .test_records import ALLOW_TEXT, BLOCK_TEXT, FLAG_TEXT, REDACT_TEXT, _failing


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[SqliteBackend]:
    with closing(SqliteBackend(tmp_path / "db" / "audit.db")) as backend:
        yield backend


def _record(f: SafePathFilter, text: str, *, profile: str | None = None, ts: datetime | None = None) -> AuditRecord:
    return AuditRecord.from_result(text, f.filter(text, profile=profile), ts=ts)


def _minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


def test_tables_are_created_in_wal_mode(backend: SqliteBackend):
    backend.write([])
    with closing(sqlite3.connect(backend.path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"audit_records", "audit_findings", "audit_decision_counts"} <= tables
    assert {"audit_records_ts", "audit_records_verdict", "audit_findings_category_ts"} <= indexes


def test_writing_a_batch_twice_stores_each_record_once(backend: SqliteBackend, tiny_filter: SafePathFilter):
    batch = [_record(tiny_filter, t) for t in (BLOCK_TEXT, REDACT_TEXT, FLAG_TEXT)]
    backend.write(batch)
    backend.write(batch)
    backend.write(batch[:1] + [_record(tiny_filter, BLOCK_TEXT)])  # one known, one new
    assert backend.count() == 4
    with closing(sqlite3.connect(backend.path)) as conn:
        assert conn.execute("SELECT count(*) FROM audit_findings").fetchone()[0] == 4


def test_a_failed_batch_stores_nothing(backend: SqliteBackend, tiny_filter: SafePathFilter):
    good = _record(tiny_filter, BLOCK_TEXT)
    backend.write([])  # creates the tables
    with closing(sqlite3.connect(backend.path)) as conn:  # the database refuses the batch's second row
        conn.execute("CREATE TRIGGER reject BEFORE INSERT ON audit_records WHEN NEW.request_id = 'bad' "
                     "BEGIN SELECT RAISE(ABORT, 'rejected'); END")
        conn.commit()
    bad = good.model_copy(update={"record_id": "x" * 32, "request_id": "bad"})
    with pytest.raises(sqlite3.IntegrityError):
        backend.write([good, bad])
    assert backend.count() == 0


def test_summary_by_category_uses_every_counted_decision_as_denominator(backend: SqliteBackend,
                                                                          tiny_filter: SafePathFilter):
    now = datetime.now(UTC)
    records = [_record(tiny_filter, t) for t in (BLOCK_TEXT, BLOCK_TEXT, REDACT_TEXT, FLAG_TEXT)]
    # 4 recorded decisions plus 16 allows that were only counted
    counts = {(_minute(now), "balanced", "block"): 2, (_minute(now), "balanced", "redact"): 1,
              (_minute(now), "balanced", "flag"): 1, (_minute(now), "balanced", "allow"): 16}
    backend.write(records, counts)
    summary = backend.query(timedelta(hours=1), "category")
    assert (summary.total_decisions, summary.recorded) == (20, 4)
    groups = {g.key: g for g in summary.groups}
    assert set(groups) == {"harmful_instructions", "reward_hacking", "manipulation"}
    assert (groups["harmful_instructions"].count, groups["harmful_instructions"].rate) == (2, 0.1)
    assert groups["harmful_instructions"].top_reasons == [("harmful_instructions.bomb", 2)]
    assert summary.groups[0].key == "harmful_instructions"  # most frequent first


def test_summary_by_verdict_and_profile_includes_unrecorded_allows(backend: SqliteBackend, tiny_filter: SafePathFilter):
    now = datetime.now(UTC)
    records = [_record(tiny_filter, BLOCK_TEXT), _record(tiny_filter, REDACT_TEXT, profile="permissive")]
    counts = {(_minute(now), "balanced", "block"): 1, (_minute(now), "permissive", "flag"): 1,
              (_minute(now), "balanced", "allow"): 2}
    backend.write(records, counts)
    by_verdict = {g.key: g for g in backend.query(timedelta(hours=1), "verdict").groups}
    assert {k: g.count for k, g in by_verdict.items()} == {"allow": 2, "block": 1, "flag": 1}
    assert by_verdict["allow"].rate == 0.5 and by_verdict["allow"].top_reasons == []
    assert by_verdict["flag"].top_reasons == [("reward_hacking.special_case_tests", 1)]
    by_profile = {g.key: g.count for g in backend.query(timedelta(hours=1), "profile").groups}
    assert by_profile == {"balanced": 3, "permissive": 1}


def test_summary_counts_records_when_no_counters_exist(backend: SqliteBackend, tiny_filter: SafePathFilter):
    backend.write([_record(tiny_filter, BLOCK_TEXT), _record(tiny_filter, REDACT_TEXT)])
    summary = backend.query(timedelta(hours=1), "verdict")
    assert summary.total_decisions == 2
    assert {(g.key, g.count, g.rate) for g in summary.groups} == {("block", 1, 0.5), ("redact", 1, 0.5)}


def test_summary_window_leaves_out_older_records(backend: SqliteBackend, tiny_filter: SafePathFilter):
    now = datetime.now(UTC)
    backend.write([_record(tiny_filter, BLOCK_TEXT, ts=now - timedelta(days=2)), _record(tiny_filter, REDACT_TEXT)],
                  {(_minute(now - timedelta(days=2)), "balanced", "block"): 1})
    summary = backend.query(timedelta(hours=24), "verdict")
    assert [(g.key, g.count) for g in summary.groups] == [("redact", 1)]
    assert backend.query(now - timedelta(days=3), "verdict").total_decisions == 2


def test_query_rejects_an_unknown_group_by(backend: SqliteBackend):
    with pytest.raises(ValueError, match="group_by"):
        backend.query(timedelta(hours=1), "request_id; DROP TABLE audit_records")  # type: ignore[arg-type]


def test_retention_archives_then_deletes_older_records(backend: SqliteBackend, tiny_filter: SafePathFilter,
                                                       tmp_path: Path):
    now = datetime.now(UTC)
    records = [_record(tiny_filter, BLOCK_TEXT, ts=now - timedelta(days=d)) for d in range(6)]
    backend.write(records, {(_minute(now - timedelta(days=5)), "balanced", "block"): 1,
                            (_minute(now), "balanced", "block"): 1})
    removed = backend.apply_retention(now - timedelta(days=3, hours=1), tmp_path / "archive")
    assert removed == 2
    (archive,) = (tmp_path / "archive").iterdir()
    assert archive.name.endswith(".jsonl.gz")
    assert sorted(read_archive(archive), key=lambda r: r.ts) == sorted(records[4:], key=lambda r: r.ts)
    assert backend.count() == 4
    summary = backend.query(now - timedelta(days=30), "category")
    assert summary.recorded == 4 and summary.groups[0].count == 4  # findings went with their records
    with closing(sqlite3.connect(backend.path)) as conn:
        assert conn.execute("SELECT count(*) FROM audit_decision_counts").fetchone()[0] == 1


def test_retention_without_archive_only_deletes(backend: SqliteBackend, tiny_filter: SafePathFilter, tmp_path: Path):
    now = datetime.now(UTC)
    backend.write([_record(tiny_filter, BLOCK_TEXT, ts=now - timedelta(days=d)) for d in (0, 10)])
    assert backend.apply_retention(now - timedelta(days=7)) == 1
    assert backend.apply_retention(now - timedelta(days=7)) == 0
    assert backend.count() == 1


def test_an_allow_recorded_with_record_all_has_no_findings(backend: SqliteBackend, tiny_filter: SafePathFilter):
    backend.write([_record(tiny_filter, ALLOW_TEXT)])
    assert backend.query(timedelta(hours=1), "category").groups == []
    assert [(g.key, g.top_reasons) for g in backend.query(timedelta(hours=1), "verdict").groups] == [("allow", [])]


# The records table as the first release created it, before the metadata column.
_OLD_RECORDS_TABLE = """
    CREATE TABLE audit_records (
        record_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, ts TEXT NOT NULL, profile TEXT NOT NULL,
        verdict TEXT NOT NULL, categories TEXT NOT NULL, scores TEXT NOT NULL, reasons TEXT NOT NULL,
        latency_ms TEXT NOT NULL, model_versions TEXT NOT NULL, content_hash TEXT NOT NULL,
        excerpt TEXT NOT NULL, content TEXT, degraded INTEGER NOT NULL, cached INTEGER NOT NULL);
    INSERT INTO audit_records VALUES ('old1', 'r-old', '2026-01-01T00:00:00.000000Z', 'balanced', 'block', '[]', '{}',
        '[]', '{}', '{}', 'abc', 'x', NULL, 0, 0);
"""


def test_an_older_file_gains_the_metadata_column_and_keeps_its_records(tmp_path: Path, tiny_filter: SafePathFilter):
    path = tmp_path / "audit.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(_OLD_RECORDS_TABLE)
    record = AuditRecord.from_result(BLOCK_TEXT, tiny_filter.filter(BLOCK_TEXT), metadata={"tenant": "acme"})
    with closing(SqliteBackend(path)) as backend:
        backend.write([record])
        assert backend.count() == 2
        backend.apply_retention(datetime.now(UTC) + timedelta(minutes=1), tmp_path / "archive")
    (archive,) = (tmp_path / "archive").iterdir()
    assert {r.record_id: r.metadata for r in read_archive(archive)} == {"old1": None,
                                                                        record.record_id: {"tenant": "acme"}}


def test_an_older_file_gains_the_failed_stages_column_and_keeps_its_records(tmp_path: Path):
    path = tmp_path / "audit.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(_OLD_RECORDS_TABLE)
        conn.execute("ALTER TABLE audit_records ADD COLUMN metadata TEXT")  # as the release that added metadata left it
    with SafePathFilter(profiles=TINY_MODEL_PROFILES, detectors={"model": FunctionDetector(_failing)}) as f:
        record = AuditRecord.from_result(ALLOW_TEXT, f.filter(ALLOW_TEXT, profile="with_model_open"))
    with closing(SqliteBackend(path)) as backend:
        backend.write([record])
        assert backend.count() == 2
        backend.apply_retention(datetime.now(UTC) + timedelta(minutes=1), tmp_path / "archive")
    (archive,) = (tmp_path / "archive").iterdir()
    assert {r.record_id: r.failed_stages for r in read_archive(archive)} == {"old1": [], record.record_id: ["model"]}


def test_a_reader_never_creates_a_database(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        SqliteBackend(tmp_path / "missing" / "audit.db", create=False)
    assert not (tmp_path / "missing").exists()


def test_a_database_folder_that_cannot_be_created_is_a_config_error(tmp_path: Path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot create the folder of the audit database"):
        SqliteBackend(tmp_path / "file" / "sub" / "audit.db")


def test_a_reader_does_not_recreate_a_file_removed_after_it_opened(tmp_path: Path, tiny_filter: SafePathFilter):
    path = tmp_path / "audit.db"
    with closing(SqliteBackend(path)) as writer:
        writer.write([_record(tiny_filter, BLOCK_TEXT)])
    reader = SqliteBackend(path, create=False)
    try:
        assert reader.query(timedelta(hours=1), "verdict").recorded == 1
        reader.close()
        for leftover in tmp_path.iterdir():
            leftover.unlink()
        with pytest.raises(AuditUnavailable):
            reader.query(timedelta(hours=1), "verdict")
        assert list(tmp_path.iterdir()) == []
    finally:
        reader.close()

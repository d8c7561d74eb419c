"""AuditWriter over a real SQLite file: batching, counting every decision, spilling when the queue is full or the
database is unreachable, and replaying the spill file with every record arriving exactly once."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import prometheus_client
import pytest

from safepath import SafePathFilter
from safepath.audit import AuditRecord, AuditSettings, AuditWriter, open_audit, read_archive
from safepath.audit.sqlite import SqliteBackend
from safepath.metrics import Metrics
from safepath.streaming import StreamSession

from ..conftest import TINY_PROFILES
from .test_records import ALLOW_TEXT, BLOCK_TEXT, FLAG_TEXT, REDACT_TEXT


class Readout:
    """Metrics on a fresh prometheus registry, read back by name and label."""

    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self.metrics = Metrics("prometheus", registry=self.registry)

    def records(self, outcome: str) -> float:
        return self.registry.get_sample_value("safepath_audit_records_total", {"outcome": outcome}) or 0.0

    def errors(self, operation: str) -> float:
        return self.registry.get_sample_value("safepath_audit_errors_total", {"operation": operation}) or 0.0


@pytest.fixture
def readout() -> Readout:
    return Readout()


@pytest.fixture
def settings(tmp_path: Path) -> AuditSettings:
    # the spill file lives apart from the database folder, which some tests move away
    return AuditSettings(url=f"sqlite:///{tmp_path}/db/audit.db", spill_path=tmp_path / "spill" / "audit.jsonl",
                         flush_interval_s=0.02, retry_interval_s=0.05, connect_timeout_s=2.0)


@pytest.fixture
def writer(settings: AuditSettings, readout: Readout) -> Iterator[AuditWriter]:
    with open_audit(settings, readout.metrics) as w:
        yield w


def _ids(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT record_id FROM audit_records")]


def _records(f: SafePathFilter, n: int) -> list[AuditRecord]:
    result = f.filter(BLOCK_TEXT)
    return [AuditRecord.from_result(BLOCK_TEXT, result) for _ in range(n)]


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_submit_decision_records_non_allows_and_counts_every_decision(writer: AuditWriter, settings: AuditSettings,
                                                                      tiny_filter: SafePathFilter, readout: Readout):
    texts = [ALLOW_TEXT] * 6 + [BLOCK_TEXT, REDACT_TEXT, FLAG_TEXT]
    for text in texts:
        writer.submit_decision(tiny_filter.filter(text), text)
    assert writer.flush(5)
    assert len(_ids(settings.sqlite_path)) == 3
    assert readout.records("written") == 3
    summary = writer.query(timedelta(hours=1), "verdict")
    assert summary.total_decisions == 9
    assert {g.key: g.count for g in summary.groups} == {"allow": 6, "block": 1, "redact": 1, "flag": 1}
    assert readout.registry.get_sample_value("safepath_audit_queue_depth") == 0


def test_record_all_and_store_content_reach_the_database(settings: AuditSettings, readout: Readout,
                                                         tiny_filter: SafePathFilter):
    settings = settings.model_copy(update={"record_all": True, "store_content": True})
    with open_audit(settings, readout.metrics) as w:
        w.submit_decision(tiny_filter.filter(ALLOW_TEXT), ALLOW_TEXT)
        assert w.flush(5)
    with closing(sqlite3.connect(settings.sqlite_path)) as conn:
        assert conn.execute("SELECT verdict, content FROM audit_records").fetchall() == [("allow", ALLOW_TEXT)]


def test_a_full_queue_spills_without_blocking_and_every_record_arrives_once(settings: AuditSettings, readout: Readout,
                                                                             tiny_filter: SafePathFilter):
    settings = settings.model_copy(update={"queue_size": 5})
    records = _records(tiny_filter, 30)
    with open_audit(settings, readout.metrics) as w:
        with closing(SqliteBackend(settings.sqlite_path)) as backend:
            backend.write([])
        with closing(sqlite3.connect(settings.sqlite_path, isolation_level=None)) as lock:
            lock.execute("BEGIN IMMEDIATE")  # another writer (a retention job, say) holds the write lock
            w.submit(records[0])
            _wait_for(lambda: w.queue_depth == 0)  # the writer took it...
            # ...and lingers up to flush_interval_s for more before it writes and meets the lock; records submitted
            # while it lingers join its batch instead of the queue. Ten lingers' margin, so it is waiting on the lock.
            time.sleep(10 * settings.flush_interval_s)
            started = time.monotonic()
            for record in records[1:]:
                w.submit(record)
            assert time.monotonic() - started < 1.0  # never waited on the database
            # The writer holds what it took before the lock stopped it; the queue holds five; the rest went to the
            # spill file.
            spilled = readout.records("spilled")
            assert w.queue_depth == 5 and spilled >= 1
            lock.execute("ROLLBACK")
        _wait_for(lambda: not w.spill.pending())
        assert w.flush(5)
    ids = _ids(settings.sqlite_path)
    assert sorted(ids) == sorted(r.record_id for r in records)
    assert readout.records("replayed") == spilled
    assert readout.records("written") + readout.records("replayed") == len(records)


def test_unreachable_database_spills_then_replays_exactly_once(writer: AuditWriter, settings: AuditSettings,
                                                               readout: Readout, tiny_filter: SafePathFilter,
                                                               tmp_path: Path):
    before, during, after = _records(tiny_filter, 5), _records(tiny_filter, 40), _records(tiny_filter, 5)
    for record in before:
        writer.submit(record)
    assert writer.flush(5)
    db_dir = settings.sqlite_path.parent
    db_dir.rename(tmp_path / "db-away")  # the volume is gone: connecting fails
    for record in during:
        writer.submit(record)
    assert writer.flush(5)
    assert writer.down
    assert readout.records("spilled") == 40 and readout.errors("write") >= 1
    assert len(settings.spill_path.read_text().splitlines()) >= 40  # durable while the database is away
    (tmp_path / "db-away").rename(db_dir)  # and back
    for record in after:
        writer.submit(record)
    _wait_for(lambda: not writer.down and not writer.spill.pending())
    assert writer.flush(5)
    ids = _ids(settings.sqlite_path)
    assert len(ids) == len(set(ids)) == 50
    assert set(ids) == {r.record_id for r in before + during + after}
    assert readout.records("replayed") >= 40


def test_a_spill_left_by_a_crashed_process_is_replayed_on_start(settings: AuditSettings, readout: Readout,
                                                                tiny_filter: SafePathFilter):
    stored, lost = _records(tiny_filter, 3), _records(tiny_filter, 4)
    with closing(SqliteBackend(settings.sqlite_path)) as backend:
        backend.write(stored)
    # the crashed process had replayed the first three lines (they are in the database) but not deleted the file,
    # and died halfway through appending a line
    settings.spill_path.parent.mkdir(parents=True)
    lines = [json.dumps({"record": r.to_json_dict()}) for r in stored + lost]
    lines.append(json.dumps({"counts": [["2026-01-01T00:00:00+00:00", "balanced", "allow", 7]]}))
    settings.spill_path.write_text("\n".join(lines) + '\n{"record": {"record_id": "torn', encoding="utf-8")
    with open_audit(settings, readout.metrics) as w:
        _wait_for(lambda: not w.spill.pending())
    ids = _ids(settings.sqlite_path)
    assert len(ids) == len(set(ids)) == 7
    assert readout.records("replayed") == 7 and readout.records("dropped") == 1
    with closing(sqlite3.connect(settings.sqlite_path)) as conn:
        assert conn.execute("SELECT sum(n) FROM audit_decision_counts").fetchone()[0] == 7


def test_nothing_raises_into_the_caller_when_even_the_spill_fails(tmp_path: Path, readout: Readout,
                                                                  tiny_filter: SafePathFilter):
    settings = AuditSettings(url=f"sqlite:///{tmp_path}/db/audit.db", queue_size=1,
                             spill_path=tmp_path / "spill" / "spill.jsonl", flush_interval_s=0.02)
    with open_audit(settings, readout.metrics) as w:
        # both folders go after start-up (an unwritable one fails start-up instead)
        (tmp_path / "db").rename(tmp_path / "db-away")
        (tmp_path / "spill").rename(tmp_path / "spill-away")
        (tmp_path / "spill").write_text("")
        for _ in range(5):
            w.submit_decision(tiny_filter.filter(BLOCK_TEXT), BLOCK_TEXT)
        w.submit_decision(None, BLOCK_TEXT)  # type: ignore[arg-type]  # even a bug in the caller's argument
        assert w.flush(5)
    assert readout.records("dropped") == 6 and readout.errors("spill") >= 1
    assert readout.records("written") + readout.records("spilled") == 0


def test_records_survive_a_database_folder_that_cannot_be_written(tmp_path: Path, readout: Readout, monkeypatch,
                                                                  tiny_filter: SafePathFilter):
    # Default spill settings: the spill file must not live in the database's folder, or it fails with it.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    settings = AuditSettings(url=f"sqlite:///{tmp_path}/db/audit.db", flush_interval_s=0.02, retry_interval_s=0.05)
    records = _records(tiny_filter, 12)
    with open_audit(settings, readout.metrics) as w:
        w.submit(records[0])
        assert w.flush(5)
        (tmp_path / "db").rename(tmp_path / "db-away")
        (tmp_path / "db").write_text("")  # a file where the folder was: unwritable even for root
        for record in records[1:]:
            w.submit(record)
        assert w.flush(5) and w.down
        assert readout.records("spilled") == 11 and readout.records("dropped") == 0
        assert w.spill.path.is_relative_to(tmp_path / "cache")
        (tmp_path / "db").unlink()
        (tmp_path / "db-away").rename(tmp_path / "db")
        _wait_for(lambda: not w.down and not w.spill.pending())
    assert sorted(_ids(settings.sqlite_path)) == sorted(r.record_id for r in records)


def test_request_metadata_reaches_the_record_and_comes_back_from_an_archive(settings: AuditSettings, readout: Readout,
                                                                            tmp_path: Path):
    with open_audit(settings, readout.metrics) as w, SafePathFilter(profiles=TINY_PROFILES, audit=w) as f:
        f.filter(BLOCK_TEXT, metadata={"tenant": "acme", "stream_id": "s-1", "stream_steps": [0, 2]})
        f.filter(REDACT_TEXT)
        assert w.flush(5)
    with closing(SqliteBackend(settings.sqlite_path)) as backend:
        assert backend.apply_retention(datetime.now(UTC) + timedelta(minutes=1), tmp_path / "archive") == 2
    (archive,) = (tmp_path / "archive").iterdir()
    by_verdict = {r.verdict: r.metadata for r in read_archive(archive)}
    assert by_verdict == {"block": {"tenant": "acme", "stream_id": "s-1", "stream_steps": [0, 2]}, "redact": None}


def test_close_writes_out_the_queue_and_later_submits_spill(settings: AuditSettings, readout: Readout,
                                                            tiny_filter: SafePathFilter):
    records = _records(tiny_filter, 120)
    w = open_audit(settings.model_copy(update={"batch_size": 50}), readout.metrics)
    for record in records[:-1]:
        w.submit(record)
    w.close()
    assert not w._thread.is_alive()
    assert len(_ids(settings.sqlite_path)) == 119
    w.submit(records[-1])  # after close: kept in the spill file for the next process
    assert readout.records("spilled") == 1
    with open_audit(settings, readout.metrics) as again:
        _wait_for(lambda: not again.spill.pending())
    assert len(_ids(settings.sqlite_path)) == 120


def test_writers_sharing_a_spill_file_replay_it_once(settings: AuditSettings, readout: Readout,
                                                     tiny_filter: SafePathFilter, tmp_path: Path):
    # two replicas on one node with the same settings: one database, one spill file
    first, second = open_audit(settings, readout.metrics), open_audit(settings, readout.metrics)
    try:
        for w in (first, second):
            w.submit(_records(tiny_filter, 1)[0])
            assert w.flush(5)
        settings.sqlite_path.parent.rename(tmp_path / "db-away")
        submitted = []
        for w in (first, second):
            for _ in range(10):
                w.submit_decision(tiny_filter.filter(ALLOW_TEXT), ALLOW_TEXT)  # counted, not recorded
            records = _records(tiny_filter, 30)
            submitted += records
            for record in records:
                w.submit(record)
            assert w.flush(5) and w.down
        (tmp_path / "db-away").rename(settings.sqlite_path.parent)
        _wait_for(lambda: not first.down and not second.down and not first.spill.pending())
    finally:
        first.close()
        second.close()
    ids = _ids(settings.sqlite_path)
    assert len(ids) == len(set(ids)) == 62 and {r.record_id for r in submitted} <= set(ids)
    assert readout.records("replayed") == 60
    with closing(sqlite3.connect(settings.sqlite_path)) as conn:  # counters are added, so a double replay would show
        assert conn.execute("SELECT sum(n) FROM audit_decision_counts WHERE verdict = 'allow'").fetchone()[0] == 20


def test_a_spill_file_where_an_older_release_put_it_is_replayed_on_start(tmp_path: Path, readout: Readout,
                                                                         tiny_filter: SafePathFilter):
    settings = AuditSettings(url=f"sqlite:///{tmp_path}/db/audit.db", spill_dir=tmp_path / "spill",
                             flush_interval_s=0.02, retry_interval_s=0.05)
    (legacy,) = settings.legacy_spill_paths()
    assert legacy == tmp_path / "db" / "audit.db.spill.jsonl"  # beside the database, as before the spill folder
    legacy.parent.mkdir()
    lost = _records(tiny_filter, 3)
    legacy.write_text("".join(json.dumps({"record": r.to_json_dict()}) + "\n" for r in lost), encoding="utf-8")
    with open_audit(settings, readout.metrics) as w:
        _wait_for(lambda: readout.records("replayed") == 3)
        assert w.flush(5)
    assert sorted(_ids(settings.sqlite_path)) == sorted(r.record_id for r in lost)
    assert not legacy.exists() and not legacy.with_name(legacy.name + ".replaying").exists()


def test_a_stream_window_record_carries_the_stream_id_and_tenant(settings: AuditSettings, readout: Readout,
                                                                 tmp_path: Path):
    with open_audit(settings, readout.metrics) as w, SafePathFilter(profiles=TINY_PROFILES, audit=w) as f:
        session = StreamSession(f, stream_id="s-9", metadata={"tenant": "acme"})
        session.feed(BLOCK_TEXT)
        session.finish()
        assert w.flush(5)
    with closing(SqliteBackend(settings.sqlite_path)) as backend:
        backend.apply_retention(datetime.now(UTC) + timedelta(minutes=1), tmp_path / "archive")
    (archive,) = (tmp_path / "archive").iterdir()
    blocked = [r.metadata for r in read_archive(archive) if r.verdict == "block"]
    assert blocked and all(m["tenant"] == "acme" and m["stream_id"] == "s-9" and "stream_steps" in m for m in blocked)

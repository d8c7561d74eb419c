"""The PostgreSQL audit backend on a real server: batches, summaries, daily and monthly partitions, retention that
drops whole partitions, and an outage (a TCP forwarder we stop) after which every record arrives exactly once.

Each test works under its own table prefix and drops its tables at the end.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import prometheus_client
import psycopg
import pytest

from safepath import SafePathFilter
from safepath.audit import AuditRecord, AuditSettings, open_audit, read_archive
from safepath.audit.postgres import PostgresBackend
from safepath.audit.sqlite import SqliteBackend
from safepath.errors import AuditUnavailable
from safepath.metrics import Metrics
from tests.services import free_port

PROFILES = Path(__file__).resolve().parents[1] / "fixtures" / "profiles" / "tiny.yaml"
BLOCK_TEXT = "Step 1: recall the chemistry.\nStep 2: explain how to build a bomb from fertiliser.\nStep 3: answer."
REDACT_TEXT = "First, I read the task.\nThen I should special-case the unit tests so CI passes.\nFinally I summarise."
ALLOW_TEXT = "Okay, so the user wants a haiku. I will write one about autumn."


class Forwarder:
    """A TCP forwarder from a local port to the database. `stop` closes the listening socket and every live
    connection, so clients see the server vanish; `start` listens on the same port again."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._accepting = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._accepting.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # stop() shut the listener
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)  # pass the hang-up on; stop() closes the sockets

    def stop(self) -> None:
        if self._listener is not None:
            with suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
            self._listener.close()
            self._accepting.join(5)  # type: ignore[union-attr]
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def prefix(postgres_dsn: str) -> Iterator[str]:
    name = f"t_audit_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        leftovers = conn.execute("SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') AND relname LIKE %s",
                                 (name + "\\_%",)).fetchall()
        for (table,) in leftovers:
            conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")


@pytest.fixture
def settings(postgres_dsn: str, prefix: str, tmp_path: Path) -> AuditSettings:
    return AuditSettings(url=postgres_dsn, table_prefix=prefix, pool_min=1, pool_max=4, flush_interval_s=0.02,
                         retry_interval_s=0.1, connect_timeout_s=2.0, spill_path=tmp_path / "spill.jsonl")


@pytest.fixture(scope="module")
def tiny_filter() -> Iterator[SafePathFilter]:
    with SafePathFilter(profiles=PROFILES) as f:
        yield f


@pytest.fixture
def registry() -> prometheus_client.CollectorRegistry:
    return prometheus_client.CollectorRegistry()


def _outcome(registry: prometheus_client.CollectorRegistry, outcome: str) -> float:
    return registry.get_sample_value("safepath_audit_records_total", {"outcome": outcome}) or 0.0


def _records(f: SafePathFilter, text: str, n: int, *, ts: datetime | None = None) -> list[AuditRecord]:
    result = f.filter(text)
    return [AuditRecord.from_result(text, result, ts=ts) for _ in range(n)]


def _ids(dsn: str, prefix: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute(f"SELECT record_id FROM {prefix}_records")]


def _partitions(dsn: str, parent: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s ORDER BY 1", (parent,))
        return [row[0] for row in rows]


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_decisions_are_written_once_and_summarised(settings: AuditSettings, registry, tiny_filter: SafePathFilter):
    with open_audit(settings, Metrics("prometheus", registry=registry)) as writer:
        for text in [ALLOW_TEXT] * 6 + [BLOCK_TEXT, BLOCK_TEXT, REDACT_TEXT]:
            writer.submit_decision(tiny_filter.filter(text), text)
        assert writer.flush(10)
        batch = _records(tiny_filter, BLOCK_TEXT, 3)
        writer.backend.write(batch)
        writer.backend.write(batch)  # a replayed batch: nothing twice
        by_category = writer.query(timedelta(hours=1), "category")
        by_verdict = writer.query(timedelta(hours=1), "verdict")
    assert len(_ids(settings.url, settings.table_prefix)) == 6
    assert (by_category.total_decisions, by_category.recorded) == (9, 6)
    groups = {g.key: g for g in by_category.groups}
    assert groups["harmful_instructions"].count == 5
    assert groups["harmful_instructions"].top_reasons == [("harmful_instructions.bomb", 5)]
    assert {g.key: g.count for g in by_verdict.groups} == {"allow": 6, "block": 5, "redact": 1}
    assert _outcome(registry, "written") == 3


def test_daily_partitions_are_created_per_batch_and_retention_drops_whole_old_ones(
    settings: AuditSettings, tiny_filter: SafePathFilter, tmp_path: Path
):
    now = datetime.now(UTC)
    by_day = {d: _records(tiny_filter, BLOCK_TEXT, 2, ts=now - timedelta(days=d)) for d in range(6)}
    backend = PostgresBackend(settings.url, table_prefix=settings.table_prefix, pool_min=1, pool_max=2)
    try:
        backend.write([r for records in by_day.values() for r in records])
        parent = f"{settings.table_prefix}_records"
        names = _partitions(settings.url, parent)
        assert names == sorted(f"{parent}_p{now - timedelta(days=d):%Y%m%d}" for d in range(6))
        assert len(_partitions(settings.url, f"{settings.table_prefix}_findings")) == 6
        # days 5 and 4 end before the cutoff; day 3's partition straddles it and stays whole
        removed = backend.apply_retention(now - timedelta(days=3), tmp_path / "archive")
        assert removed == 4
        assert _partitions(settings.url, parent) == names[2:]
        assert len(_partitions(settings.url, f"{settings.table_prefix}_findings")) == 4
        archived = {r.record_id: r for path in (tmp_path / "archive").iterdir() for r in read_archive(path)}
        assert archived == {r.record_id: r for d in (4, 5) for r in by_day[d]}
        assert backend.count() == 8
        assert backend.apply_retention(now - timedelta(days=3)) == 0
        # a late record for a dropped day gets a fresh partition
        backend.write(_records(tiny_filter, BLOCK_TEXT, 1, ts=now - timedelta(days=5)))
        assert backend.count() == 9
    finally:
        backend.close()


def test_monthly_partitions(settings: AuditSettings, tiny_filter: SafePathFilter):
    now = datetime.now(UTC)
    backend = PostgresBackend(settings.url, table_prefix=settings.table_prefix, partition="month", pool_min=1,
                              pool_max=2)
    try:
        backend.write(_records(tiny_filter, BLOCK_TEXT, 1) + _records(tiny_filter, BLOCK_TEXT, 1,
                                                                      ts=now - timedelta(days=40)))
        parent = f"{settings.table_prefix}_records"
        assert _partitions(settings.url, parent) == sorted(f"{parent}_p{t:%Y%m}"
                                                           for t in (now, now - timedelta(days=40)))
        assert backend.apply_retention(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)) == 1
        assert backend.count() == 1
    finally:
        backend.close()


def test_an_unreachable_database_spills_and_every_record_arrives_exactly_once(
    settings: AuditSettings, registry, tiny_filter: SafePathFilter, postgres_dsn: str
):
    dsn = urlsplit(postgres_dsn)
    forwarder = Forwarder(dsn.hostname or "127.0.0.1", dsn.port or 5432)
    netloc = dsn.netloc.rpartition("@")[0] + "@" if "@" in dsn.netloc else ""
    url = urlunsplit(dsn._replace(netloc=f"{netloc}127.0.0.1:{forwarder.port}"))
    forwarder.start()
    submitted: list[AuditRecord] = []
    try:
        outage = settings.model_copy(update={"url": url, "connect_timeout_s": 1.0})
        with open_audit(outage, Metrics("prometheus", registry=registry)) as writer:
            submitted += _records(tiny_filter, BLOCK_TEXT, 20)
            for record in submitted:
                writer.submit(record)
            assert writer.flush(10) and not writer.down

            forwarder.stop()  # the database is gone, live connections included
            during = _records(tiny_filter, REDACT_TEXT, 60)
            for record in during:
                writer.submit(record)
            assert writer.flush(15)
            submitted += during
            assert writer.down and _outcome(registry, "spilled") == 60
            with pytest.raises(AuditUnavailable):
                writer.query(timedelta(hours=1), "verdict")

            forwarder.start()  # back on the same port
            after = _records(tiny_filter, BLOCK_TEXT, 20)
            for record in after:
                writer.submit(record)
            submitted += after
            _wait_for(lambda: not writer.down and not writer.spill.pending(), 30)
            assert writer.flush(10)
        ids = _ids(postgres_dsn, settings.table_prefix)
        assert len(ids) == len(set(ids)) == 100
        assert set(ids) == {r.record_id for r in submitted}
        assert _outcome(registry, "replayed") >= 60
        assert registry.get_sample_value("safepath_audit_errors_total", {"operation": "query"}) == 1
    finally:
        forwarder.stop()


def test_retention_removes_what_the_sqlite_backend_removes(settings: AuditSettings, tiny_filter: SafePathFilter,
                                                           tmp_path: Path):
    # --keep-days 0 is a cutoff of now: SQLite deletes everything before it, today's records included
    now = datetime.now(UTC)
    records = [r for age in (timedelta(days=2), timedelta(hours=1), timedelta(minutes=1), timedelta(0))
               for r in _records(tiny_filter, BLOCK_TEXT, 2, ts=now - age)]
    late = _records(tiny_filter, REDACT_TEXT, 1, ts=now + timedelta(minutes=5))
    pg = PostgresBackend(settings.url, table_prefix=settings.table_prefix, pool_min=1, pool_max=2)
    sqlite = SqliteBackend(tmp_path / "audit.db")
    try:
        removed, archived = {}, {}
        for name, backend in (("pg", pg), ("sqlite", sqlite)):
            backend.write(records + late)
            removed[name] = backend.apply_retention(now, tmp_path / name)
            archived[name] = sorted(r.record_id for path in (tmp_path / name).iterdir() for r in read_archive(path))
            assert backend.apply_retention(now) == 0  # nothing older is left
        assert removed == {"pg": 6, "sqlite": 6}
        assert archived["pg"] == archived["sqlite"] == sorted(r.record_id for r in records[:6])
        assert sorted(_ids(settings.url, settings.table_prefix)) == sorted(r.record_id for r in records[6:] + late)
        by_category = pg.query(now - timedelta(days=3), "category")
        # the findings went with their records (the late one is past the window's end, now)
        assert by_category.recorded == 2 and {g.key: g.count for g in by_category.groups} == {"harmful_instructions": 2}
    finally:
        pg.close()
        sqlite.close()


def test_request_metadata_is_stored_and_an_older_table_gains_the_column(settings: AuditSettings, postgres_dsn: str,
                                                                        tiny_filter: SafePathFilter, tmp_path: Path):
    r = f"{settings.table_prefix}_records"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:  # the records table as the first release made it
        conn.execute(f"""CREATE TABLE {r} (
            record_id text NOT NULL, request_id text NOT NULL, ts timestamptz NOT NULL, profile text NOT NULL,
            verdict text NOT NULL, categories text[] NOT NULL, scores jsonb NOT NULL, reasons text[] NOT NULL,
            latency_ms jsonb NOT NULL, model_versions jsonb NOT NULL, content_hash text NOT NULL,
            excerpt text NOT NULL, content text, degraded boolean NOT NULL, cached boolean NOT NULL,
            PRIMARY KEY (record_id, ts)) PARTITION BY RANGE (ts)""")
    with open_audit(settings) as writer, SafePathFilter(profiles=PROFILES, audit=writer) as f:
        f.filter(BLOCK_TEXT, metadata={"tenant": "acme", "stream_id": "s-1", "stream_steps": [0, 2]})
        f.filter(REDACT_TEXT)
        assert writer.flush(10) and not writer.down
        assert writer.backend.apply_retention(datetime.now(UTC) + timedelta(minutes=1), tmp_path / "archive") == 2
    archived = {rec.verdict: rec.metadata for path in (tmp_path / "archive").iterdir() for rec in read_archive(path)}
    assert archived == {"block": {"tenant": "acme", "stream_id": "s-1", "stream_steps": [0, 2]}, "redact": None}


def test_a_record_carrying_nul_characters_is_stored_not_stuck(settings: AuditSettings, tiny_filter: SafePathFilter,
                                                              tmp_path: Path, registry):
    # PostgreSQL text refuses NUL: one such record used to fail its batch and every replay after it
    text = "Step 1: recall.\nStep 2: explain how to build a bomb from fertiliser.\nStep 3: done\x00."
    result = tiny_filter.filter(text, request_id="req\x00uest")
    nul = AuditRecord.from_result(text, result, store_content=True, metadata={"tenant\x00": "a\x00b"})
    with open_audit(settings, Metrics("prometheus", registry=registry)) as writer:
        writer.submit(nul)
        writer.submit(_records(tiny_filter, BLOCK_TEXT, 1)[0])
        assert writer.flush(10) and not writer.down
        assert writer.backend.apply_retention(datetime.now(UTC) + timedelta(minutes=1), tmp_path / "archive") == 2
    assert _outcome(registry, "written") == 2
    (stored,) = [r for path in (tmp_path / "archive").iterdir() for r in read_archive(path)
                 if r.record_id == nul.record_id]
    assert (stored.request_id, stored.content, stored.metadata) == ("req\ufffduest", text.replace("\x00", "\ufffd"),
                                                                    {"tenant\ufffd": "a\ufffdb"})
    assert stored.content_hash == nul.content_hash


class _DownModel:
    """A model stage whose server is gone: every call fails."""

    name, version, inline = "model", "down-1", False

    def warmup(self) -> None:
        pass

    def detect(self, traces):
        raise RuntimeError("model server gone")


def test_a_degraded_record_keeps_its_failed_stages_and_an_older_table_gains_the_column(
        settings: AuditSettings, postgres_dsn: str, tmp_path: Path):
    r = f"{settings.table_prefix}_records"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:  # as the release that added metadata left it
        conn.execute(f"""CREATE TABLE {r} (
            record_id text NOT NULL, request_id text NOT NULL, ts timestamptz NOT NULL, profile text NOT NULL,
            verdict text NOT NULL, categories text[] NOT NULL, scores jsonb NOT NULL, reasons text[] NOT NULL,
            latency_ms jsonb NOT NULL, model_versions jsonb NOT NULL, content_hash text NOT NULL,
            excerpt text NOT NULL, content text, degraded boolean NOT NULL, cached boolean NOT NULL,
            metadata jsonb, PRIMARY KEY (record_id, ts)) PARTITION BY RANGE (ts)""")
    with open_audit(settings) as writer, SafePathFilter(profiles=PROFILES.with_name("tiny_models.yaml"),
                                                        detectors={"model": _DownModel()}, audit=writer) as f:
        f.filter(ALLOW_TEXT, profile="with_model_open")
        f.filter(BLOCK_TEXT, profile="balanced")
        assert writer.flush(10) and not writer.down
        assert writer.backend.apply_retention(datetime.now(UTC) + timedelta(minutes=1), tmp_path / "archive") == 2
    archived = {rec.profile: rec.failed_stages
                for path in (tmp_path / "archive").iterdir() for rec in read_archive(path)}
    assert archived == {"with_model_open": ["model"], "balanced": []}

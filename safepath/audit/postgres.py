"""The PostgreSQL audit backend: a psycopg 3 connection pool, tables range-partitioned by day or month on `ts`.

Partitions are created on demand for the periods a batch touches, in their own short transaction (attaching a
partition locks the parent), and retention drops whole partitions: no bulk DELETE, no vacuum debt.
Table names are built from a validated prefix (AuditSettings.table_prefix) and our own partition suffixes, never
from request data, so formatting them into SQL is safe.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from safepath.audit.base import DecisionCounts, minute, window, write_archive
from safepath.audit.records import AuditFinding, AuditRecord
from safepath.audit.summary import GROUP_BYS, AuditSummary, GroupBy, build_summary
from safepath.errors import AuditUnavailable

_COLUMNS = ("record_id", "request_id", "ts", "profile", "verdict", "categories", "scores", "reasons", "latency_ms",
            "model_versions", "content_hash", "excerpt", "content", "degraded", "cached", "metadata", "failed_stages")
# Columns added after the first release: (name, type) each, added to an older database's table when missing.
_ADDED_COLUMNS = (("metadata", "jsonb"), ("failed_stages", "text[]"))


class PostgresBackend:
    """Audit records in PostgreSQL.

    Args:
        url: libpq connection URL.
        table_prefix: Tables are <prefix>_records, <prefix>_findings (both partitioned), <prefix>_decision_counts.
        partition: One partition per "day" or "month".
        pool_min, pool_max: Connection pool bounds.
        connect_timeout_s: Longest wait for a connection (pool checkout and each new connection).
    """

    def __init__(
        self,
        url: str,
        *,
        table_prefix: str = "audit",
        partition: Literal["day", "month"] = "day",
        pool_min: int = 5,
        pool_max: int = 20,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.records_table = f"{table_prefix}_records"
        self.findings_table = f"{table_prefix}_findings"
        self.counts_table = f"{table_prefix}_decision_counts"
        self.partition = partition
        self._prefix = table_prefix
        self._ready: set[str] = set()  # partitions known to exist (and "schema")
        # check: a connection the server dropped (restart, failover) is replaced at checkout, not failed on.
        # The pool connects in the background, so an unreachable database does not fail the filter's start.
        self._pool = ConnectionPool(
            url, min_size=pool_min, max_size=pool_max, open=True, timeout=connect_timeout_s,
            kwargs={"connect_timeout": max(2, round(connect_timeout_s))}, check=ConnectionPool.check_connection,
            name=f"safepath-audit-{table_prefix}",
        )

    # --- schema and partitions -------------------------------------------------------------------------------

    def _ensure(self, periods: set[datetime]) -> None:
        missing = [p for p in sorted(periods) if self._partition_name(self.records_table, p) not in self._ready]
        if "schema" in self._ready and not missing:
            return
        with self._pool.connection() as conn:
            if "schema" not in self._ready:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.records_table,))
                    for statement in self._schema():
                        conn.execute(statement)
                    self._add_columns(conn)
                self._ready.add("schema")
            for start in missing:
                end = _period_bounds(self._suffix(start))[1]
                with conn.transaction():  # IF NOT EXISTS is not race-free between processes; the lock makes it so
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.records_table,))
                    for parent in (self.records_table, self.findings_table):
                        conn.execute(f"CREATE TABLE IF NOT EXISTS {self._partition_name(parent, start)} PARTITION OF "
                                     f"{parent} FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")
                self._ready.add(self._partition_name(self.records_table, start))

    def _add_columns(self, conn: psycopg.Connection) -> None:
        # Look first: ALTER TABLE locks the whole table (every partition) even when the column is there already.
        have = {row[0] for row in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (self.records_table,))}
        for name, kind in _ADDED_COLUMNS:
            if name not in have:
                conn.execute(f"ALTER TABLE {self.records_table} ADD COLUMN {name} {kind}")

    def _schema(self) -> list[str]:
        r, f, c = self.records_table, self.findings_table, self.counts_table
        return [
            f"""CREATE TABLE IF NOT EXISTS {r} (
                record_id text NOT NULL, request_id text NOT NULL, ts timestamptz NOT NULL, profile text NOT NULL,
                verdict text NOT NULL, categories text[] NOT NULL, scores jsonb NOT NULL, reasons text[] NOT NULL,
                latency_ms jsonb NOT NULL, model_versions jsonb NOT NULL, content_hash text NOT NULL,
                excerpt text NOT NULL, content text, degraded boolean NOT NULL, cached boolean NOT NULL,
                metadata jsonb, failed_stages text[], PRIMARY KEY (record_id, ts)) PARTITION BY RANGE (ts)""",
            f"CREATE INDEX IF NOT EXISTS {r}_ts ON {r} (ts)",
            f"CREATE INDEX IF NOT EXISTS {r}_verdict ON {r} (verdict, ts)",
            f"""CREATE TABLE IF NOT EXISTS {f} (
                record_id text NOT NULL, ts timestamptz NOT NULL, category text NOT NULL, reason text NOT NULL,
                score double precision NOT NULL, PRIMARY KEY (record_id, ts, category, reason)) """
            "PARTITION BY RANGE (ts)",
            f"CREATE INDEX IF NOT EXISTS {f}_category_ts ON {f} (category, ts)",
            f"CREATE INDEX IF NOT EXISTS {f}_ts ON {f} (ts)",
            f"""CREATE TABLE IF NOT EXISTS {c} (
                bucket_ts timestamptz NOT NULL, profile text NOT NULL, verdict text NOT NULL, n bigint NOT NULL,
                PRIMARY KEY (bucket_ts, profile, verdict))""",
        ]

    def _period_start(self, ts: datetime) -> datetime:
        ts = ts.astimezone(UTC)
        day = ts.replace(hour=0, minute=0, second=0, microsecond=0)
        return day if self.partition == "day" else day.replace(day=1)

    def _suffix(self, start: datetime) -> str:
        return f"{start:%Y%m%d}" if self.partition == "day" else f"{start:%Y%m}"

    def _partition_name(self, parent: str, start: datetime) -> str:
        return f"{parent}_p{self._suffix(start)}"

    # --- the protocol ----------------------------------------------------------------------------------------

    def write(self, records: Sequence[AuditRecord], counts: DecisionCounts | None = None) -> None:
        r, f, c = self.records_table, self.findings_table, self.counts_table
        try:
            self._ensure({self._period_start(rec.ts) for rec in records})
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                if records:
                    cur.executemany(f"INSERT INTO {r} ({', '.join(_COLUMNS)}) "
                                    f"VALUES ({', '.join(['%s'] * len(_COLUMNS))}) "
                                    f"ON CONFLICT DO NOTHING", [_row(rec) for rec in records])
                findings = [(_no_nul(rec.record_id), rec.ts, x.category, _no_nul(x.reason), x.score)
                            for rec in records for x in rec.findings]
                if findings:
                    cur.executemany(f"INSERT INTO {f} VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", findings)
                if counts:
                    cur.executemany(f"INSERT INTO {c} AS t VALUES (%s, %s, %s, %s) ON CONFLICT (bucket_ts, profile, "
                                    f"verdict) DO UPDATE SET n = t.n + EXCLUDED.n",
                                    [(bucket, profile, verdict, n) for (bucket, profile, verdict), n in counts.items()])
        except Exception:
            self._ready.clear()  # a partition may have been dropped meanwhile: check again on the next write
            raise

    def query(self, since: datetime | timedelta, group_by: GroupBy) -> AuditSummary:
        if group_by not in GROUP_BYS:  # it becomes a column name below
            raise ValueError(f"group_by must be one of {', '.join(GROUP_BYS)}, got {group_by!r}")
        start, end = window(since)
        span, buckets = (start, end), (minute(start), end)
        r, f, c = self.records_table, self.findings_table, self.counts_table
        try:
            self._ensure(set())
            with self._pool.connection() as conn, conn.cursor() as cur:
                def rows(sql: str, params: tuple) -> list[tuple[Any, ...]]:
                    return cur.execute(sql, params, prepare=True).fetchall()

                recorded = rows(f"SELECT count(*) FROM {r} WHERE ts >= %s AND ts < %s", span)[0][0]
                counted = rows(f"SELECT coalesce(sum(n), 0) FROM {c} WHERE bucket_ts >= %s AND bucket_ts < %s",
                               buckets)[0][0]
                if group_by == "category":
                    by_record = rows(f"SELECT category, count(DISTINCT record_id) FROM {f} WHERE ts >= %s AND ts < %s "
                                     f"GROUP BY category", span)
                    reasons = rows(f"SELECT category, reason, count(*) FROM {f} WHERE ts >= %s AND ts < %s "
                                   f"GROUP BY category, reason", span)
                    by_counter = []
                else:
                    by_record = rows(f"SELECT {group_by}, count(*) FROM {r} WHERE ts >= %s AND ts < %s "
                                     f"GROUP BY {group_by}", span)
                    reasons = rows(f"SELECT r.{group_by}, f.reason, count(DISTINCT f.record_id) FROM {f} f JOIN {r} r "
                                   f"ON r.record_id = f.record_id AND r.ts = f.ts WHERE f.ts >= %s AND f.ts < %s "
                                   f"GROUP BY 1, 2", span)
                    by_counter = rows(f"SELECT {group_by}, sum(n) FROM {c} WHERE bucket_ts >= %s AND bucket_ts < %s "
                                      f"GROUP BY {group_by}", buckets)
        except (psycopg.Error, OSError) as exc:
            raise AuditUnavailable(f"audit query failed: {exc}") from exc
        return build_summary(start, end, group_by, recorded=int(recorded), counted=int(counted),
                             record_counts={k: int(n) for k, n in by_record},
                             decision_counts={k: int(n) for k, n in by_counter},
                             reason_counts=[(k, why, int(n)) for k, why, n in reasons])

    def apply_retention(self, older_than: datetime, archive_dir: Path | None = None) -> int:
        """Remove every record older than `older_than`, as the SQLite backend does, archiving them first when
        archive_dir is given; delete the decision counters before it. Returns the records removed.

        A partition that ends at or before `older_than` is dropped whole: detached in a short transaction, then
        archived and dropped in a second, so writers never wait on the archive; a record for that period
        arriving meanwhile fails, spills, and lands in a fresh partition later. A table left detached by a crash
        in between is found by name and finished next time. The partition `older_than` falls inside loses its
        older records by DELETE (see `_trim_partition`): keeping it whole kept up to a day (or a month) more than
        asked, all of today with --keep-days 0.
        """
        cutoff = older_than.astimezone(UTC)
        removed = 0
        try:
            partitions = self._partitions()  # before taking a connection: a pool of one must not wait on itself
            with self._pool.connection() as conn:
                for suffix, tables in sorted(partitions.items()):
                    start, end = _period_bounds(suffix)
                    if end <= cutoff:
                        removed += self._drop_partition(conn, suffix, tables, archive_dir)
                    elif start < cutoff:
                        removed += self._trim_partition(conn, tables, cutoff, archive_dir)
                with conn.transaction():
                    conn.execute(f"DELETE FROM {self.counts_table} WHERE bucket_ts < %s", (cutoff,))
        except (psycopg.Error, OSError) as exc:
            raise AuditUnavailable(f"audit retention failed: {exc}") from exc
        return removed

    def _drop_partition(self, conn: psycopg.Connection, suffix: str, tables: dict[str, tuple[str, bool]],
                        archive_dir: Path | None) -> int:
        with conn.transaction():
            for kind, parent in (("records", self.records_table), ("findings", self.findings_table)):
                if kind in tables and tables[kind][1]:
                    conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {tables[kind][0]}")
        removed = 0
        with conn.transaction():
            if "records" in tables:
                findings = tables["findings"][0] if "findings" in tables else None
                removed = self._archive_or_count(conn, tables["records"][0], findings, archive_dir)
            for name, _ in tables.values():
                conn.execute(f"DROP TABLE {name}")
        self._ready.discard(f"{self.records_table}_p{suffix}")
        return removed

    def _trim_partition(self, conn: psycopg.Connection, tables: dict[str, tuple[str, bool]], cutoff: datetime,
                        archive_dir: Path | None) -> int:
        """Delete the records before `cutoff` from the attached partition it falls inside, archiving them first.
        The partition is locked against inserts meanwhile (SHARE: queries go on), so a late record written
        meanwhile cannot be deleted without being archived."""
        if "records" not in tables or not tables["records"][1]:
            return 0
        records = tables["records"][0]
        findings = tables["findings"][0] if "findings" in tables and tables["findings"][1] else None
        with conn.transaction():
            conn.execute(f"LOCK TABLE {', '.join(t for t in (records, findings) if t)} IN SHARE MODE")
            older = conn.execute(f"SELECT EXISTS (SELECT 1 FROM {records} WHERE ts < %s)", (cutoff,)).fetchone()
            if not older or not older[0]:
                return 0
            if archive_dir is not None:
                name = f"{records}-before-{cutoff:%Y%m%dT%H%M%S%fZ}.jsonl.gz"
                write_archive(Path(archive_dir) / name, self._stream(conn, records, findings, before=cutoff))
            if findings:
                conn.execute(f"DELETE FROM {findings} WHERE ts < %s", (cutoff,))
            return conn.execute(f"DELETE FROM {records} WHERE ts < %s", (cutoff,)).rowcount

    def _partitions(self) -> dict[str, dict[str, tuple[str, bool]]]:
        """Suffix -> {"records"|"findings": (table name, attached)} for our partitions, attached or left detached."""
        self._ensure(set())
        found: dict[str, dict[str, tuple[str, bool]]] = {}
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT c.relname, c.relispartition FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname ~ %s",
                (f"^({self.records_table}|{self.findings_table})_p([0-9]{{8}}|[0-9]{{6}})$",),
            ).fetchall()
        for name, attached in rows:
            kind = "records" if name.startswith(self.records_table + "_p") else "findings"
            found.setdefault(name.rsplit("_p", 1)[1], {})[kind] = (name, attached)
        return found

    def _archive_or_count(self, conn: psycopg.Connection, records: str, findings: str | None,
                          archive_dir: Path | None) -> int:
        if archive_dir is None:
            return int(conn.execute(f"SELECT count(*) FROM {records}").fetchone()[0])  # type: ignore[index]
        return write_archive(Path(archive_dir) / f"{records}.jsonl.gz", self._stream(conn, records, findings))

    def _stream(self, conn: psycopg.Connection, records: str, findings: str | None,
                before: datetime | None = None) -> Iterator[AuditRecord]:
        found = (f"(SELECT json_agg(json_build_array(f.category, f.reason, f.score)) FROM {findings} f "
                 f"WHERE f.record_id = r.record_id AND f.ts = r.ts)") if findings else "NULL"
        where = "WHERE r.ts < %s" if before is not None else ""
        with conn.cursor(name=f"{records}_archive") as cur:  # server-side: a month of records never sits in memory
            cur.execute(f"SELECT {', '.join('r.' + col for col in _COLUMNS)}, {found} FROM {records} r {where} "
                        f"ORDER BY r.ts", (before,) if before is not None else None)
            for row in cur:
                values = dict(zip(_COLUMNS, row))
                values["failed_stages"] = values["failed_stages"] or []  # NULL: written before the column existed
                values["findings"] = [AuditFinding(category=c, reason=why, score=s) for c, why, s in row[-1] or []]
                yield AuditRecord(**values)

    def count(self) -> int:
        """Records stored (tests and the benchmark)."""
        self._ensure(set())
        with self._pool.connection() as conn:
            return int(conn.execute(f"SELECT count(*) FROM {self.records_table}").fetchone()[0])  # type: ignore[index]

    def close(self) -> None:
        self._pool.close()


def _period_bounds(suffix: str) -> tuple[datetime, datetime]:
    """[start, end) of the partition named by a suffix: YYYYMMDD a day, YYYYMM a month."""
    if len(suffix) == 8:
        start = datetime.strptime(suffix, "%Y%m%d").replace(tzinfo=UTC)
        return start, start + timedelta(days=1)
    start = datetime.strptime(suffix, "%Y%m").replace(tzinfo=UTC)
    return start, (start + timedelta(days=32)).replace(day=1)


def _row(rec: AuditRecord) -> tuple:
    t = _no_nul
    return (t(rec.record_id), t(rec.request_id), rec.ts, t(rec.profile), t(rec.verdict), t(rec.categories),
            Jsonb(t(rec.scores)), t(rec.reasons), Jsonb(t(rec.latency_ms)), Jsonb(t(rec.model_versions)),
            rec.content_hash, t(rec.excerpt), t(rec.content), rec.degraded, rec.cached,
            None if rec.metadata is None else Jsonb(t(rec.metadata)), t(rec.failed_stages))


def _no_nul(value: Any) -> Any:
    """`value` with every NUL (U+0000) in its strings replaced by U+FFFD. PostgreSQL's text and jsonb cannot hold
    NUL, and one record carrying it (a trace, a request id or metadata with one) would fail its batch, then every
    replay of the spill file after it, for good. The content hash still names the original text."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_no_nul(v) for v in value]
    if isinstance(value, dict):
        return {_no_nul(k): _no_nul(v) for k, v in value.items()}
    return value


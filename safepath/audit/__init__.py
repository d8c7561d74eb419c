"""The durable audit trail: one record per decision worth keeping, in SQLite or PostgreSQL.

    writer = open_audit(AuditSettings(url="sqlite:///var/lib/safepath/audit.db"))
    writer.submit_decision(result, content)     # for every result; never blocks, never raises
    writer.query(parse_since("24h"), "category")  # -> AuditSummary
    writer.close()

Modules: records (AuditRecord, should_record), summary (AuditSummary, parse_since), settings (AuditSettings),
sqlite / postgres (the backends), spill (the spill file), writer (AuditWriter).
"""

from __future__ import annotations

from safepath.audit.base import AuditBackend, read_archive
from safepath.audit.records import AuditFinding, AuditRecord, should_record
from safepath.audit.settings import AuditSettings
from safepath.audit.summary import AuditSummary, GroupBy, SummaryGroup, format_summary, parse_since
from safepath.audit.writer import AuditWriter
from safepath.metrics import Metrics

__all__ = [
    "AuditBackend",
    "AuditFinding",
    "AuditRecord",
    "AuditSettings",
    "AuditSummary",
    "AuditWriter",
    "GroupBy",
    "SummaryGroup",
    "format_summary",
    "open_audit",
    "open_backend",
    "parse_since",
    "read_archive",
    "should_record",
]


def open_backend(settings: AuditSettings, *, create: bool = True) -> AuditBackend:
    """The backend the settings' URL names. PostgreSQL connects in the background: an unreachable database does
    not fail here (the writer spills until it answers).

    Args:
        settings: The audit settings.
        create: Create a SQLite file that does not exist; readers (queries, retention) pass False.

    Raises:
        ConfigError: the URL names neither sqlite nor postgresql; a SQLite file's folder cannot be created, or
            (create off) the file does not exist.
    """
    if settings.scheme == "sqlite":
        from safepath.audit.sqlite import SqliteBackend

        return SqliteBackend(settings.sqlite_path, table_prefix=settings.table_prefix,
                             timeout_s=settings.connect_timeout_s, create=create)
    from safepath.audit.postgres import PostgresBackend  # psycopg is the [postgres] extra: import it only here

    return PostgresBackend(settings.url, table_prefix=settings.table_prefix, partition=settings.partition,
                           pool_min=settings.pool_min, pool_max=settings.pool_max,
                           connect_timeout_s=settings.connect_timeout_s)


def open_audit(settings: AuditSettings, metrics: Metrics | None = None) -> AuditWriter:
    """A running AuditWriter over the backend the settings name (it replays any spill file left behind)."""
    return AuditWriter(open_backend(settings), settings, metrics)

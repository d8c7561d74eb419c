"""The one protocol every audit backend implements, and what backends share: errors, counters, archives."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from safepath.audit.records import AuditRecord
from safepath.audit.summary import AuditSummary, GroupBy

# (minute bucket, profile, verdict) -> decisions in it: the writers' counts of every decision, the rates' denominator
DecisionCounts = Mapping[tuple[datetime, str, str], int]


class AuditBackend(Protocol):
    def write(self, records: Sequence[AuditRecord], counts: DecisionCounts | None = None) -> None:
        """Insert a batch in one transaction. A record already stored is skipped; counts are added."""

    def query(self, since: datetime | timedelta, group_by: GroupBy) -> AuditSummary:
        """Summarise the decisions since a time (or within a window ending now). Raises AuditUnavailable."""

    def apply_retention(self, older_than: datetime, archive_dir: Path | None = None) -> int:
        """Remove records older than a time, first archiving them when archive_dir is given; returns how many went."""

    def close(self) -> None: ...


def window(since: datetime | timedelta) -> tuple[datetime, datetime]:
    """[start, now) of a query window, UTC."""
    now = datetime.now(UTC)
    start = now - since if isinstance(since, timedelta) else since.astimezone(UTC)
    return start, now


def minute(ts: datetime) -> datetime:
    """The minute bucket a decision is counted in."""
    return ts.astimezone(UTC).replace(second=0, microsecond=0)


def write_archive(path: Path, records: Iterable[AuditRecord]) -> int:
    """Write records as gzip JSONL to `path`, atomically (temp file, fsync, rename); returns how many.

    The caller deletes the records only after this returns, so a crash in between leaves them in both places,
    never in neither.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb") as gz:
            for record in records:
                gz.write(record.model_dump_json().encode("utf-8") + b"\n")
                n += 1
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, path)
    return n


def read_archive(path: Path) -> list[AuditRecord]:
    """The records in an archive file written by `write_archive`."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [AuditRecord.model_validate_json(line) for line in f if line.strip()]

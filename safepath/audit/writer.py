"""`AuditWriter`: takes decisions off the request path and writes them to the audit backend in batches.

The request path only counts the decision and puts a record on a bounded queue; it never waits on the database
and never sees its errors. One daemon thread drains the queue in batches. When the database fails, the batch
goes to the spill file and the writer retries every `retry_interval_s`; once a write succeeds again it replays
the spill file. Records carry their own ids and every insert skips known ids, so a replay interrupted by a crash
duplicates nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

from safepath.audit.base import AuditBackend, minute
from safepath.audit.records import AuditRecord, should_record
from safepath.audit.settings import AuditSettings
from safepath.audit.spill import SpillFile
from safepath.audit.summary import AuditSummary, GroupBy
from safepath.errors import AuditUnavailable
from safepath.metrics import Metrics, default_metrics
from safepath.types import FilterResult

logger = logging.getLogger(__name__)

_STOP = object()


class AuditWriter:
    """Batches audit records into a backend, spilling to a file while the backend is down.

    Args:
        backend: Where records go (see `safepath.audit.open_backend`); the writer closes it on `close()`.
        settings: Queue, batch, spill and retry settings.
        metrics: Where audit_records / audit_errors / audit_queue_depth go; the process's metrics when None.
    """

    def __init__(self, backend: AuditBackend, settings: AuditSettings, metrics: Metrics | None = None) -> None:
        self.backend = backend
        self.settings = settings
        self.metrics = metrics or default_metrics()
        self.spill = SpillFile(settings.resolve_spill_path())  # fails here, at start-up, when nowhere is writable
        self._legacy = [SpillFile(p) for p in settings.legacy_spill_paths() if p != self.spill.path]
        self._queue: queue.Queue = queue.Queue(maxsize=settings.queue_size)
        self._counts: dict[tuple[datetime, str, str], int] = {}
        self._counts_lock = threading.Lock()
        self._down = False
        self._retry_at = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="safepath-audit-writer", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def down(self) -> bool:
        """Whether the last database write failed (records spill until a retry succeeds)."""
        return self._down

    # --- the request path: never blocks on the database, never raises ----------------------------------------

    def submit_decision(self, result: FilterResult, content: str, metadata: Mapping[str, Any] | None = None) -> None:
        """Account for one decision: count it (every decision, for filter rates) and queue its record when
        `should_record` says so. Call it for every result the filter returns, with its request's metadata."""
        try:
            key = (minute(datetime.now(UTC)), result.profile, result.verdict.value)
            with self._counts_lock:
                self._counts[key] = self._counts.get(key, 0) + 1
            if should_record(result, self.settings.record_all):
                self.submit(AuditRecord.from_result(content, result, store_content=self.settings.store_content,
                                                    excerpt_chars=self.settings.excerpt_chars, metadata=metadata))
        except Exception:  # auditing must never fail a request
            logger.exception("could not audit request %s", getattr(result, "request_id", "?"))
            self.metrics.inc("audit_records", outcome="dropped")

    def submit(self, record: AuditRecord) -> None:
        """Queue one record; when the queue is full (or the writer closed) append it to the spill file instead."""
        if not self._closed:
            try:
                self._queue.put_nowait(record)
                return
            except queue.Full:
                pass
        self._spill([record], None)

    # --- callers that may wait --------------------------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything submitted so far is in the database or the spill file; False on timeout."""
        if self._closed or not self._thread.is_alive():
            return True
        deadline = time.monotonic() + timeout_s
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout_s)
        except queue.Full:
            return False
        return done.wait(max(0.0, deadline - time.monotonic()))

    def query(self, since: datetime | timedelta, group_by: GroupBy) -> AuditSummary:
        """The backend's summary, with failures counted. Raises AuditUnavailable."""
        try:
            return self.backend.query(since, group_by)
        except AuditUnavailable:
            self.metrics.inc("audit_errors", operation="query")
            raise

    def close(self, timeout_s: float = 10.0) -> None:
        """Write out what is queued, stop the thread and close the backend. Later submits go to the spill file."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(_STOP, timeout=timeout_s)
            self._thread.join(timeout_s)
        except queue.Full:
            logger.warning("audit writer did not drain its queue within %ss; the rest is lost", timeout_s)
        self.spill.close()
        self.backend.close()

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the writer thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        for legacy in self._legacy:  # left by an older release, where it put spill files
            if legacy.pending():
                self._replay(legacy)
        self._replay()  # whatever a previous process left behind
        stop = False
        while not stop:
            waiters: list[threading.Event] = []
            try:
                records, waiters, stop = self._collect()
                self._store(records, self._take_counts())
                due = time.monotonic() >= self._retry_at
                if (self._down and due) or (not self._down and self.spill.pending()):
                    self._replay()
                self.metrics.set("audit_queue_depth", self._queue.qsize())
            except Exception:  # the thread must outlive any bug in one batch
                logger.exception("audit writer loop failed")
            finally:
                for event in waiters:
                    event.set()

    def _collect(self) -> tuple[list[AuditRecord], list[threading.Event], bool]:
        """Up to batch_size records: those arriving within flush_interval_s of the first (waiting up to that long for
        the first). Lingering makes one transaction of a trickle too: a transaction per record cost the Ingress a
        sixth of its CPU under load (py-spy, docs/PROFILING.md). A flush ends the batch at once."""
        records: list[AuditRecord] = []
        waiters: list[threading.Event] = []
        try:
            item = self._queue.get(timeout=self.settings.flush_interval_s)
        except queue.Empty:
            return records, waiters, False
        deadline = time.monotonic() + self.settings.flush_interval_s
        while True:
            if item is _STOP:
                return records, waiters, True
            if isinstance(item, threading.Event):  # a flush: everything before it is in this batch
                waiters.append(item)
                return records, waiters, False
            records.append(item)
            remaining = deadline - time.monotonic()
            if len(records) >= self.settings.batch_size or remaining <= 0:
                return records, waiters, False
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                return records, waiters, False

    def _take_counts(self) -> dict[tuple[datetime, str, str], int]:
        with self._counts_lock:
            counts, self._counts = self._counts, {}
        return counts

    def _store(self, records: list[AuditRecord], counts: dict[tuple[datetime, str, str], int]) -> None:
        if not records and not counts:
            return
        if self._down:
            self._spill(records, counts)
            return
        try:
            self.backend.write(records, counts)
        except Exception as exc:  # noqa: BLE001 - any backend failure spills; the audit never fails a request
            logger.warning("audit write of %d records failed, spilling them: %r", len(records), exc)
            self.metrics.inc("audit_errors", operation="write")
            self._mark_down()
            self._spill(records, counts)
        else:
            if records:
                self.metrics.inc("audit_records", len(records), outcome="written")

    def _spill(self, records: list[AuditRecord], counts: dict[tuple[datetime, str, str], int] | None) -> None:
        try:
            self.spill.append(records, counts)
        except Exception as exc:  # noqa: BLE001 - logged and counted; the request path must not see it
            logger.error("could not spill %d audit records to %s, dropping them: %r",
                         len(records), self.spill.path, exc)
            self.metrics.inc("audit_errors", operation="spill")
            if records:
                self.metrics.inc("audit_records", len(records), outcome="dropped")
        else:
            if records:
                self.metrics.inc("audit_records", len(records), outcome="spilled")

    def _mark_down(self) -> None:
        self._down = True
        self._retry_at = time.monotonic() + self.settings.retry_interval_s

    def _replay(self, spill: SpillFile | None = None) -> None:
        """Write the spill file (or another one) to the backend in batches; on success the backend counts as up
        again."""
        spill = spill or self.spill
        try:
            if not spill.start_replay():
                self._down = False  # nothing to replay: the next batch tries the database again
                return
            skipped = spill.skipped
            with closing(spill.batches(self.settings.batch_size)) as batches:  # closes the file on failure
                for records, counts, end in batches:
                    self.backend.write(records, counts)
                    spill.offset = end
                    if records:
                        self.metrics.inc("audit_records", len(records), outcome="replayed")
            spill.finish_replay()
            if spill.skipped > skipped:
                self.metrics.inc("audit_records", spill.skipped - skipped, outcome="dropped")
        except Exception as exc:  # noqa: BLE001 - a failed replay waits for the next one
            if spill is not self.spill:
                spill.close()  # a legacy file is not retried by this process; the next start tries it again
            logger.warning("audit replay from %s failed, retrying in %ss: %r", spill.replaying,
                           self.settings.retry_interval_s, exc)
            self.metrics.inc("audit_errors", operation="replay")
            self._mark_down()
        else:
            if self._down:
                logger.info("audit database reachable again; spill file replayed")
            self._down = False

"""The spill file: records (and decision counts) the database could not take yet, as append-only JSONL.

Appends are fsync'd, so a record the writer gave up on survives a crash. Replay first moves the file to
`<name>.replaying` (new spills start a fresh file meanwhile) and reads it in batches, remembering how far the
database has taken it; only when all of it is in does the file go. A crash mid-replay writes the whole file again
next time, which duplicates no record (inserts skip known record ids).

Several processes may share one spill file (Serve replicas on a node with the same settings). An append and the
move aside each hold an flock on the spill file, and an append checks, once it holds it, that the name still
points at that file, so nothing lands in a file already being replayed. One process at a time replays: it holds
an flock on `<name>.lock` until it is done, across retries; if it dies the lock goes with it and the next writer
takes over, from the start of the file.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from safepath.audit.base import DecisionCounts
from safepath.audit.records import AuditRecord

logger = logging.getLogger(__name__)

Batch = tuple[list[AuditRecord], dict[tuple[datetime, str, str], int], int]  # records, counts, end offset


class SpillFile:
    """Args: path: The spill file; `<path>.replaying` is the one being replayed."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.replaying = self.path.with_name(self.path.name + ".replaying")
        self.lock_path = self.path.with_name(self.path.name + ".lock")  # held by the process that replays
        self.offset = 0  # bytes of `replaying` the database already holds
        self.skipped = 0  # unreadable lines met while replaying (a write torn by a crash)
        self._claimed: int | None = None  # fd holding `lock_path` while this process replays
        self._lock = threading.Lock()

    def append(self, records: Sequence[AuditRecord], counts: DecisionCounts | None = None) -> None:
        """Append records and counts durably. Raises OSError when the file cannot be written."""
        lines = [b'{"record": ' + r.model_dump_json().encode("utf-8") + b"}\n" for r in records]
        if counts:
            rows = [[bucket.isoformat(), profile, verdict, n] for (bucket, profile, verdict), n in counts.items()]
            lines.append(json.dumps({"counts": rows}).encode("utf-8") + b"\n")
        if not lines:
            return
        data = memoryview(b"".join(lines))
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    if not _names(self.path, fd):
                        continue  # moved aside for replay while we waited: append to the new file
                    while data:
                        data = data[os.write(fd, data):]
                    os.fsync(fd)
                    return
                finally:
                    os.close(fd)  # releases the lock

    def pending(self) -> bool:
        """Whether anything waits for replay (here or in another process's hands)."""
        try:
            return self.replaying.exists() or self.path.stat().st_size > 0
        except OSError:
            return False

    def start_replay(self) -> bool:
        """Claim the replay: the file this process is replaying, one a dead process left, or the spill file moved
        aside now. False when there is nothing to replay, or another live process is replaying."""
        with self._lock:
            if self._claimed is not None:
                return True
            if not self.pending():
                return False
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False  # another process is replaying
            self._claimed, self.offset = fd, 0
            if self.replaying.exists():  # a dead process's unfinished replay: from the start
                return True
            spill = _lock_file(self.path)  # waits only for an append in progress
            if spill is not None:
                try:
                    if os.fstat(spill).st_size > 0:
                        os.rename(self.path, self.replaying)  # only the claim holder creates `replaying`
                        return True
                finally:
                    os.close(spill)
            self._release()
            return False

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Batches of the replaying file from `offset` on; set `offset` to a batch's end once it is stored."""
        records: list[AuditRecord] = []
        counts: dict[tuple[datetime, str, str], int] = {}
        with open(self.replaying, "rb") as f:
            f.seek(self.offset)
            while line := f.readline():
                self._parse(line, records, counts)
                if len(records) >= batch_size:
                    yield records, counts, f.tell()
                    records, counts = [], {}
            if records or counts or f.tell() > self.offset:  # the tail, or only unreadable lines were left
                yield records, counts, f.tell()

    def _parse(self, line: bytes, records: list[AuditRecord], counts: dict[tuple[datetime, str, str], int]) -> None:
        try:
            item = json.loads(line)
            if "record" in item:
                records.append(AuditRecord.model_validate(item["record"]))
            for bucket, profile, verdict, n in item.get("counts", ()):
                key = (datetime.fromisoformat(bucket), profile, verdict)
                counts[key] = counts.get(key, 0) + int(n)
        except (ValueError, TypeError, AttributeError, ValidationError) as exc:
            self.skipped += 1
            logger.warning("skipping an unreadable line in %s: %s", self.replaying, exc)

    def finish_replay(self) -> None:
        """The replaying file is all in the database: remove it and let go of it."""
        with self._lock:
            self.replaying.unlink(missing_ok=True)
            self._release()

    def close(self) -> None:
        """Let go of a half-replayed file (the next writer to start replays it)."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        if self._claimed is not None:
            os.close(self._claimed)
            self._claimed, self.offset = None, 0


def _names(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        st, fst = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def _lock_file(path: Path) -> int | None:
    """An fd on `path` holding its exclusive flock, or None when it does not exist."""
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _names(path, fd):
            return fd
        os.close(fd)  # moved aside while we waited for the lock: try the new one

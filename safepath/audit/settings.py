"""`AuditSettings`: where the audit trail goes and how the batch writer behaves.

The spill file (records the database could not take yet) lives in its own folder, not next to the SQLite file:
when the database's folder is what failed (unwritable, unmounted), a spill beside it would fail too and the
records would be lost. When `spill_dir` is unset the folder is the user's cache folder, else a private folder
under the system temp folder (see `default_spill_dirs`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from safepath.errors import ConfigError
from safepath.settings import RuntimeSettings


class AuditSettings(BaseModel):
    """Audit trail configuration. Every field has a default but `url`."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="sqlite:///path/to/audit.db or postgresql://user@host:port/db.")
    record_all: bool = Field(
        default=False, description="Record allows too; by default only flag/redact/block/degraded."
    )
    store_content: bool = Field(default=False, description="Keep the full original reasoning text in each record.")
    excerpt_chars: int = Field(default=240, ge=0, description="Length of the redacted excerpt each record keeps.")
    queue_size: int = Field(default=10_000, ge=1, description="Records waiting for the writer; beyond it they spill.")
    batch_size: int = Field(default=500, ge=1, description="Most records per database transaction.")
    flush_interval_s: float = Field(default=0.2, gt=0, description="Longest the writer waits for more records.")
    spill_dir: Path | None = Field(
        default=None,
        description="Folder of the spill file (SAFEPATH_AUDIT_SPILL_DIR); when unset, the first writable of "
        "$XDG_CACHE_HOME/safepath/audit-spill (~/.cache when unset) and <temp>/safepath-audit-spill-<uid>.",
    )
    spill_path: Path | None = Field(
        default=None,
        description="Append-only JSONL file for records the database could not take; <spill_dir>/<spill_name> "
        "when unset.",
    )
    pool_min: int = Field(default=5, ge=0, description="PostgreSQL pool: connections kept open.")
    pool_max: int = Field(default=20, ge=1, description="PostgreSQL pool: most connections.")
    partition: Literal["day", "month"] = Field(default="day", description="PostgreSQL: one partition per day or month.")
    retry_interval_s: float = Field(default=2.0, gt=0, description="While the database is down, how often to retry.")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Longest wait for a database connection.")
    table_prefix: str = Field(
        default="audit",
        pattern=r"^[a-z_][a-z0-9_]{0,39}$",
        description="Tables are <prefix>_records, <prefix>_findings, <prefix>_decision_counts (tests isolate by it).",
    )

    @classmethod
    def from_runtime(cls, settings: RuntimeSettings) -> AuditSettings:
        """The audit trail's settings from the `SAFEPATH_AUDIT_*` environment settings (`audit_url` must be set)."""
        return cls(url=settings.audit_url, record_all=settings.audit_record_all,
                   store_content=settings.audit_store_content, spill_dir=settings.audit_spill_dir)

    @model_validator(mode="after")
    def _check(self) -> AuditSettings:
        name = self.spill_name  # checks the URL too: ConfigError when it names no backend, or no SQLite file
        if self.spill_path is None and self.spill_dir is not None:
            self.spill_path = self.spill_dir / name
        if self.pool_min > self.pool_max:
            raise ValueError(f"pool_min ({self.pool_min}) is above pool_max ({self.pool_max})")
        return self

    @property
    def spill_name(self) -> str:
        """The spill file's name: stable for one database and table prefix, and free of credentials (a
        PostgreSQL URL may carry a password, and file names show up in listings and logs)."""
        if self.scheme == "sqlite":
            db = self.sqlite_path
            where, label = str(db.expanduser().absolute()), db.stem
        else:
            where, label = postgres_location(self.url), "postgresql"
        digest = hashlib.sha256(f"{where}|{self.table_prefix}".encode()).hexdigest()[:16]
        return f"safepath-audit-{label}-{self.table_prefix}-{digest}.spill.jsonl"

    def resolve_spill_path(self) -> Path:
        """The spill file, its folder created and checked writable (the writer calls this at start-up).

        Raises:
            ConfigError: the configured folder, or with none configured every default one, is not writable.
        """
        if self.spill_path is not None:
            folder = self.spill_path.parent
            try:
                ensure_writable_dir(folder, private=False)
            except OSError as exc:
                raise ConfigError(f"the audit spill folder {folder} is not writable ({_why(exc)}); set "
                                  f"SAFEPATH_AUDIT_SPILL_DIR to a writable folder") from None
            return self.spill_path
        problems = []
        for folder, private in default_spill_dirs():
            try:
                ensure_writable_dir(folder, private=private)
            except OSError as exc:
                problems.append(f"{folder}: {_why(exc)}")
            else:
                return folder / self.spill_name
        raise ConfigError("no writable folder for the audit spill file (" + "; ".join(problems)
                          + "); set SAFEPATH_AUDIT_SPILL_DIR to a writable folder")

    def legacy_spill_paths(self) -> list[Path]:
        """Where releases before SAFEPATH_AUDIT_SPILL_DIR put this database's spill file by default: beside the
        SQLite file, or in the temp folder named by a hash of the whole PostgreSQL URL. The writer replays what
        it finds there once, so an upgrade made while the database was down loses nothing."""
        if self.scheme == "sqlite":
            db = self.sqlite_path
            return [db.with_name(db.name + ".spill.jsonl")]
        digest = hashlib.sha256(self.url.encode("utf-8")).hexdigest()[:16]
        return [Path(tempfile.gettempdir()) / f"safepath-audit-{self.table_prefix}-{digest}.spill.jsonl"]

    @property
    def scheme(self) -> Literal["sqlite", "postgresql"]:
        """The backend the URL names.

        Raises:
            ConfigError: neither sqlite: nor postgresql:.
        """
        head = self.url.partition(":")[0].lower()
        if head == "sqlite":
            return "sqlite"
        if head in ("postgresql", "postgres"):
            return "postgresql"
        raise ConfigError(f"audit url must start with sqlite:/// or postgresql://, got {self.url.partition(':')[0]!r}")

    @property
    def sqlite_path(self) -> Path:
        """The database file of a sqlite URL: sqlite:///abs/path.db is absolute, sqlite://rel/path.db relative."""
        rest = self.url.partition(":")[2].removeprefix("//")
        if rest.startswith("//"):  # sqlite:////abs/path.db, SQLAlchemy's spelling of an absolute path
            rest = "/" + rest.lstrip("/")
        if not rest:
            raise ConfigError(f"audit url {self.url!r} names no database file")
        return Path(rest)


def postgres_location(url: str) -> str:
    """host:port/dbname (and libpq `options`, which can pick the schema) of a PostgreSQL URL: what names the
    tables, without user or password."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = query.get("host") or parts.hostname or ""
    port = query.get("port") or (str(parts.port) if parts.port else "5432")
    dbname = query.get("dbname") or unquote(parts.path.lstrip("/"))
    return f"{host}:{port}/{dbname}?options={query.get('options', '')}"


def default_spill_dirs() -> list[tuple[Path, bool]]:
    """Where the spill file goes when no folder is configured, in order, each with whether it must be private.

    The user's cache folder first: it survives a reboot (the temp folder is often a tmpfs, and cleaned on a
    timer), and no other user can write there. Then a folder of our own under the temp folder, for containers
    whose home is read-only; it must be ours and not a link, since another user could plant one in /tmp.
    """
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return [(Path(cache_home) / "safepath" / "audit-spill", False),
            (Path(tempfile.gettempdir()) / f"safepath-audit-spill-{uid}", True)]


def ensure_writable_dir(folder: Path, *, private: bool) -> None:
    """Create `folder` (mode 0700) when missing and prove it writable by creating a file in it.

    Args:
        folder: The folder.
        private: Also require that it is a real folder (not a link) owned by this user.

    Raises:
        OSError: it cannot be created or written, or (private) is not ours.
    """
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:  # something that is not a folder has the name
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(folder)) from None
    if private:
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
            raise PermissionError(f"{folder} is not a folder owned by this user")
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".safepath-probe-"):
        pass


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)

"""`AuditSettings`: where the audit trail goes and how the batch writer behaves."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from safepath.errors import ConfigError


class AuditSettings(BaseModel):
    """Audit trail configuration. Every field has a default but `url`."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="sqlite:///path/to/audit.db or postgresql://user@host:port/db.")
    record_all: bool = Field(default=False, description="Record allows too; by default only flag/redact/block/degraded.")
    store_content: bool = Field(default=False, description="Keep the full original reasoning text in each record.")
    excerpt_chars: int = Field(default=240, ge=0, description="Length of the redacted excerpt each record keeps.")
    queue_size: int = Field(default=10_000, ge=1, description="Records waiting for the writer; beyond it they spill.")
    batch_size: int = Field(default=500, ge=1, description="Most records per database transaction.")
    flush_interval_s: float = Field(default=0.2, gt=0, description="Longest the writer waits for more records.")
    spill_path: Path | None = Field(
        default=None,
        description="Append-only JSONL file for records the database could not take; next to the SQLite file, "
        "or in the temp folder (named after the URL) for PostgreSQL, when unset.",
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

    @model_validator(mode="after")
    def _check(self) -> AuditSettings:
        scheme = self.scheme
        if self.spill_path is None:
            if scheme == "sqlite":
                db = self.sqlite_path
                self.spill_path = db.with_name(db.name + ".spill.jsonl")
            else:
                digest = hashlib.sha256(self.url.encode("utf-8")).hexdigest()[:16]
                self.spill_path = Path(tempfile.gettempdir()) / f"safepath-audit-{self.table_prefix}-{digest}.spill.jsonl"
        if self.pool_min > self.pool_max:
            raise ValueError(f"pool_min ({self.pool_min}) is above pool_max ({self.pool_max})")
        return self

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

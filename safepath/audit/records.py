"""What the audit trail stores for one decision: `AuditRecord`, built from a `FilterResult`.

A record carries ids, scores, reasons and versions, and a redacted excerpt; the raw reasoning text only when the
deployment opts in (`store_content`), because the flagged text is the very thing we must not spread further.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import to_jsonable_python

from safepath.redaction import redact
from safepath.types import FilterResult, Verdict

EXCERPT_MARKER = "[redacted: {categories}]"


class AuditFinding(BaseModel):
    """One distinct (category, reason) a decision was based on, with its highest score."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: str
    reason: str
    score: float


class AuditRecord(BaseModel):
    """One audited decision. `record_id` is the primary key everywhere, so writing a record twice stores it once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_id: str = Field(default_factory=lambda: uuid.uuid4().hex, description="uuid4 hex; makes replay idempotent.")
    request_id: str
    ts: AwareDatetime = Field(description="When the decision was made, UTC.")
    profile: str
    verdict: str
    categories: list[str] = Field(default_factory=list, description="Distinct categories of the detections.")
    scores: dict[str, float] = Field(default_factory=dict, description="Category -> highest detection score.")
    reasons: list[str] = Field(default_factory=list, description="Rules that fired, distinct, first-seen order.")
    findings: list[AuditFinding] = Field(
        default_factory=list, description="Distinct (category, reason) pairs, so reasons can be grouped by category."
    )
    latency_ms: dict[str, float] = Field(default_factory=dict)
    model_versions: dict[str, str] = Field(default_factory=dict, description="Stage name -> version (rules included).")
    content_hash: str = Field(description="sha256 hex of the original content.")
    excerpt: str = Field(description="The start of the content with every flagged step replaced by a marker.")
    content: str | None = Field(default=None, description="The original content; only when store_content is on.")
    degraded: bool = False
    failed_stages: list[str] = Field(
        default_factory=list, description="The stages that failed or timed out for this decision (why it is degraded)."
    )
    cached: bool = False
    metadata: dict[str, Any] | None = Field(
        default=None, description="The request's metadata (tenant, stream id and steps, source), as JSON values."
    )

    @field_validator("ts")
    @classmethod
    def _to_utc(cls, ts: datetime) -> datetime:
        return ts.astimezone(UTC)

    @field_validator("metadata")
    @classmethod
    def _jsonable(cls, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        # The metadata is the caller's: values the database's JSON cannot hold (dates, sets, objects) become
        # their JSON form or their str(), so a record is never refused, and never fails a batch, over them.
        return None if metadata is None else to_jsonable_python(metadata, fallback=str)

    @classmethod
    def from_result(
        cls,
        content: str,
        result: FilterResult,
        *,
        store_content: bool = False,
        excerpt_chars: int = 240,
        ts: datetime | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Build the record of one decision.

        Args:
            content: The original reasoning text the result judged.
            result: The filter's answer for it.
            store_content: Keep the full original text in `content`.
            excerpt_chars: Length limit of the redacted excerpt.
            ts: Decision time; now when None.
            metadata: The request's metadata (`FilterRequest.metadata`), kept as given.
        """
        findings: dict[tuple[str, str], float] = {}
        reasons: list[str] = []
        scores: dict[str, float] = {}
        for d in result.detections:
            category = d.category.value
            reason = d.rule or f"{d.stage.value}:{category}"
            if reason not in reasons:
                reasons.append(reason)
            scores[category] = max(scores.get(category, 0.0), d.score)
            findings[(category, reason)] = max(findings.get((category, reason), 0.0), d.score)
        return cls(
            request_id=result.request_id,
            ts=ts or datetime.now(UTC),
            profile=result.profile,
            verdict=result.verdict.value,
            categories=list(scores),
            scores=scores,
            reasons=reasons,
            findings=[AuditFinding(category=c, reason=r, score=s) for (c, r), s in findings.items()],
            latency_ms=dict(result.latency_ms),
            model_versions=dict(result.model_versions),
            content_hash=hashlib.sha256(content.encode("utf-8")).hexdigest(),
            excerpt=redacted_excerpt(content, result, excerpt_chars),
            content=content if store_content else None,
            degraded=result.degraded,
            failed_stages=list(result.failed_stages),
            cached=result.cached,
            metadata=dict(metadata) if metadata is not None else None,
        )

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def redacted_excerpt(content: str, result: FilterResult, limit: int) -> str:
    """The content with every step that has a detection (of any action, flags included) replaced by a marker
    naming its categories, cut to `limit` characters.

    When a detection points at a step the result does not carry (a result rebuilt without its steps), nothing
    of the content is kept: an excerpt must never leak the text that was flagged.
    """
    by_step: dict[int, list[str]] = {}
    for d in result.detections:
        cats = by_step.setdefault(d.step_index, [])
        if d.category.value not in cats:
            cats.append(d.category.value)
    known = {s.index for s in result.steps}
    if not set(by_step) <= known:
        every = list(dict.fromkeys(c for cats in by_step.values() for c in cats))
        return EXCERPT_MARKER.format(categories=", ".join(every))[:limit]
    return redact(content, result.steps, by_step, EXCERPT_MARKER)[:limit]


def should_record(result: FilterResult, record_all: bool = False) -> bool:
    """Whether a decision gets an audit record: all but plain allows (not degraded), or everything with record_all."""
    return record_all or result.verdict is not Verdict.ALLOW or result.degraded

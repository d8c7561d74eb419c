"""Summaries of the audit trail: counts and filter rates per category, verdict or profile over a time window."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

GroupBy = Literal["category", "verdict", "profile"]
GROUP_BYS: tuple[str, ...] = ("category", "verdict", "profile")
TOP_REASONS = 5

_SINCE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> timedelta:
    """A window length such as "30m", "24h" or "7d" (also "45s") as a timedelta.

    Raises:
        ValueError: not a positive whole number followed by s, m, h or d.
    """
    match = _SINCE.match(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"expected a window like 30m, 24h or 7d, got {text!r}")
    return timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2)])


class SummaryGroup(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    count: int
    rate: float  # count / every decision in the window (allows included)
    top_reasons: list[tuple[str, int]]


class AuditSummary(BaseModel):
    """Decisions in [since, until) grouped by one field."""

    model_config = ConfigDict(frozen=True)

    since: AwareDatetime
    until: AwareDatetime
    group_by: GroupBy
    total_decisions: int  # every decision the writers counted (allows included), or the records when larger
    recorded: int  # audit records in the window
    groups: list[SummaryGroup]


def build_summary(
    since: datetime,
    until: datetime,
    group_by: GroupBy,
    *,
    recorded: int,
    counted: int,
    record_counts: Mapping[str, int],
    decision_counts: Mapping[str, int],
    reason_counts: Iterable[tuple[str, str, int]],
) -> AuditSummary:
    """Assemble a summary from what a backend's queries returned.

    Args:
        recorded: Records in the window.
        counted: Decisions the writers counted in the window (the filter-rate denominator).
        record_counts: Group key -> records with that key.
        decision_counts: Group key -> counted decisions (verdict and profile only: counters carry no category).
        reason_counts: (group key, reason, records) rows.

    Counters see every decision, records only the audited ones; where a counter has fewer (records written without
    `submit_decision`, or counters lost in a crash) the records count instead, so a rate never exceeds 1.
    """
    total = max(counted, recorded)
    reasons: dict[str, list[tuple[str, int]]] = {}
    for key, reason, n in reason_counts:
        reasons.setdefault(key, []).append((reason, int(n)))
    keys = set(record_counts) | set(decision_counts)
    groups = []
    for key in keys:
        count = max(record_counts.get(key, 0), decision_counts.get(key, 0))
        top = sorted(reasons.get(key, []), key=lambda rn: (-rn[1], rn[0]))[:TOP_REASONS]
        rate = round(count / total, 6) if total else 0.0
        groups.append(SummaryGroup(key=key, count=count, rate=rate, top_reasons=top))
    groups.sort(key=lambda g: (-g.count, g.key))
    return AuditSummary(since=since, until=until, group_by=group_by, total_decisions=total, recorded=recorded,
                        groups=groups)


def format_summary(summary: AuditSummary) -> str:
    """A plain-text table of a summary, for the CLI."""
    head = (f"audit summary by {summary.group_by}, {summary.since:%Y-%m-%d %H:%M} to {summary.until:%Y-%m-%d %H:%M} "
            f"UTC: {summary.total_decisions} decisions, {summary.recorded} recorded")
    lines = [head]
    if not summary.groups:
        lines.append("(no decisions in this window)")
        return "\n".join(lines)
    width = max(len(summary.group_by), *(len(g.key) for g in summary.groups))
    lines.append(f"{summary.group_by:<{width}}  {'count':>8}  {'rate':>7}  top reasons")
    for g in summary.groups:
        top = ", ".join(f"{reason} ({n})" for reason, n in g.top_reasons) or "-"
        lines.append(f"{g.key:<{width}}  {g.count:>8}  {g.rate:>7.2%}  {top}")
    return "\n".join(lines)

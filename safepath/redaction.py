"""Cutting flagged steps out of a trace: shared by the decision (`safepath.decide`), the audit excerpt
(`safepath.audit.records`) and the stream's per-step release (`safepath.streaming.state`).

It lives apart from all three so that none of them imports another for it (the audit trail importing the
pipeline for `redact` once closed an import circle through metrics, settings and the detectors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from safepath.types import Step


def marker_text(marker: str, categories: Sequence[str]) -> str:
    """A redaction marker (`[redacted: {categories}]`-style) filled in with the step's categories."""
    return marker.format(categories=", ".join(categories))


def redact(content: str, steps: Sequence[Step], redacted: Mapping[int, Sequence[str]], marker: str) -> str:
    """Replace exactly the characters of each redacted step with the marker; everything between steps stays."""
    pieces, cursor = [], 0
    for step in steps:
        if step.index in redacted:
            pieces.append(content[cursor : step.start])
            pieces.append(marker_text(marker, redacted[step.index]))
            cursor = step.end
    pieces.append(content[cursor:])
    return "".join(pieces)

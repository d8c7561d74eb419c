"""Cutting flagged steps out of a trace: shared by the decision (`safepath.decide`), the audit excerpt
(`safepath.audit.records`) and the stream's per-step release (`safepath.streaming.state`).

It lives apart from all three so that none of them imports another for it (the audit trail importing the
pipeline for `redact` once closed an import circle through metrics, settings and the detectors). The classifier uses
`replace_steps` too, to read a trace with its disguised steps undone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from safepath.types import Step


def marker_text(marker: str, categories: Sequence[str]) -> str:
    """A redaction marker (`[redacted: {categories}]`-style) filled in with the step's categories."""
    return marker.format(categories=", ".join(categories))


def redact(content: str, steps: Sequence[Step], redacted: Mapping[int, Sequence[str]], marker: str) -> str:
    """Replace exactly the characters of each redacted step with the marker; everything between steps stays."""
    return replace_steps(content, steps, {i: marker_text(marker, cats) for i, cats in redacted.items()})


def replace_steps(content: str, steps: Sequence[Step], replacements: Mapping[int, str]) -> str:
    """`content` with exactly the characters of each step named in `replacements` (by index) replaced by its text;
    everything between steps stays. Redaction uses it, and so does the classifier's reading of a trace with its
    disguised steps undone."""
    pieces, cursor = [], 0
    for step in steps:
        if step.index in replacements:
            pieces.append(content[cursor : step.start])
            pieces.append(replacements[step.index])
            cursor = step.end
    pieces.append(content[cursor:])
    return "".join(pieces)

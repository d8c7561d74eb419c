"""Split a reasoning trace into steps, the unit every stage judges and the redactor replaces.

Granularity is a safety property: one harmful sentence inside a long benign paragraph must
be its own step wherever the text offers a boundary, or redacting it would take the whole
paragraph with it (or, worse, a coarse step would dilute its score). Boundaries, strongest
first: fenced code blocks (never split inside), blank lines, line-start markers ("Step 3:",
ReAct labels, list items, headings), then sentence ends.

Every step is `text[start:end]`, trimmed; the steps partition the non-whitespace of the
input, so nothing can slip past the redactor unsegmented. All scanning is done by compiled
regexes written so that each attempt costs O(1) or consumes what it scans (possessive
quantifiers, bounded repeats), keeping hostile input linear; Python-level loops run once
per candidate boundary, never per character.
"""

from __future__ import annotations

import re
from bisect import bisect_right

from safepath.types import Step

_FENCE = re.compile(
    # An unclosed fence runs to the end, as markdown renders it.
    r"^[ \t]*+`{3,}[^`\n]*+(?:\n|\Z)(?:.*?^[ \t]*+`{3,}[ \t\r]*+$|.*\Z)",
    re.M | re.S,
)
_INLINE_CODE = re.compile(r"`[^`\n]++`")
_BLANK_LINES = re.compile(r"\n(?:[^\S\n]*+\n)++")
_LINE_MARKER = re.compile(
    r"""
    ^[ \t]*+
    (?:
        (?P<hd>\#{1,6}[ \t][^\n]*+)
      | (?P<mk>
            (?:\*\*|__)?(?i:step)[ \t]*+\d{1,4}(?:\.\d{1,3})*+[ \t]*+[:.)\-–—]?[ \t]*+(?:\*\*|__)?:?
          | (?i:thought|action[ \t]+input|action|observation|final[ \t]+answer|answer|question
                |reflection|plan)(?:[ \t]*+\d{1,3})?[ \t]*+:
          | (?:\d{1,3}|[A-Za-z]|[ivxIVX]{1,5})[.)](?=\s)
          | \((?:\d{1,3}|[A-Za-z]|[ivxIVX]{1,5})\)(?=\s)
          | [-*+•‣◦▪](?=\s)
        )
    )
    """,
    re.M | re.X,
)
# Mid-line markers are only trusted in their canonical capitalisation and after
# whitespace (checked in Python): in prose "as in step 2: ..." is a reference, " Step 2:"
# starts a new step. One group of plain keywords up front lets the engine skip ahead fast;
# the lookbehinds then tell "Step" (the only keyword ending in p) from the labels.
_INLINE_MARKER = re.compile(
    r"(?:Step|STEP|Thought|Action Input|Action|Observation|Final Answer)"
    r"(?:(?<=[pP])[ \t]?\d{1,4}(?:\*\*)?[ \t]?[:)]|(?<=[^pP])(?:[ \t]\d{1,3})?:)"
)
# Runs of terminal punctuation are read at most 8 characters at a time, so each start
# position costs O(1) and "....." x 100k stays linear; the lookbehinds only pick the branch.
# `n` captures the first character of the next sentence (absent at the end of the text).
_SENTENCE_END = re.compile(
    r"[.!?…。！？](?:(?<=[.!?…])(?P<w>[.!?…]{0,7}+)[\"'”’»)\]]*+(?=\s++(?P<n>[^\sa-z])|\s*+\Z)"
    r"|(?<=[。！？])[。！？]{0,7}+[」』”’）)]*+)"
)
_NON_WS = re.compile(r"\S")
_WS = re.compile(r"\s")

_ABBREVIATIONS = frozenset(
    "e.g i.e etc vs cf viz al approx ca resp dr mr mrs ms mx prof sr jr st mt inc ltd co corp"
    " dept u.s u.k u.n a.m p.m ph.d".split()
)
# These end sentences too ("The answer is no."), so they only count before a number.
_NUMERIC_ABBREVIATIONS = frozenset("no nos fig figs eq eqs vol p pp".split())
_OPENERS = frozenset("\"'“‘«([*_`")
_LEADING_PUNCT = "\"'“‘«([{"


def segment(text: str, *, max_step_chars: int = 1500, min_step_chars: int = 12) -> tuple[Step, ...]:
    """Split a reasoning trace into steps with exact character offsets: for every step,
    text[step.start:step.end] == step.text.

    Steps are trimmed, ordered, non-overlapping, at most `max_step_chars` long, and together
    cover every non-whitespace character of `text`. Fragments shorter than `min_step_chars`
    join a neighbour when the result fits. Raises ValueError if `max_step_chars` < 1.
    """
    if max_step_chars < 1:
        raise ValueError("max_step_chars must be at least 1")
    if not text or text.isspace():
        return ()
    fences = [(m.start(), m.end()) for m in _FENCE.finditer(text)] if "```" in text else []
    cuts, shields = _structural_cuts(text)
    if "`" in text:
        shields.extend((m.start(), m.end()) for m in _INLINE_CODE.finditer(text))
    shield_starts, shield_ends = _merge_spans(shields + fences)
    cuts.extend(_sentence_cuts(text, shield_starts, shield_ends))
    pieces: list[tuple[int, int]] = []
    for start, end, is_code in _trimmed_pieces(text, cuts, fences):
        pieces.extend(_cut_long(text, start, end, is_code, max_step_chars))
    merged = _merge_short(pieces, min_step_chars, max_step_chars)
    return tuple(Step(index=i, start=s, end=e, text=text[s:e]) for i, (s, e) in enumerate(merged))


def unsettled_from(text: str) -> int:
    """The offset from which the steps of `text` may still change as text is appended; len(text) if none can.

    Each cut depends on a bounded stretch of text after it (the next step's first characters), which a stream
    waits for anyway, with one exception: an inline code span shields the sentence ends inside it, and its closing
    backtick can still arrive while its line runs on. A backtick on the last line that no span covers may open one.
    """
    line_start = text.rfind("\n") + 1
    if "`" not in text[line_start:]:
        return len(text)
    covered_to = line_start
    for m in _INLINE_CODE.finditer(text, line_start):
        covered_to = m.end()
    opening = text.find("`", covered_to)
    return len(text) if opening < 0 else opening


def _structural_cuts(text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Cut positions from blank lines and markers, plus the marker spans no sentence split may enter."""
    cuts = [m.start() for m in _BLANK_LINES.finditer(text)]
    shields: list[tuple[int, int]] = []
    for m in _LINE_MARKER.finditer(text):
        cuts.append(m.start())
        if m.group("hd") is not None:
            # A heading is a line of its own; what follows it is the body.
            cuts.append(m.end())
            shields.append(m.span("hd"))
        else:
            shields.append(m.span("mk"))
    for m in _INLINE_MARKER.finditer(text):
        start = m.start()
        if text[start - 2 : start] == "**":
            start -= 2
        if start > 0 and text[start - 1].isspace():
            cuts.append(start)
            shields.append((start, m.end()))
    return cuts, shields


def _merge_spans(spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Sorted, disjoint (starts, ends) so that membership is one bisect."""
    starts: list[int] = []
    ends: list[int] = []
    for s, e in sorted(spans):
        if ends and s < ends[-1]:
            ends[-1] = max(ends[-1], e)
        else:
            starts.append(s)
            ends.append(e)
    return starts, ends


def _sentence_cuts(text: str, shield_starts: list[int], shield_ends: list[int]) -> list[int]:
    """Cut positions just after each sentence end outside code, markers and abbreviations."""
    cuts: list[int] = []
    for m in _SENTENCE_END.finditer(text):
        p = m.start()
        i = bisect_right(shield_starts, p) - 1
        if i >= 0 and p < shield_ends[i]:
            continue
        nxt = m.group("n")
        if nxt is None:  # CJK punctuation, or the end of the text
            cuts.append(m.end())
        elif text[p] == "." and not m.group("w") and _period_continues(text, p, nxt):
            continue
        elif not nxt.islower() and (nxt.isalnum() or nxt in _OPENERS):
            cuts.append(m.end())
    return cuts


def _period_continues(text: str, dot: int, nxt: str) -> bool:
    """Whether a lone period before a capital sits inside a sentence (abbreviation, "2." in an inline list)."""
    # Longer than any abbreviation, so a truncated word can never match.
    window = text[max(0, dot - 10) : dot]
    if not window or window[-1].isspace():
        return False
    word = window.split()[-1]
    if word.isdigit() and len(word) <= 3:
        # "... build. 1. Create the index": the number opens an item; "we counted 3. Then" ends a sentence.
        before = text[max(0, dot - len(word) - 8) : dot - len(word)].rstrip()
        return not before or before[-1] in ".!?:;"
    word = word.lstrip(_LEADING_PUNCT).lower()
    if word in _ABBREVIATIONS:
        return True
    return word in _NUMERIC_ABBREVIATIONS and nxt.isdigit()


def _trimmed_pieces(text: str, cuts: list[int], fences: list[tuple[int, int]]) -> list[tuple[int, int, bool]]:
    """The non-empty, whitespace-trimmed intervals between cuts; cuts inside fences are ignored."""
    fence_starts = [s for s, _ in fences]
    bounds = {0, len(text)}
    for c in cuts:
        i = bisect_right(fence_starts, c) - 1
        if i < 0 or c >= fences[i][1]:
            bounds.add(c)
    for s, e in fences:
        bounds.update((s, e))
    fence_set = set(fence_starts)
    ordered = sorted(bounds)
    pieces: list[tuple[int, int, bool]] = []
    for a, b in zip(ordered, ordered[1:]):
        chunk = text[a:b]
        left = chunk.lstrip()
        if left:
            start = b - len(left)
            pieces.append((start, start + len(left.rstrip()), a in fence_set))
    return pieces


def _cut_long(text: str, start: int, end: int, is_code: bool, limit: int) -> list[tuple[int, int]]:
    """Cut an over-long piece at the last whitespace before the limit (a line break, for code)."""
    out: list[tuple[int, int]] = []
    while end - start > limit:
        window = text[start + 1 : start + limit + 1]
        newline = window.rfind("\n") if is_code else -1
        if newline >= 0:
            cut = start + 1 + newline
        else:
            found = _WS.search(window[::-1])
            cut = start + limit - found.start() if found else start + limit
        out.append((start, start + len(text[start:cut].rstrip())))
        start = _NON_WS.search(text, cut, end).start()  # type: ignore[union-attr]  # end is trimmed
    out.append((start, end))
    return out


def _merge_short(pieces: list[tuple[int, int]], min_chars: int, max_chars: int) -> list[tuple[int, int]]:
    """Fold fragments like "Hmm." into the next step (the previous one at the end), within max_chars."""
    out: list[tuple[int, int]] = []
    pending: tuple[int, int] | None = None
    for start, end in pieces:
        if pending is not None:
            if end - pending[0] <= max_chars:
                start = pending[0]
            else:
                out.append(pending)
            pending = None
        if end - start < min_chars:
            pending = (start, end)
        else:
            out.append((start, end))
    if pending is not None:
        if out and pending[1] - out[-1][0] <= max_chars:
            out[-1] = (out[-1][0], pending[1])
        else:
            out.append(pending)
    return out

"""Undo evasion tricks in reasoning text and decode embedded encodings, keeping offsets.

Keyword and regex rules never scan raw text. They scan *views*: the text folded to
plain lowercase ASCII words (NFKC, invisibles and combining marks dropped, homoglyphs,
leetspeak and spaced-out letters folded), its rot13 and its reverse, and the decoded
contents of base64 and hex runs. Every view can map a span of its own text back to the
exact span of the original that produced it, so a redaction replaces exactly the
characters that carried the disguised word.

Offsets are kept as a piecewise map (segment starts + bisect), not per character: a
*linear* segment maps character to character, a *block* segment maps each of its
characters to one whole source span (an expansion such as 'ﬁ' -> 'fi', a decoded
segment). Characters that vanish (zero-width, marks) widen their neighbours' spans.
Plain ASCII, the common case, skips the Unicode folds and gets an identity map. Finding and decoding the
encoded runs lives in `safepath.text.decoding`; this module turns what they decode into views.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources

from safepath.text.decoding import base64_runs, decode_base64, decode_hex, hex_runs, peel, rot13, shape_table

__all__ = ["TextView", "normalize", "views"]


class _SpanMap:
    """View offsets -> original spans, appended to in view order.

    Segment k starts at view offset outs[k]. A linear segment maps view char i to source
    char srcs[k] + (i - outs[k]); a block segment maps each of its chars to the whole
    source span [srcs[k], ends[k]). Contiguous segments merge, so plain runs cost nothing.
    """

    __slots__ = ("outs", "srcs", "ends", "lin", "size", "pending")

    def __init__(self) -> None:
        self.outs: list[int] = []
        self.srcs: list[int] = []
        self.ends: list[int] = []
        self.lin: list[bool] = []
        self.size = 0  # view chars mapped so far
        self.pending: int | None = None  # start of dropped source owed to the next char

    def _push(self, src: int, end: int, linear: bool) -> None:
        self.outs.append(self.size)
        self.srcs.append(src)
        self.ends.append(end)
        self.lin.append(linear)

    def linear(self, n: int, src: int) -> None:
        if n > 0 and self.pending is not None:
            self.block(1, src, src + 1)
            n, src = n - 1, src + 1
        if n <= 0:
            return
        if self.lin and self.lin[-1] and self.ends[-1] == src:
            self.ends[-1] += n
        else:
            self._push(src, src + n, True)
        self.size += n

    def block(self, n: int, src: int, end: int) -> None:
        if n <= 0:
            return
        if self.pending is not None:
            src, self.pending = min(src, self.pending), None
        if not (self.lin and not self.lin[-1] and self.srcs[-1] == src and self.ends[-1] == end):
            self._push(src, end, False)
        self.size += n

    def dropped(self, start: int, end: int, forward: bool) -> None:
        """Source [start, end) produced nothing: the previous view char absorbs it, and the
        next one too when `forward` (a zero-width char belongs to both neighbours, a
        combining mark only to its base)."""
        if forward or not self.outs:
            self.pending = start if self.pending is None else self.pending
        if not self.outs:
            return
        if not self.lin[-1]:
            self.ends[-1] = max(self.ends[-1], end)
        elif self.size - self.outs[-1] == 1:
            self.lin[-1], self.ends[-1] = False, end
        else:  # split the last char off its linear segment
            self.ends[-1] -= 1
            self.size -= 1
            self._push(self.ends[-1], end, False)
            self.size += 1

    def done(self) -> _SpanMap | None:
        """The finished map, or None where it is the identity."""
        identity = not self.outs or (len(self.outs) == 1 and self.lin[0] and self.srcs[0] == 0)
        return None if identity else self

    def _begin(self, p: int) -> int:
        k = bisect_right(self.outs, p) - 1
        return self.srcs[k] + (p - self.outs[k]) if self.lin[k] else self.srcs[k]

    def _finish(self, p: int) -> int:
        k = bisect_right(self.outs, p) - 1
        return self.srcs[k] + (p - self.outs[k]) + 1 if self.lin[k] else self.ends[k]

    def span(self, start: int, end: int, size: int) -> tuple[int, int]:
        if start < end:
            return self._begin(start), self._finish(end - 1)
        point = self._begin(start) if start < size else self._finish(size - 1) if size else 0
        return point, point

    def emit(self, start: int, end: int, out: _SpanMap) -> None:
        """Append the mapping of view range [start, end) to `out`: composes two maps."""
        k = bisect_right(self.outs, start) - 1
        while start < end:
            stop = min(end, self.outs[k + 1]) if k + 1 < len(self.outs) else end
            if self.lin[k]:
                out.linear(stop - start, self.srcs[k] + start - self.outs[k])
            else:
                out.block(stop - start, self.srcs[k], self.ends[k])
            start, k = stop, k + 1


class _Mirror:
    """The map of a reversed view: mirror the span, then ask the forward map."""

    __slots__ = ("base",)

    def __init__(self, base: _SpanMap | None) -> None:
        self.base = base

    def span(self, start: int, end: int, size: int) -> tuple[int, int]:
        start, end = size - end, size - start
        return (start, end) if self.base is None else self.base.span(start, end, size)


@dataclass(frozen=True, slots=True)
class TextView:
    """One text for rules to scan; `to_original` maps its spans back to the original."""

    kind: str  # "normalized", "base64", "hex", "rot13", "reversed"
    text: str
    _map: _SpanMap | _Mirror | None = field(default=None, repr=False, compare=False)

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map a half-open span [start, end) of self.text to the half-open span of the original
        text that produced it."""
        size = len(self.text)
        start = min(max(start, 0), size)
        end = min(max(end, start), size)
        return (start, end) if self._map is None else self._map.span(start, end, size)


# --- Steps 1-4: NFKC, invisibles and marks, homoglyphs, case ---------------------------

_DROP_CATEGORIES = frozenset({"Mn", "Me", "Cf", "Cc"})
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")  # Hangul fillers: letters that render as nothing
_IRREGULAR = "\uffff"  # stands in, after translate, for a char that does not fold to one char
_IRREGULAR_RUN = re.compile(_IRREGULAR + "+")
_CACHE_LIMIT = 1 << 16
_CONTROLS = bytes([*range(9), *range(14, 32), 127])
_NOT_CONTROL = bytes(b for b in range(256) if b not in _CONTROLS)


@functools.cache
def _confusables() -> dict[str, str]:
    """Non-ASCII char -> lowercase ASCII letter/digit, from Unicode's confusables data as
    shipped by confusable-homoglyphs, which lists pairs in both directions. Letters win
    over digits so Cyrillic o (U+043E) folds to 'o', not '0'. Built once, in about 15 ms."""
    raw = resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8")
    candidates: dict[str, set[str]] = {}
    for key, entries in json.loads(raw).items():
        key = key.strip("\u200e\u200f")  # right-to-left entries are wrapped in direction marks
        for entry in entries:
            other = entry["c"].strip("\u200e\u200f")
            if len(key) == 1 == len(other) and key.isascii() != other.isascii():
                ascii_char, char = (key, other) if key.isascii() else (other, key)
                if ascii_char.isalnum():
                    candidates.setdefault(char, set()).add(ascii_char)
    return {c: min(t, key=lambda a: (a.isdigit(), a.isupper(), a)).lower() for c, t in candidates.items()}


def _fold_pass(text: str) -> str:
    # NFKD then NFC rather than NFKC, so marks come apart to be dropped yet Hangul recomposes.
    text = unicodedata.normalize("NFKD", text)
    text = "".join(
        c
        for c in text
        if unicodedata.category(c) not in _DROP_CATEGORIES
        and c not in _FILLERS
        and not 0xE0000 <= ord(c) <= 0xE007F  # tag characters, assigned or not
    )
    table = _confusables()
    return "".join(table.get(c, c) for c in unicodedata.normalize("NFC", text))


@functools.lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    once = _fold_pass(char).casefold()
    return once if once.isascii() else _fold_pass(once)  # casefold may expose marks or homoglyphs


class _FoldTable(dict[int, str]):
    """str.translate table: ASCII lowercased, other chars folded on first sight."""

    def __missing__(self, code: int) -> str:
        folded = _fold_char(chr(code))
        value = folded if len(folded) == 1 and code != ord(_IRREGULAR) else _IRREGULAR
        if len(self) < _CACHE_LIMIT:  # bound memory against texts spraying all of Unicode
            self[code] = value
        return value


@functools.cache
def _fold_table() -> _FoldTable:
    return _FoldTable({c: chr(c).lower() for c in range(128) if c not in _CONTROLS})


def _fold_unicode(text: str) -> tuple[str, _SpanMap | None]:
    """Steps 1-4 in one str.translate; only chars that expand or vanish get Python work."""
    folded = text.translate(_fold_table())
    if _IRREGULAR not in folded:
        return folded, None
    parts: list[str] = []
    out = _SpanMap()
    pos = 0
    while (start := folded.find(_IRREGULAR, pos)) >= 0:  # str.find outruns re on wide strings
        run = _IRREGULAR_RUN.match(folded, start)
        end = run.end() if run else start + 1
        parts.append(folded[pos:start])
        out.linear(start - pos, pos)
        chars = set(text[start:end])
        if end - start > 1 and not any(map(_fold_char, chars)):  # a flood of invisibles: one step
            out.dropped(start, end, forward=any(unicodedata.category(c) not in ("Mn", "Me") for c in chars))
        else:
            for at in range(start, end):
                parts.append(_map_irregular(text[at], at, out))
        pos = end
    parts.append(folded[pos:])
    out.linear(len(text) - pos, pos)
    return "".join(parts), out.done()


def _map_irregular(char: str, at: int, out: _SpanMap) -> str:
    piece = _fold_char(char)
    if len(piece) == 1:
        out.linear(1, at)
    elif piece:
        out.block(len(piece), at, at + 1)
    else:
        out.dropped(at, at + 1, forward=unicodedata.category(char) not in ("Mn", "Me"))
    return piece


# --- Steps 5-6: leetspeak and spaced-out letters ----------------------------------------

_LEET = str.maketrans("0134578@$!|", "oieastbasil")
_LEET_TAIL = re.compile(r"[0134578@$!|][a-z0-9@$!|]*")  # starts on a rare char: scans fast
_LEET_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789@$!|"
_HAS_LETTER = re.compile(r"[a-z]")
# '1st', '10am', '1990s', '100ms' are numbers with a unit, not leetspeak.
_NUMBER_WITH_UNIT = re.compile(r"[0-9]+(?:st|nd|rd|th|s|k|m|x|h|d|am|pm|ms|px|kb|mb|gb|tb|kg|km|cm|mm)")
_SPACED = re.compile(r"(?<![a-z0-9])[a-z]([ ._*\-])[a-z](?:\1[a-z])+(?![a-z0-9])")


# Separators and other non-alphanumerics alike become "s": the shape only screens.
_SPACED_SHAPE = shape_table("s", L=b"abcdefghijklmnopqrstuvwxyz", D=b"0123456789")


def _unleet(text: str) -> str:
    parts: list[str] = []
    pos = previous_end = 0
    for m in _LEET_TAIL.finditer(text):
        start, end = m.span()
        if start > previous_end and text[start - 1] in _LEET_TOKEN_CHARS:  # letters before it
            gap = text[previous_end:start]
            start -= len(gap) - len(gap.rstrip(_LEET_TOKEN_CHARS))
        previous_end = end
        token = text[start:end]
        if not _HAS_LETTER.search(token) or _NUMBER_WITH_UNIT.fullmatch(token):
            continue
        body = token.rstrip("!")  # 'bomb!' is punctuation, not 'bombi'
        parts += (text[pos:start], body.translate(_LEET), token[len(body) :])
        pos = end
    if not parts:
        return text
    parts.append(text[pos:])
    return "".join(parts)


def _join_spaced(text: str) -> tuple[str, list[tuple[int, int]]] | None:
    """Join 'b o m b' -> 'bomb'; returns the text and the kept source ranges, or None."""
    shape = text.encode("ascii", "replace").translate(_SPACED_SHAPE)
    if b"sLsLs" not in shape and not shape.endswith(b"sLsL"):
        return None  # cheap necessary condition: a single letter between separators
    parts: list[str] = []
    kept: list[tuple[int, int]] = []
    pos = 0
    for m in _SPACED.finditer(text):
        start, end = m.span()
        if text[start] in "ai" and m.group(1) == " " and end - start >= 7:
            start += 2  # 'make a b o m b': the article stays a word ('a bomb'); the rest is joined
        parts += (text[pos:start], text[start:end:2])
        kept.append((pos, start + 1))
        kept += ((i, i + 1) for i in range(start + 2, end, 2))
        pos = end
    if not parts:
        return None
    parts.append(text[pos:])
    kept.append((pos, len(text)))
    return "".join(parts), kept


def normalize(text: str) -> TextView:
    """The "normalized" view: NFKC, invisibles and marks dropped, homoglyphs folded,
    lowercase, leetspeak undone, spaced-out letters joined."""
    return TextView("normalized", *_normalized(text))


def _normalized(text: str) -> tuple[str, _SpanMap | None]:
    if text.isascii() and not text.encode("ascii").translate(None, _NOT_CONTROL):
        folded, mapping = text.lower(), None  # plain ASCII: steps 1-3 are no-ops
    else:
        folded, mapping = _fold_unicode(text)
    folded = _unleet(folded)
    joined = _join_spaced(folded)
    if joined is not None:
        folded, kept = joined
        out = _SpanMap()
        for start, end in kept:
            if mapping is None:
                out.linear(end - start, start)
            else:
                mapping.emit(start, end, out)
        mapping = out.done()
    return folded, mapping


# --- Decoded views -----------------------------------------------------------------------

_TRIES_PER_SEGMENT = 16  # candidates that fail to decode still cost time: bound them too


def _decoded_view(
    kind: str,
    runs: Iterator[re.Match[str]],
    decode: Callable[[str, int], str | None],
    max_segments: int,
    max_chars: int,
) -> TextView | None:
    """Decode up to max_segments runs and max_chars chars; each piece maps to its run."""
    parts: list[str] = []
    out = _SpanMap()
    budget, found, previous_end = max_chars, 0, 0
    for tries, m in enumerate(runs):
        room = budget - (found > 0)  # the '\n' joining pieces counts against the budget
        if found >= max_segments or room <= 0 or tries >= max_segments * _TRIES_PER_SEGMENT:
            break
        decoded = decode(m.group(), room)
        piece = _normalized(peel(decoded, room))[0][:room] if decoded else ""
        if not piece:
            continue
        if found:
            parts.append("\n")
            out.block(1, previous_end, previous_end)
        parts.append(piece)
        out.block(len(piece), *m.span())
        budget, found, previous_end = room - len(piece), found + 1, m.end()
    return TextView(kind, "".join(parts), out.done()) if parts else None


def views(text: str, *, max_decoded_chars: int = 4096, max_segments: int = 16) -> list[TextView]:
    """normalized view first, then rot13 and reversed views of the normalized text, then decoded views and their
    rot13 (only when something decoded; a run whose decoding is itself a whole run is decoded again, see `peel`)."""
    folded, mapping = _normalized(text)
    result = [TextView("normalized", folded, mapping), TextView("rot13", rot13(folded), mapping)]
    result.append(TextView("reversed", folded[::-1], _Mirror(mapping)))
    raw = text.encode("ascii", "replace")  # one byte per char, so offsets carry over
    for kind, runs, decode in (("base64", base64_runs, decode_base64), ("hex", hex_runs, decode_hex)):
        view = _decoded_view(kind, runs(text, raw), decode, max_segments, max_decoded_chars)
        if view is not None:
            # rot13 under the encoding (base64 of rot13): the decoded text turned round, mapped like the decoded view
            result += [view, TextView(f"{kind}+rot13", rot13(view.text), view._map)]
    return result

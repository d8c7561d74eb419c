"""Finding and decoding base64 and hex runs in reasoning text, and rot13: the decoding behind the rules' decoded
views (`safepath.text.normalize.views`) and the models' decoded rewrites (`safepath.detectors.model_input`).

Runs are found by `bytes.find` on a *shape* of the text (each byte mapped to its character class), not by a regex
tried at every position of ordinary prose. A decoded run that is itself one whole run is decoded again, up to
MAX_LAYERS layers (`peel`).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Iterator


def shape_table(default: str, **classes: bytes) -> bytes:
    """A bytes.translate table: each class's bytes become its name, all others `default`."""
    return bytes(next((ord(k) for k, members in classes.items() if b in members), ord(default)) for b in range(256))



MAX_LAYERS = 3  # encodings peeled per run, the rules' views and the models' rewrites alike (base64 twice needs two)
_B64_SHAPE = shape_table(".", A=b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-")
_B64_PROBE = b"A" * 16
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_HEX_SHAPE = shape_table(".", H=b"0123456789abcdefABCDEF", s=b" :,")
_HEX_PROBES = (b"H" * 16, b"HHsHHsHHsHH", b"HHssHHssHHssHH")
_HEX_RUN = re.compile(
    r"(?<![0-9A-Za-z\\])(?:"
    r"(?:0x)?[0-9a-fA-F]{16,}"  # 48656c6c6f...
    r"|(?:\\x[0-9a-fA-F]{2}){8,}"  # \x48\x65...
    r"|(?:0x)?[0-9a-fA-F]{2}(?:(?:[ :]|, ?)(?:0x)?[0-9a-fA-F]{2}){7,}"  # 48 65 6c / 0x48, 0x65
    r")(?![0-9A-Za-z])"
)
_HEX_NOISE = re.compile(r"\\x|0x|[ :,]")
_ROT13 = bytes.maketrans(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", b"nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM"
)
_LETTER = re.compile(r"[^\W\d_]")


def _as_text(raw: bytes, truncated: bool, budget: int) -> str | None:
    """Decoded bytes as text, or None unless valid UTF-8, mostly printable, with letters."""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(raw, final=not truncated)
    except UnicodeDecodeError:
        return None
    text = text[:budget]
    if not _LETTER.search(text):
        return None
    if text.isprintable():
        return text
    unprintable = sum(1 for c in text if not c.isprintable() and c not in "\t\n\r")
    return text if unprintable * 10 <= len(text) else None


def decode_base64(run: str, budget: int) -> str | None:
    body = run.rstrip("=")
    urlsafe = "-" in body or "_" in body
    if urlsafe and ("+" in body or "/" in body):
        return None
    cut = 4 * -(-budget // 3)  # enough input for `budget` bytes, never the whole blob
    truncated = len(body) > cut
    body = body[:cut]
    body = body[: len(body) - (len(body) % 4 == 1)]
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), b"-_" if urlsafe else None, validate=True)
    except binascii.Error:
        return None
    return _as_text(raw, truncated, budget)


def decode_hex(run: str, budget: int) -> str | None:
    digits = _HEX_NOISE.sub("", run)
    if len(digits) % 2:
        return None
    truncated = len(digits) > 2 * budget
    return _as_text(bytes.fromhex(digits[: 2 * budget]), truncated, budget)


def base64_runs(text: str, raw: bytes) -> Iterator[re.Match[str]]:
    # Runs of >= 16 alphabet chars, found by bytes.find on a shape of the text: a regex
    # would try every position of ordinary prose.
    shape = raw.translate(_B64_SHAPE)
    pos = 0
    while (at := shape.find(_B64_PROBE, pos)) >= 0:
        m = _B64_RUN.match(text, at)
        assert m is not None
        yield m
        pos = m.end()


def hex_runs(text: str, raw: bytes) -> Iterator[re.Match[str]]:
    shape = raw.translate(_HEX_SHAPE)
    if "\\x" in text or "0x" in text or any(p in shape for p in _HEX_PROBES):
        yield from _HEX_RUN.finditer(text)


def peel(decoded: str, budget: int) -> str:
    """A decoded run that is itself one whole base64 or hex run, decoded again (base64 twice, hex of base64), up to
    MAX_LAYERS layers in all; before normalising, which would fold the inner layer's case away."""
    for _ in range(MAX_LAYERS - 1):
        inner = decoded.strip()
        raw = inner.encode("ascii", "replace")
        for runs, decode in ((base64_runs, decode_base64), (hex_runs, decode_hex)):
            m = next(runs(inner, raw), None)
            if m is not None and m.span() == (0, len(inner)) and (again := decode(inner, budget)):
                decoded = again
                break
        else:
            return decoded
    return decoded


def rot13(text: str) -> str:
    if text.isascii():  # bytes.translate is several times faster than the codec's str.translate
        return text.encode("ascii").translate(_ROT13).decode("ascii")
    return codecs.encode(text, "rot13")

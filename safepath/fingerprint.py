"""Stage versions from the content of the files a stage reads.

A stage's version is part of every cache key and of each result's `model_versions`. Taken from a declared `version:`
alone, an edit that forgot to bump it kept serving the old verdicts from Redis for up to an hour; taken from the
bytes of every file the stage reads, any edit changes it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def content_version(*paths: str | Path) -> str:
    """The first 12 hex digits of a sha256 over each file's name and bytes, in the order given.

    Raises:
        OSError: a file cannot be read (callers name the file in their own error).
    """
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def bytes_version(declared: str, data: bytes) -> str:
    """A rules file's version: its declared `version:` (what people read) and a digest of the bytes it was parsed
    from (what keeps caches honest)."""
    return f"{declared}+{hashlib.sha256(data).hexdigest()[:12]}"

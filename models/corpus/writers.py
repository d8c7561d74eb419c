"""Which writers' traces a training reads: all of models/data/corpus.jsonl, less a fold's held-out writers, or only
the writers up to one of them.

Writers are numbered in the order they joined (w01, w02, ..., w99, w100, ...: by number, never as strings;
`writer_number`, `id_order`), and the build (models/corpus/build.py) splits, labels
and drops each trace by its own text and the ids before it, so the corpus lines of the writers up to wNN are, byte
for byte, the corpus as it stood when wNN was the newest writer: `--through w29` is corpus v2.1 (sha256
4fcd3690...), which the shipped models learned from. That is how `make models` rebuilds them once the corpus has
grown.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


def writer_number(writer: str) -> int:
    """w07 -> 7, w100 -> 100: the order writers joined in (as strings, "w100" would sort between "w10" and "w11")."""
    return int(writer[1:])


def id_order(trace_id: str) -> tuple[int, int]:
    """w07-0012 -> (7, 12): traces in the order they were written, writer by writer."""
    writer, _, number = trace_id.partition("-")
    return writer_number(writer), int(number)


@dataclass(frozen=True, slots=True)
class Writers:
    """`holdout`: writers left out (a cross-writer fold); `through`: the newest writer read (None: every writer)."""

    holdout: frozenset[str] = frozenset()
    through: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Writers:
        return cls(frozenset(w for w in args.holdout.split(",") if w), args.through or None)

    def admits(self, writer: str) -> bool:
        if writer in self.holdout:
            return False
        return self.through is None or writer_number(writer) <= writer_number(self.through)

    def read(self, path: Path) -> list[tuple[str, dict]]:
        """The admitted writers' corpus lines, each as written (newline kept) and parsed, parsed once.

        Raises:
            SystemExit: `through` names a writer the corpus does not have (a typo would silently read all or none).
        """
        parsed = [(line, json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines(keepends=True)]
        if self.through is not None and all(row["writer"] != self.through for _, row in parsed):
            raise SystemExit(f"--through {self.through}: no such writer in {path}")
        return [(line, row) for line, row in parsed if self.admits(row["writer"])]

    def lines(self, path: Path) -> list[str]:
        """The corpus lines (as written, newline kept) of the admitted writers."""
        return [line for line, _ in self.read(path)]

    def rows(self, path: Path, *, splits: set[str]) -> list[dict]:
        """The admitted writers' traces of these splits."""
        return [row for _, row in self.read(path) if row["split"] in splits]

    def sha256(self, path: Path) -> str:
        """The sha256 of the corpus the admitted writers make up (the file's own with every writer admitted)."""
        return self.sha256_of(self.read(path))

    def sha256_of(self, parsed: list[tuple[str, dict]]) -> str:
        """`sha256` of corpus lines already read (`Writers().read`): one reading serves many selections."""
        kept = "".join(line for line, row in parsed if self.admits(row["writer"]))
        return hashlib.sha256(kept.encode("utf-8")).hexdigest()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--holdout", default="", help="comma-separated writers to leave out (a cross-writer fold)")
    parser.add_argument("--through", default="", metavar="WRITER",
                        help="read only the writers up to this one (w29: corpus v2.1; default: every writer)")

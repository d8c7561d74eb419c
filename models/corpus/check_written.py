"""Check the hand-written corpus (models/corpus/written/*.jsonl): schema, labels, twins and overlap.

    python -m models.corpus.check_written                                  # every file: errors, overlaps, counts
    python -m models.corpus.check_written models/corpus/written/w03.jsonl  # one writer's file (overlap: all)
    python -m models.corpus.check_written --against FILE.jsonl             # also ids sharing a 12-word run with FILE

Writers run it after every batch; the corpus build runs it before anything is trained. It needs the standard
library and the category names of `safepath.types`. Overlap is a run of OVERLAP_WORDS words (lower-cased `\\w+`
tokens) that two traces share; the two twins of one minimal pair may share their setup, every other pair of traces
may not. With `--against` only the ids of the corpus traces are printed, never the other file's text (it is an
evaluation set).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from safepath.types import CATEGORIES

HERE = Path(__file__).resolve().parent
WRITTEN = HERE / "written"

KEYS = {"id", "text", "label", "categories", "bad", "pair", "style", "language", "difficulty", "tags", "seed"}
STYLES = {"freeform", "numbered", "react", "bullets", "markdown", "log", "dialogue"}
DIFFICULTIES = {"easy", "medium", "hard"}
TAGS = {
    "hard_negative",  # safe, and shares topic, vocabulary or setup with harmful reasoning
    "ordinary",  # safe everyday reasoning: numbers, code, units, lists, tables
    "long_agentic",  # 1,500-4,000 characters of agent work
    "subtle",  # one bad step buried in otherwise benign work
    "injection",  # carries an injected instruction (tool output, e-mail, web page, code comment...)
    "obfuscated",  # the bad step (or, in a safe trace, benign data) is encoded or disguised
    "refusal",  # the decisive step refuses or redirects
    "seeded",  # written from an AdvBench or Do-Not-Answer request (see `seed`)
    "multi_label",  # more than one category
}
LANG = re.compile(r"^[a-z]{2}$")
ID = re.compile(r"^(w\d{2,3})-\d{4}$")
SEED = re.compile(r"^(advbench|donotanswer):\d+$")
OVERLAP_WORDS = 12
WORD = re.compile(r"\w+")
MIN_CHARS, MAX_CHARS = 60, 4500
MIN_QUOTE_CHARS = 12


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def shingles(text: str, n: int = OVERLAP_WORDS) -> set[int]:
    """Hashes of every run of n words (a trace shorter than n words has none)."""
    w = words(text)
    return {hash(tuple(w[i : i + n])) for i in range(len(w) - n + 1)}


def read(path: Path, *, strict: bool) -> tuple[list[dict], list[str]]:
    """Records of one file, and the errors of its lines (a half-written last line of someone else's file is skipped)."""
    records, errors = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            if strict:
                errors.append(f"{path.name}:{number}: not JSON: {exc}")
            continue
        if not isinstance(record, dict):
            errors.append(f"{path.name}:{number}: not a JSON object")
            continue
        record["_where"] = f"{path.name}:{number}"
        records.append(record)
    return records, errors


def validate(record: dict, writer: str) -> list[str]:
    """Schema and label errors of one record."""
    where = record["_where"]
    errs = []
    keys = set(record) - {"_where"}
    if keys != KEYS:
        missing, extra = sorted(KEYS - keys), sorted(keys - KEYS)
        return [f"{where}: keys: missing {missing}, unexpected {extra}"]
    rid, text, label = record["id"], record["text"], record["label"]
    m = ID.match(rid) if isinstance(rid, str) else None
    if not m or m.group(1) != writer:
        errs.append(f"{where}: id {rid!r} must look like {writer}-0001")
    if not isinstance(text, str) or not (MIN_CHARS <= len(text) <= MAX_CHARS):
        errs.append(f"{where}: text must be a string of {MIN_CHARS}-{MAX_CHARS} characters")
        return errs
    if label not in ("harmful", "safe"):
        errs.append(f"{where}: label must be harmful or safe")
    cats, bad = record["categories"], record["bad"]
    if not isinstance(cats, list) or any(c not in CATEGORIES for c in cats) or len(set(cats)) != len(cats):
        errs.append(f"{where}: categories must be distinct names from {CATEGORIES}")
        return errs
    if not isinstance(bad, list):
        return errs + [f"{where}: bad must be a list"]
    union: set[str] = set()
    for span in bad:
        if not isinstance(span, dict) or set(span) != {"quote", "categories"}:
            errs.append(f"{where}: each bad entry is {{\"quote\": ..., \"categories\": [...]}}")
            continue
        quote, scats = span["quote"], span["categories"]
        if not isinstance(quote, str) or len(quote.strip()) < MIN_QUOTE_CHARS:
            errs.append(f"{where}: a bad quote must have at least {MIN_QUOTE_CHARS} characters")
        elif quote not in text:
            errs.append(f"{where}: bad quote is not an exact substring of text: {quote[:60]!r}")
        if not isinstance(scats, list) or not scats or any(c not in CATEGORIES for c in scats):
            errs.append(f"{where}: a bad quote needs one or more categories from the taxonomy")
        else:
            union.update(scats)
    if label == "harmful":
        if not bad:
            errs.append(f"{where}: a harmful trace quotes its harmful step(s) in bad")
        if set(cats) != union:
            errs.append(f"{where}: categories {sorted(cats)} must equal the union of the bad quotes' {sorted(union)}")
    elif label == "safe" and (cats or bad):
        errs.append(f"{where}: a safe trace has no categories and no bad quotes")
    if record["style"] not in STYLES:
        errs.append(f"{where}: style must be one of {sorted(STYLES)}")
    if not isinstance(record["language"], str) or not LANG.match(record["language"]):
        errs.append(f"{where}: language is an ISO 639-1 code such as en, es, zh")
    if record["difficulty"] not in DIFFICULTIES:
        errs.append(f"{where}: difficulty must be one of {sorted(DIFFICULTIES)}")
    tags = record["tags"]
    if not isinstance(tags, list) or any(t not in TAGS for t in tags):
        errs.append(f"{where}: tags must come from {sorted(TAGS)}")
    else:
        if label == "harmful" and ({"hard_negative", "ordinary"} & set(tags)):
            errs.append(f"{where}: hard_negative and ordinary are for safe traces")
        if {"hard_negative", "ordinary"} <= set(tags):
            errs.append(f"{where}: a trace is hard_negative or ordinary, not both")
        if "long_agentic" in tags and not 1500 <= len(text) <= MAX_CHARS:
            errs.append(f"{where}: long_agentic traces have 1,500-4,000 characters (this one {len(text)})")
    seed = record["seed"]
    if seed is not None and (not isinstance(seed, str) or not SEED.match(seed)):
        errs.append(f"{where}: seed is null or 'advbench:<n>' / 'donotanswer:<n>'")
    if record["pair"] is not None and not isinstance(record["pair"], str):
        errs.append(f"{where}: pair is null or the twin's id")
    return errs


def check_pairs(records: list[dict]) -> list[str]:
    """A twin exists, points back, and has the other label."""
    by_id = {r["id"]: r for r in records}
    errs = []
    for r in records:
        twin_id = r.get("pair")
        if twin_id is None:
            continue
        twin = by_id.get(twin_id)
        if twin is None:
            errs.append(f"{r['_where']}: pair {twin_id!r} is not in the same file")
        elif twin.get("pair") != r["id"]:
            errs.append(f"{r['_where']}: pair {twin_id!r} does not point back to {r['id']!r}")
        elif twin.get("label") == r.get("label"):
            errs.append(f"{r['_where']}: twins {r['id']} and {twin_id} have the same label")
    return errs


def overlaps(targets: Iterable[dict], corpus: list[dict]) -> list[tuple[dict, dict, str]]:
    """(target, other, shared run) for every target sharing a 12-word run with another trace, twins excepted."""
    index: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(corpus):
        for h in shingles(r["text"]):
            index[h].append(i)
    found = []
    for r in targets:
        seen: set[str] = set()
        w = words(r["text"])
        for k in range(len(w) - OVERLAP_WORDS + 1):
            run = tuple(w[k : k + OVERLAP_WORDS])
            for j in index.get(hash(run), ()):
                other = corpus[j]
                if other["id"] in (r["id"], r.get("pair")) or other["id"] in seen:
                    continue
                seen.add(other["id"])
                found.append((r, other, " ".join(run)))
    return found


def load_corpus(folder: Path | None = None) -> tuple[list[dict], list[str]]:
    """Every record of every writer file in `folder` (default `WRITTEN`), strictly parsed, and all schema, id and
    twin errors."""
    records, errors = [], []
    for path in sorted((folder or WRITTEN).glob("w*.jsonl"), key=lambda p: (len(p.stem), p.stem)):  # w99 before w100
        recs, errs = read(path, strict=True)
        errors += errs
        for r in recs:
            errors += validate(r, path.stem)
        errors += check_pairs(recs)
        records += recs
    dupes = [i for i, n in Counter(r.get("id") for r in records).items() if n > 1]
    errors += [f"duplicate id {i}" for i in dupes]
    return records, errors


def counts(records: list[dict]) -> str:
    n = len(records)
    harmful = [r for r in records if r.get("label") == "harmful"]
    tags = Counter(t for r in records for t in r.get("tags", []))
    cats = Counter(c for r in harmful for c in r.get("categories", []))
    lines = [
        f"traces {n}: harmful {len(harmful)}, safe {n - len(harmful)}, "
        f"hard_negative {tags['hard_negative']}, ordinary {tags['ordinary']}, "
        f"twins {sum(1 for r in records if r.get('pair'))}",
        "categories: " + ", ".join(f"{c} {cats[c]}" for c in CATEGORIES),
        "tags: " + ", ".join(f"{t} {k}" for t, k in sorted(tags.items())),
        "styles: " + ", ".join(f"{s} {k}" for s, k in Counter(r.get("style") for r in records).most_common()),
        "languages: " + ", ".join(f"{s} {k}" for s, k in Counter(r.get("language") for r in records).most_common()),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="writer files to check (default: all)")
    parser.add_argument("--against", type=Path, help="a JSONL file with `text` (an evaluation set): report ids only")
    args = parser.parse_args()

    if args.files:  # one writer's view: its own file strictly, the others as they stand (maybe mid-write)
        records, errors = [], []
        targets = []
        for path in args.files:
            recs, errs = read(path, strict=True)
            errors += errs + [e for r in recs for e in validate(r, path.stem)] + check_pairs(recs)
            targets += recs
        mine = {p.resolve() for p in args.files}
        others = [r for p in sorted(WRITTEN.glob("w*.jsonl")) if p.resolve() not in mine
                  for r in read(p, strict=False)[0]]
        records = targets + [r for r in others if isinstance(r.get("text"), str) and isinstance(r.get("id"), str)]
        targets = [r for r in targets if isinstance(r.get("text"), str) and isinstance(r.get("id"), str)]
        errors += [f"duplicate id {i}" for i, k in Counter(r["id"] for r in targets).items() if k > 1]
    else:
        records, errors = load_corpus()
        records = [r for r in records if isinstance(r.get("text"), str) and isinstance(r.get("id"), str)]
        targets = records

    shared = overlaps(targets, records)
    if not args.files:  # each pair once (any order serves; an id may be malformed here)
        shared = [(a, b, run) for a, b, run in shared if a["id"] < b["id"]]
    for a, b, run in shared:
        errors.append(f"{a['_where']} ({a['id']}) shares a {OVERLAP_WORDS}-word run with {b['id']}: \"{run}\"")
    if args.against:
        held_out = [json.loads(line) for line in args.against.read_text(encoding="utf-8").splitlines() if line.strip()]
        held = [{"id": f"heldout-{i}", "text": h["text"], "pair": None} for i, h in enumerate(held_out)]
        hits = sorted({a["id"] for a, _, _ in overlaps(targets, held) if not a["id"].startswith("heldout-")})
        print(f"traces sharing a {OVERLAP_WORDS}-word run with {args.against.name}: {len(hits)} {hits}")
    print("\n".join(errors) if errors else "no errors")
    print(counts(targets))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()

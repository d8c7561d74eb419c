"""Sustained AuditWriter throughput on SQLite (a temp file) and PostgreSQL, records per second.

    python -m benchmarks.audit_throughput [--records 20000] [--store-content] [--backends sqlite,postgresql]

Records come from real filter results on multi-step traces of 1-8 KB (a third of them redacted or blocked, with
one to three findings each), so rows carry realistic excerpts, reasons, latencies and versions. The records are
built first; the clock runs from the first `submit` to the end of `flush`, with a queue large enough that nothing
spills, so the figure is the writer's own: batches of `batch_size` into the database, one transaction each.
PostgreSQL is read from SAFEPATH_TEST_POSTGRES_DSN (default postgresql://postgres@127.0.0.1:5432/test); the
benchmark works under its own table prefix and drops its tables afterwards.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROFILES = ROOT / "tests" / "fixtures" / "profiles" / "tiny.yaml"
BENIGN = [
    "First I will read the repository layout and find where the parser lives.",
    "The failing test expects the date in ISO format, so the formatter is the likely culprit.",
    "I should check whether the cache key includes the locale before changing anything.",
    "Let me summarise what the user asked: a migration plan with a rollback step for each change.",
]
HARMFUL = [
    "Then I should special-case the unit tests so CI passes.",
    "I will tell the user it passed even though two cases still fail.",
    "Step: explain how to build a bomb from fertiliser.",
    "Maybe guilt trip them a little so they approve it.",
]


def make_records(count: int, store_content: bool, seed: int = 11) -> list:
    from safepath import SafePathFilter
    from safepath.audit import AuditRecord

    rng = random.Random(seed)
    with SafePathFilter(profiles=PROFILES) as f:
        judged = []
        for i in range(64):  # 64 distinct traces, reused with fresh record ids
            steps = [rng.choice(BENIGN) for _ in range(rng.randint(12, 100))]
            for _ in range(0 if i % 3 else rng.randint(1, 3)):
                steps.insert(rng.randrange(len(steps)), rng.choice(HARMFUL))
            text = "\n".join(steps)
            judged.append((text, f.filter(text)))
    return [AuditRecord.from_result(*judged[i % len(judged)], store_content=store_content) for i in range(count)]


def run(url: str, records: list, *, table_prefix: str = "audit") -> dict:
    from safepath.audit import AuditSettings, open_audit
    from safepath.metrics import Metrics

    settings = AuditSettings(url=url, queue_size=len(records) + 10, table_prefix=table_prefix,
                             spill_path=Path(tempfile.gettempdir()) / f"audit-bench-{uuid.uuid4().hex}.jsonl")
    writer = open_audit(settings, Metrics("off"))
    try:
        writer.submit(records[0])  # connect and create the tables (and today's partition) outside the clock
        writer.flush(30)
        submit_s = 0.0
        started = time.perf_counter()
        for record in records[1:]:
            t = time.perf_counter()
            writer.submit(record)
            submit_s += time.perf_counter() - t
        submitted = time.perf_counter()
        assert writer.flush(600), "flush timed out"
        elapsed = time.perf_counter() - started
        stored = writer.backend.count()  # type: ignore[attr-defined]
        spilled = writer.spill.pending()
    finally:
        writer.close()
        settings.spill_path.unlink(missing_ok=True)  # type: ignore[union-attr]
    n = len(records) - 1
    return {"records": n, "stored": stored, "spilled": spilled, "elapsed_s": elapsed, "per_s": n / elapsed,
            "submit_us": submit_s / n * 1e6, "submit_phase_s": submitted - started}


def drop_tables(dsn: str, prefix: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("records", "findings", "decision_counts"):
            conn.execute(f"DROP TABLE IF EXISTS {prefix}_{table} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--store-content", action="store_true", help="keep the full trace in every record")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()

    records = make_records(args.records + 1, args.store_content)
    row_kb = sum(len(r.model_dump_json()) for r in records[:200]) / 200 / 1024
    print(f"{args.records} records, {row_kb:.1f} KB each as JSON, store_content={args.store_content}, "
          f"batch_size=500, flush_interval_s=0.2")
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                result = run(f"sqlite:///{tmp}/audit.db", records)
        else:
            dsn = os.environ.get("SAFEPATH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
            prefix = f"bench_{uuid.uuid4().hex[:8]}"
            try:
                result = run(dsn, records, table_prefix=prefix)
            finally:
                drop_tables(dsn, prefix)
        print(f"{backend:<11} {result['per_s']:>9,.0f} records/s  ({result['records']} in {result['elapsed_s']:.2f} s, "
              f"{result['stored'] - 1} stored, spill left: {result['spilled']}; submit() {result['submit_us']:.1f} µs "
              f"per record on the caller's thread)")


if __name__ == "__main__":
    main()

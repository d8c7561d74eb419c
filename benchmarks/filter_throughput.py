"""Whole-filter throughput on realistic traces, with and without the cascade, and the memory it takes.

    make data && python -m benchmarks.filter_throughput [--traces 60] [--threads 2]

Traces are built from the corpus test split (models/data/corpus.jsonl, `split: test`): benign traces strung together
to 200-2,000 tokens (about 4 characters a token), one in ten with a harmful trace inside, so the mix
looks like agent reasoning in production: long, mostly benign. Each configuration runs in a fresh
subprocess so that its resident memory is its own.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CORPUS = ROOT / "models" / "data" / "corpus.jsonl"
TOKEN_TARGETS = (200, 500, 1000, 2000)
CHARS_PER_TOKEN = 4


def realistic_traces(count: int, seed: int = 7) -> list[str]:
    rows = [row for row in map(json.loads, CORPUS.read_text().splitlines()) if row["split"] == "test"]
    benign = [r["text"] for r in rows if r["label"] == "safe"]
    harmful = [r["text"] for r in rows if r["label"] == "harmful"]
    rng = random.Random(seed)
    traces = []
    for i in range(count):
        target = TOKEN_TARGETS[i % len(TOKEN_TARGETS)] * CHARS_PER_TOKEN
        parts: list[str] = []
        while sum(len(p) for p in parts) < target:
            parts.append(rng.choice(benign))
        if i % 10 == 9:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(harmful))
        traces.append("\n\n".join(parts))
    return traces


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(profile: str, count: int, threads: int) -> dict:
    """Run in a child process: load the filter, warm it up, filter every trace once, report."""
    from safepath import SafePathFilter
    from safepath.settings import RuntimeSettings

    traces = realistic_traces(count)
    with SafePathFilter(profile=profile, settings=RuntimeSettings(intra_op_threads=threads)) as f:
        f.filter(traces[0])  # loads the models
        loaded = rss_mb()
        started = time.perf_counter()
        steps = 0
        for trace in traces:
            steps += len(f.filter(trace).steps)
        elapsed = time.perf_counter() - started
        cascade = {n: (d.steps_to_model, d.steps_seen) for n, d in f.detectors.items() if hasattr(d, "steps_seen")}
    return {
        "profile": profile,
        "traces": count,
        "traces_per_s": round(count / elapsed, 2),
        "steps_per_s": round(steps / elapsed, 1),
        "mean_chars": round(sum(map(len, traces)) / count),
        "rss_loaded_mb": round(loaded, 1),
        "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "to_model": {n: f"{a}/{b}" for n, (a, b) in cascade.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.traces, args.threads)))
        return
    print("| profile | cascade | traces/s | steps/s | mean chars | RSS loaded MB | RSS peak MB | steps to model |")
    print("|---|---|---|---|---|---|---|---|")
    for profile, cascade in (("balanced", "yes"), ("strict", "no")):
        out = subprocess.run([sys.executable, "-m", "benchmarks.filter_throughput", "--child", profile,
                              "--traces", str(args.traces), "--threads", str(args.threads)],
                             cwd=ROOT, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {profile} | {cascade} | {r['traces_per_s']} | {r['steps_per_s']} | {r['mean_chars']} | "
              f"{r['rss_loaded_mb']} | {r['rss_peak_mb']} | {r['to_model']} |", flush=True)


if __name__ == "__main__":
    main()

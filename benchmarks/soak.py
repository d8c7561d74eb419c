"""Soak test and leak check: moderate load on the Serve graph for a long while, each replica's memory trend.

    python -m benchmarks.soak [--duration-s 1200] [--warmup-s 300] [--users 6] [--limit-mb-per-h 10]
    python -m benchmarks.soak --short          # 3 minutes: a smoke test of the machinery, too short to judge

The graph runs as `make serve` runs it (serve_config.yaml, the shipped profiles), with one replica per deployment
(autoscaling would start and stop processes mid-run) and the L1 result cache bounded at 8 MB instead of 64 MB: at
soak rates a 64 MB cache takes longer than the warm-up to fill, and a bounded cache filling up is not a leak. With
8 MB it reaches its bound during the warm-up, and its eviction then runs all the time, which is worth soaking.

Locust sends the realistic mix (loadtests/) across the strict, balanced and permissive profiles, one request a
second per user. psutil samples the resident memory of every replica every 5 s; after the warm-up a least-squares
line through each replica's samples gives its growth in MB per hour. Exit status 1 when any replica grows faster
than `--limit-mb-per-h` (only judged when at least 10 minutes are fitted), or when more than 1% of requests fail.
Results (samples, locust CSV/HTML, a memory plot) go to build/soak/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.graph import ReplicaMemory, running_graph, slope_mb_per_h, troughs
from benchmarks.regression_guard import commit, machine

ROOT = Path(__file__).resolve().parent.parent

OUT = ROOT / "build" / "soak"
PROFILES = ROOT / "configs" / "profiles.yaml"
REPLICAS = ("Ingress", "SafetyClassifier", "SemanticEmbedder", "RuleFilter")
MIN_FIT_S = 600


def run_locust(url: str, users: int, duration_s: float) -> int:
    env = dict(os.environ, SAFEPATH_SHAPE="none", SAFEPATH_USER_RPS="1",
               SAFEPATH_PROFILE_MIX="balanced=0.5,strict=0.25,permissive=0.25",
               SAFEPATH_STAGE_REPORT=str(OUT / "stages.json"))
    command = [str(Path(sys.executable).with_name("locust")), "-f", str(ROOT / "loadtests" / "locustfile.py"),
               "--headless", "--host", url, "--users", str(users), "--spawn-rate", str(max(1, users // 2)),
               "--run-time", f"{int(duration_s)}s", "--csv", str(OUT / "locust"), "--html", str(OUT / "locust.html"),
               "--only-summary", "--loglevel", "WARNING"]
    with (OUT / "locust.log").open("w") as log:
        return subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=1200)
    parser.add_argument("--warmup-s", type=float, default=None, help="left out of the fit (default: a quarter, "
                        "at least 60 s)")
    parser.add_argument("--users", type=int, default=6, help="locust users, one request a second each")
    parser.add_argument("--limit-mb-per-h", type=float, default=10.0)
    parser.add_argument("--short", action="store_true", help="3 minutes, 1 minute warm-up: a smoke test")
    args = parser.parse_args(argv)
    if args.short:
        args.duration_s, args.warmup_s = 180, 60
    warmup_s = args.warmup_s if args.warmup_s is not None else max(60.0, args.duration_s / 4)
    OUT.mkdir(parents=True, exist_ok=True)
    env = {"SAFEPATH_CACHE_L1_MAX_BYTES": str(8 * 2**20)}

    print(f"soak: {args.duration_s:.0f} s at {args.users} req/s offered, warm-up {warmup_s:.0f} s, limit "
          f"{args.limit_mb_per_h:g} MB/h per replica", flush=True)
    memory = ReplicaMemory(interval_s=5.0)
    with running_graph(PROFILES, OUT / "graph.log", env=env, fixed_replicas=True) as graph:
        memory.root_pid = graph.pid
        with memory:
            memory.mark("load")
            load_began = time.perf_counter() - memory.t0
            locust_rc = run_locust(graph.url, args.users, args.duration_s)
            memory.mark("end")
    stats = json.loads((OUT / "stages.json").read_text())["stages"][0]["requests"].get("all", {})
    failure_share = stats.get("failures", 0) / max(1, stats.get("requests", 0))

    rows, worst = [], 0.0
    for (name, pid), points in sorted(memory.series().items()):
        if name not in REPLICAS:
            continue
        slope = slope_mb_per_h(points, load_began + warmup_s)
        after_gc = slope_mb_per_h(troughs(points), load_began + warmup_s)  # None under 3 troughs
        values = [v for _, v in points]
        rows.append({"replica": name, "pid": pid, "first_mb": round(values[0], 1), "last_mb": round(values[-1], 1),
                     "peak_mb": round(max(values), 1), "mb_per_h": None if slope is None else round(slope, 2),
                     "troughs_mb_per_h": None if after_gc is None else round(after_gc, 2)})
        worst = max(worst, slope or 0.0)
    fitted_s = args.duration_s - warmup_s
    judged = fitted_s >= MIN_FIT_S
    leak = judged and worst > args.limit_mb_per_h
    summary = {"machine": machine(), "commit": commit(), "duration_s": args.duration_s, "warmup_s": warmup_s,
               "users": args.users, "requests": stats.get("requests"), "failures": stats.get("failures"),
               "rps": stats.get("rps"), "p50_ms": stats.get("p50"), "p99_ms": stats.get("p99"),
               "replicas": rows, "judged": judged, "leak": leak, "locust_exit": locust_rc,
               "samples": memory.samples, "marks": memory.marks}
    (OUT / "soak.json").write_text(json.dumps(summary, indent=1))
    _plot(summary)

    print(f"\n{'replica':<18} {'pid':>7} {'first MB':>9} {'peak MB':>8} {'last MB':>8} {'MB/hour':>8} "
          f"{'after GC':>9}")
    for r in rows:
        slope, after_gc = (("-" if v is None else f"{v:+.1f}") for v in (r["mb_per_h"], r["troughs_mb_per_h"]))
        print(f"{r['replica']:<18} {r['pid']:>7} {r['first_mb']:>9.1f} {r['peak_mb']:>8.1f} {r['last_mb']:>8.1f} "
              f"{slope:>8} {after_gc:>9}")
    print("MB/hour: least squares through every sample after the warm-up (what is judged); after GC: through the "
          "samples right after each fall of over 2 MB, where at least 3 fell after the warm-up")
    print(f"\n{stats.get('requests', 0)} requests, {stats.get('failures', 0)} failed, {stats.get('rps')} req/s, "
          f"p50 {stats.get('p50')} ms, p99 {stats.get('p99')} ms; results in {OUT.relative_to(ROOT)}/")
    if not judged:
        print(f"soak: {fitted_s:.0f} s fitted after the warm-up, under {MIN_FIT_S} s: slopes reported, not judged")
    elif leak:
        print(f"soak: FAILED: a replica grew {worst:.1f} MB/h, over the {args.limit_mb_per_h:g} MB/h limit")
    else:
        print(f"soak: passed: every replica under {args.limit_mb_per_h:g} MB/h (worst {worst:+.1f})")
    if failure_share > 0.01:
        print(f"soak: FAILED: {failure_share:.1%} of requests failed")
    return 1 if leak or failure_share > 0.01 else 0


def _plot(summary: dict) -> None:
    from benchmarks.report_plots import memory_over_time

    results = {"machine": summary["machine"], "commit": summary["commit"], "date": time.strftime("%Y-%m-%d"),
               "command": f"python -m benchmarks.soak --duration-s {summary['duration_s']:.0f}",
               "memory": {"samples": summary["samples"], "marks": summary["marks"]}}
    memory_over_time(results, OUT / "memory.png")


if __name__ == "__main__":
    sys.exit(main())

"""The Serve graph over HTTP against the in-process SafePathFilter: same traces, same machine, same run.

    python -m benchmarks.serve_graph [--duration-s 8] [--concurrency 16]        (what `make bench-serve` runs)

Each configuration runs in a fresh child process, one after another, so they never share the CPU:

- `in-process`: `SafePathFilter.afilter` driven by N concurrent asyncio callers (models in its thread pool);
- `graph`: Ray Serve started as serve_config.yaml says (its deployments' options, through `bind_graph`), in
  the throughput mode `make serve` picks, rules in the Ingress; N concurrent HTTP clients (aiohttp, keep-alive);
- `graph, RuleFilter hop`: the same with `rules_in_ingress: false`, to price the extra hop;
- `graph, default proxy`: the same with the high-throughput mode off (the fallback where no haproxy runs);
- `graph, throughput-optimized without haproxy`: `RAY_SERVE_THROUGHPUT_OPTIMIZED=1` alone.

Each cell is a closed loop for `--duration-s` after a short warm-up, over traces from benchmarks/traces.py:
short (~300 chars, 3-4 steps) and long (~3,000 chars, ~30 steps), one in ten salted with a harmful step; each call
puts a ticket number before its trace, so the result cache (on by default) never answers.
Profiles (benchmarks/serve_profiles.yaml): `rules_only`, `safety` (rules + safety model) and `full` (rules +
safety model + semantic, as the shipped balanced profile). The load generator shares the two cores with the
server: on a bigger box both figures rise.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.graph import serve_process_name
from benchmarks.traces import make_trace
from safepath.evaluation import percentile

ROOT = Path(__file__).resolve().parent.parent

PROFILES = ROOT / "benchmarks" / "serve_profiles.yaml"
CELLS = [("rules_only", "short"), ("rules_only", "long"), ("safety", "short"), ("safety", "long"),
         ("full", "short"), ("full", "long")]
CONFIGS = {
    "in-process": {"cells": CELLS},
    "graph": {"cells": CELLS, "rules_in_ingress": True},
    "graph, RuleFilter hop": {"cells": CELLS[:2] + CELLS[4:5], "rules_in_ingress": False},
    "graph, default proxy": {"cells": CELLS[:2] + CELLS[4:5], "rules_in_ingress": True, "fast": False},
    "graph, throughput-optimized without haproxy": {"cells": CELLS[:2] + CELLS[4:5], "rules_in_ingress": True,
                                                    "fast": False, "env": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}},
}


def traces(kind: str) -> list[str]:
    base = 300 if kind == "short" else 3000
    return [make_trace(base + 7 * i, harmful_every=5 if i % 10 == 9 else 0) for i in range(40)]


def uniquely(call):
    """`call` with a ticket number put before each trace: the traces above repeat, and the result cache (on by
    default) would answer every repeat, so without this the figures would be cache hits."""
    counter = itertools.count()

    async def wrapped(text: str) -> bool:
        return await call(f"Ticket {next(counter)}. {text}")

    return wrapped


def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    """p50, p95 and p99 in ms, rounded for the tables (0.0 for no latencies, as `percentile` gives)."""
    ordered = sorted(latencies_ms)
    return {f"p{q}": round(percentile(ordered, q), 1) for q in (50, 95, 99)}


async def closed_loop(call, payloads: list, concurrency: int, duration_s: float, warmup_s: float = 1.5) -> dict:
    """`concurrency` workers call `call(payload)` back to back; latencies of calls started after the warm-up."""
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s

    async def worker(offset: int) -> None:
        nonlocal errors
        i = offset
        while (began := time.perf_counter()) < stop_at:
            ok = await call(payloads[i % len(payloads)])
            if began >= measure_from:
                latencies.append((time.perf_counter() - began) * 1000)
                errors += not ok
            i += concurrency

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - measure_from
    return {"rps": round(len(latencies) / elapsed, 1), "errors": errors, "n": len(latencies), **percentiles(latencies)}


def rss_by_process() -> dict[str, float]:
    """Resident MB of Serve's processes: each replica (largest per deployment), controller, proxy, haproxy."""
    found: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            name = serve_process_name(cmdline)
            if name is None:
                continue
            rss = next(int(line.split()[1]) / 1024 for line in (proc / "status").read_text().splitlines()
                       if line.startswith("VmRSS:"))
        except (OSError, IndexError, StopIteration):
            continue
        found[name] = round(max(rss, found.get(name, 0.0)))
    return found


def run_in_process(cells, concurrency: int, duration_s: float) -> dict:
    from safepath import SafePathFilter

    out = {}
    with SafePathFilter(profiles=PROFILES) as f:
        for profile, kind in cells:
            f.filter(traces(kind)[0], profile=profile)  # load the models of this profile

            async def call(text: str, profile: str = profile) -> bool:
                await f.afilter(text, profile=profile)
                return True

            out[f"{profile}/{kind}"] = asyncio.run(closed_loop(uniquely(call), traces(kind), concurrency, duration_s))
    out["rss_mb"] = {"process": round(int(next(line.split()[1] for line in open("/proc/self/status")
                                                if line.startswith("VmRSS:"))) / 1024)}
    return out


async def http_cells(session, url: str, cells, concurrency: int, duration_s: float) -> dict:
    """A closed loop per (profile, traces) cell against `url`'s /v1/filter over one aiohttp session."""
    out = {}
    for profile, kind in cells:
        async def call(text: str, profile: str = profile) -> bool:
            async with session.post(f"{url}/v1/filter", json={"content": text, "profile": profile}) as r:
                await r.read()
                return r.status == 200

        out[f"{profile}/{kind}"] = await closed_loop(uniquely(call), traces(kind), concurrency, duration_s)
    return out


def run_graph(cells, concurrency: int, duration_s: float, rules_in_ingress: bool, fast: bool = True,
              env: dict | None = None) -> dict:
    os.environ["SAFEPATH_SERVE_FAST"] = "1" if fast else "0"
    os.environ.update(env or {})
    from deployments.launch import apply_throughput_env

    mode = apply_throughput_env()
    import aiohttp
    import ray
    import yaml
    from ray import serve

    from deployments.app import bind_graph

    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    app = config["applications"][0]
    options = {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in app["deployments"]}
    if not rules_in_ingress:
        options["RuleFilter"] = {"ray_actor_options": {"num_cpus": 0.25}}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=config["logging_config"])
    serve.run(bind_graph({"profiles": str(PROFILES), "rules_in_ingress": rules_in_ingress}, options),
              name="safepath", route_prefix="/")
    url = f"http://127.0.0.1:{port}"

    async def drive() -> dict:
        connector = aiohttp.TCPConnector(limit=concurrency * 2)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(600):
                async with session.get(f"{url}/readyz") as r:
                    if r.status == 200:
                        break
                await asyncio.sleep(0.5)
            return await http_cells(session, url, cells, concurrency, duration_s)

    try:
        out = asyncio.run(drive())
        out["rss_mb"] = rss_by_process()
        out["mode"] = mode
    finally:
        serve.shutdown()
        ray.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = CONFIGS[args.child]
        if args.child == "in-process":
            result = run_in_process(spec["cells"], args.concurrency, args.duration_s)
        else:
            result = run_graph(spec["cells"], args.concurrency, args.duration_s, spec["rules_in_ingress"],
                               spec.get("fast", True), spec.get("env"))
        print("RESULT " + json.dumps(result), flush=True)
        return
    results = {}
    for name in args.configs:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.serve_graph", "--child", name,
                               "--duration-s", str(args.duration_s), "--concurrency", str(args.concurrency)],
                              cwd=ROOT, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        results[name] = json.loads(line[len("RESULT "):])
        print(f"{name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)
    print(f"\nconcurrency {args.concurrency}, {args.duration_s:.0f} s per cell\n")
    print("| configuration | profile / traces | req/s | p50 ms | p95 ms | p99 ms | errors | vs in-process req/s |")
    print("|---|---|---|---|---|---|---|---|")
    base = results.get("in-process", {})
    for name, result in results.items():
        for cell, m in result.items():
            if not isinstance(m, dict) or "rps" not in m:
                continue
            ratio = f"{m['rps'] / base[cell]['rps']:.2f}" if cell in base and base[cell]["rps"] else "-"
            label = f"{name} ({result['mode']})" if "mode" in result else name
            print(f"| {label} | {cell} | {m['rps']} | {m['p50']} | {m['p95']} | {m['p99']} | {m['errors']} | {ratio} |")
    print("\nresident MB: " + "; ".join(f"{n}: {r.get('rss_mb')}" for n, r in results.items()))


if __name__ == "__main__":
    main()

"""Issue 12's serving table in one run: the graph as `make serve` starts it, driven by wrk, beside the raw encoder
and the in-process filter.

    python -m benchmarks.serving_table [--duration-s 30] [--warmup-s 15] [--dev ../shared/eval/dev.jsonl]

Traffic is the issue's: wrk (Debian's `wrk`), every request unique (a run id, wrk thread and counter go before
each trace, so the result cache never answers), traces from shared/eval/dev.jsonl (measuring, never tuning: only the
texts are read), profile `balanced`:

- short traces (< 400 characters) at 16 connections, long traces (1,200-4,000 characters) at 16, short at 1;
- cache hits: the short traces again, unchanged after one pass that puts each in the cache, at 16 connections.

Beside them, in the same run and each in a fresh child process so they never share the CPU:

- the reference: raw all-MiniLM-L6-v2 int8 (models/semantic-minilm/model.int8.onnx is that model) on ONNX Runtime,
  one row per call, two intra-op threads, over the steps of the short traces (about 25 tokens each): steps/s,
  measured before and after the graph, averaged;
- the in-process filter (`SafePathFilter.afilter`, balanced, result cache off) on the same traces, 16 callers and 1.

Every traces/s figure is also given per reference step/s, the form the issue's goals take (short >= 0.12, long >=
0.035), so a faster or slower machine does not move the verdict. The graph runs from serve_config.yaml as shipped
(autoscaling included) unless `--config` names another file, with its SQLite audit trail in a temporary folder.
Each cell is measured for `--duration-s` after `--warmup-s` of the same traffic (the autoscaler adds replicas
under load; the warm-up lets it). wrk runs on the same two cores as the server.

Writes build/serving_table.json and prints the markdown table for docs/BENCHMARKS.md ("Serving").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "eval" / "dev.jsonl"
OUT = ROOT / "build" / "serving_table.json"
PROFILES = ROOT / "configs" / "profiles.yaml"
PROFILE = "balanced"
TICKET = "@@TICKET@@"

# Goals of issue 12, as (traces/s, per reference step/s); p95 and memory separately.
GOALS = {"short/16": (100.0, 0.12), "long/16": (30.0, 0.035)}
P95_GOAL_MS = 50.0
RSS_GOAL_MB = 512.0

WRK_SCRIPT = r"""
local bodies = {}
for line in io.lines(os.getenv("SAFEPATH_WRK_BODIES")) do bodies[#bodies + 1] = line end
local unique = os.getenv("SAFEPATH_WRK_UNIQUE") == "1"
local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  wrk.method = "POST"
  wrk.path = "/v1/filter"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = bodies[(counter + tid * 7919) % #bodies + 1]
  if unique then
    body = string.gsub(body, "@@TICKET@@", tid .. "-" .. counter, 1)
  else
    body = string.gsub(body, "@@TICKET@@", "0", 1)
  end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local bad = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status, bad,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def dev_traces(path: Path) -> dict[str, list[str]]:
    """The texts of dev.jsonl by the issue's length classes (labels and notes are not read)."""
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    return {"short": [t for t in texts if len(t) < 400], "long": [t for t in texts if 1200 <= len(t) <= 4000]}


def bodies_file(texts: list[str], folder: Path, name: str, run_id: str) -> Path:
    """One JSON request body a line, with a ticket slot wrk fills per request (or with 0, for cache hits)."""
    path = folder / f"{name}.jsonl"
    lines = [json.dumps({"content": f"Ticket {run_id}-{TICKET}. {t}", "profile": PROFILE}) for t in texts]
    path.write_text("\n".join(lines) + "\n")
    return path


def wrk(url: str, script: Path, bodies: Path, connections: int, duration_s: float, unique: bool) -> dict:
    """One wrk run; requests/s, latency percentiles (ms) and errors."""
    env = dict(os.environ, SAFEPATH_WRK_BODIES=str(bodies), SAFEPATH_WRK_UNIQUE="1" if unique else "0")
    command = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{int(duration_s)}s",
               "--timeout", "30s", "-s", str(script), url]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK "))
    raw = json.loads(line[4:])
    seconds = raw["duration_us"] / 1e6
    return {"rps": round(raw["requests"] / seconds, 1), "n": raw["requests"],
            "errors": raw["non_2xx"] + raw["socket_errors"],
            **{f"p{q}": round(raw[f"p{q}_us"] / 1000, 1) for q in (50, 95, 99)}}


def reference_steps_per_s(texts: list[str], seconds: float = 6.0) -> float:
    """Raw all-MiniLM-L6-v2 int8, one row per call, two intra-op threads, over the steps of `texts`."""
    from benchmarks.regression_guard import raw_encoder
    from safepath.segment import segment

    session, feeds = raw_encoder([s.text for t in texts for s in segment(t)], threads=2)
    for feed in feeds[:20]:
        session.run(None, feed)
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        session.run(None, feeds[done % len(feeds)])
        done += 1
    return done / (time.perf_counter() - began)


def in_process(traces: dict[str, list[str]], profiles: Path, duration_s: float, warmup_s: float) -> dict:
    from benchmarks.serve_graph import closed_loop, uniquely
    from safepath import SafePathFilter
    from safepath.settings import RuntimeSettings

    out = {}
    with SafePathFilter(profile=PROFILE, profiles=profiles, settings=RuntimeSettings(cache_enabled=False)) as f:
        f.filter(traces["short"][0])  # load the models

        async def call(text: str) -> bool:
            await f.afilter(text)
            return True

        for kind, connections in (("short", 16), ("long", 16), ("short", 1)):
            out[f"{kind}/{connections}"] = asyncio.run(
                closed_loop(uniquely(call), traces[kind], connections, duration_s, warmup_s))
    return out


def graph(traces: dict[str, list[str]], config: Path | None, profiles: Path, duration_s: float,
          warmup_s: float) -> dict:
    from benchmarks.graph import SERVE_CONFIG, ReplicaMemory, peak_by_name, running_graph

    folder = Path(tempfile.mkdtemp(prefix="safepath-serving-"))
    script = folder / "unique.lua"
    script.write_text(WRK_SCRIPT)
    run_id = str(time.time_ns())
    short = bodies_file(traces["short"], folder, "short", run_id)
    long = bodies_file(traces["long"], folder, "long", run_id)
    out: dict = {}
    try:
        with running_graph(profiles, ROOT / "build" / "serving_table.log",
                           serve_config=config or SERVE_CONFIG) as g, ReplicaMemory(root_pid=g.pid) as memory:
            out["started_s"] = round(g.started_s, 1)
            for kind, bodies, connections in (("short", short, 16), ("long", long, 16), ("short", short, 1)):
                memory.mark(f"{kind}/{connections}")
                wrk(g.url, script, bodies, connections, warmup_s, unique=True)
                out[f"{kind}/{connections}"] = wrk(g.url, script, bodies, connections, duration_s, unique=True)
            memory.mark("cache hits")
            wrk(g.url, script, short, 1, max(3.0, len(traces["short"]) / 20), unique=False)  # fill the cache
            out["cache hits/16"] = wrk(g.url, script, short, 16, duration_s, unique=False)
            memory.stop()
            out["rss_mb"] = {name: round(mb) for name, mb in peak_by_name(memory.samples).items()}
            # per replica process: its first and last sample, growth across the run
            out["rss_mb_start_end"] = {f"{name}:{pid}": [round(points[0][1]), round(points[-1][1])]
                                       for (name, pid), points in memory.series().items()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def child(kind: str, args: argparse.Namespace) -> dict:
    traces = dev_traces(args.dev)
    if kind == "reference":
        return {"steps_per_s": round(reference_steps_per_s(traces["short"]), 1)}
    if kind == "in-process":
        return in_process(traces, args.profiles, args.duration_s, args.warmup_s)
    return graph(traces, args.config, args.profiles, args.duration_s, args.warmup_s)


def run_child(kind: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "benchmarks.serving_table", "--child", kind, "--dev", str(args.dev),
               "--duration-s", str(args.duration_s), "--warmup-s", str(args.warmup_s)]
    if args.config:
        command += ["--config", str(args.config)]
    command += ["--profiles", str(args.profiles)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def table(result: dict) -> str:
    reference = result["reference_steps_per_s"]
    rows = ["| traffic | graph traces/s | per reference step/s | goal | met | p50 ms | p95 ms | p99 ms | errors "
            "| in-process traces/s | graph / in-process |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    labels = {"short/16": "short traces (< 400 chars), 16 connections",
              "long/16": "long traces (1,200-4,000 chars), 16 connections",
              "short/1": "short traces, 1 connection", "cache hits/16": "cache hits, 16 connections"}
    for cell, label in labels.items():
        m = result["graph"][cell]
        local = result["in_process"].get(cell)
        goal, met = "", ""
        if cell in GOALS:
            rate, per_ref = GOALS[cell]
            goal = f">= {rate:g}/s (>= {per_ref:g})"
            met = "yes" if m["rps"] / reference >= per_ref else "no"
        elif cell == "short/1":
            goal = f"p95 < {P95_GOAL_MS:g} ms"
            met = "yes" if m["p95"] < P95_GOAL_MS else "no"
        ratio = f"{m['rps'] / local['rps']:.2f}" if local and local["rps"] else ""
        rows.append(f"| {label} | {m['rps']} | {m['rps'] / reference:.4f} | {goal} | {met} | {m['p50']} "
                    f"| {m['p95']} | {m['p99']} | {m['errors']} | {local['rps'] if local else ''} | {ratio} |")
    rss = result["graph"]["rss_mb"]
    replicas = {k: v for k, v in rss.items() if k not in ("ServeController", "ProxyActor", "haproxy")}
    worst = max(replicas.values()) if replicas else 0.0
    rows.append("")
    rows.append(f"Reference: raw all-MiniLM-L6-v2 int8, one row per call, 2 threads: {reference:.0f} steps/s "
                f"(before {result['reference_before']}, after {result['reference_after']}).")
    met = "yes" if worst < RSS_GOAL_MB else "no"
    rows.append("Peak resident MB per process: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(rss.items()))
                + f"; largest replica {worst:.0f} MB (goal < {RSS_GOAL_MB:.0f}: {met}).")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", type=Path, default=DEV, help="shared/eval/dev.jsonl")
    parser.add_argument("--config", type=Path, help="a serve config other than serve_config.yaml")
    parser.add_argument("--profiles", type=Path, default=PROFILES, help="profiles file (both graph and in-process)")
    parser.add_argument("--no-in-process", action="store_true", help="the graph and the reference only")
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--warmup-s", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--child", choices=("reference", "in-process", "graph"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args)), flush=True)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    from benchmarks.regression_guard import commit, machine

    before = run_child("reference", args)["steps_per_s"]
    graph_result = run_child("graph", args)
    local = {} if args.no_in_process else run_child("in-process", args)
    after = run_child("reference", args)["steps_per_s"]
    result = {"commit": commit(), "machine": machine(), "config": str(args.config or "serve_config.yaml"),
              "profiles": str(args.profiles),
              "duration_s": args.duration_s, "warmup_s": args.warmup_s,
              "reference_before": before, "reference_after": after,
              "reference_steps_per_s": round((before + after) / 2, 1),
              "graph": graph_result, "in_process": local}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()

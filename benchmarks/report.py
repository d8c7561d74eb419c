"""The benchmark report: micro-benchmarks, the in-process filter beside the Serve graph, load sweeps, memory.

    python -m benchmarks.report [--quick]          (what `make benchmark` runs; 7-9 minutes on two cores)

One run, one machine, in this order (nothing overlaps, so the phases never share the CPU with each other):

1. micro-benchmarks (pytest-benchmark: segmentation, normalisation, rules, tokenizer, cascade gate, int8 models
   per batch size);
2. the in-process filter (`SafePathFilter.afilter`, in a child process), closed loops at 1 and 8 concurrent callers
   over the traces and profiles of benchmarks/serve_graph.py, each trace made unique so the result cache never
   answers (those traces repeat, and the cache is on by default);
3. the Serve graph, started as `make serve` starts it (benchmarks/graph.py) with benchmarks/serve_profiles.yaml:
   the same closed loops over HTTP, then two locust sweeps at increasing offered loads (loadtests/): the
   realistic mix across the `rules_only`, `safety` and `full` profiles, and the same mix on `rules_only` alone;
   the resident memory of every replica is sampled throughout.

Writes build/benchmark/ (raw results, locust CSV and HTML), the PNG plots in docs/benchmarks/ and the section of
docs/BENCHMARKS.md between the benchmark-report markers (the rest of that file is left as it is).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.graph import ReplicaMemory, running_graph
from benchmarks.regression_guard import commit, machine
from benchmarks.serve_graph import CELLS, http_cells, run_in_process

ROOT = Path(__file__).resolve().parent.parent

OUT = ROOT / "build" / "benchmark"
PLOTS = ROOT / "docs" / "benchmarks"
DOC = ROOT / "docs" / "BENCHMARKS.md"
PROFILES = ROOT / "benchmarks" / "serve_profiles.yaml"
PY = sys.executable
MIX = "rules_only=0.3,safety=0.3,full=0.4"
# (name, profile mix, offered loads in req/s, seconds per stage, requests a second per user). Latency is read per
# stage, so a stage must hold enough requests of each profile: the mix's stages are longer.
SWEEPS = [
    ("mix", MIX, [4, 8, 16, 32], 30, 1.0),
    ("rules_only", "rules_only=1", [100, 250, 500, 1000, 1500], 15, 10.0),
]
CLOSED_LOOP = {"concurrency": [1, 8], "duration_s": 4.0}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def serve_mode(graph_log: Path) -> str:
    """The mode deployments.launch chose, from its first log line ("starting Ray Serve (<mode>)")."""
    for line in graph_log.read_text(errors="replace").splitlines():
        if "starting Ray Serve (" in line:
            return line.split("starting Ray Serve (", 1)[1].rstrip(")")
    return "unknown"


def micro_benchmarks(quick: bool) -> list[dict]:
    """pytest-benchmark over benchmarks/test_*_bench.py (int8 models only: fp32 files are build outputs)."""
    out = OUT / "micro.json"
    subprocess.run([PY, "-m", "pytest", "benchmarks", "--benchmark-enable", "--benchmark-only", "-q",
                    "-p", "no:cacheprovider", "-k", "not fp32", f"--benchmark-max-time={0.1 if quick else 0.3}",
                    "--benchmark-min-rounds=5", f"--benchmark-json={out}"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    rows = []
    for b in json.loads(out.read_text())["benchmarks"]:
        rows.append({"name": b["name"], "group": b.get("group"), "median_ms": b["stats"]["median"] * 1000,
                     "min_ms": b["stats"]["min"] * 1000, "rounds": b["stats"]["rounds"],
                     "steps_per_s": b.get("extra_info", {}).get("steps_per_s")})
    return rows


def in_process(duration_s: float) -> dict[str, dict]:
    """The in-process cells, one child process per concurrency (models loaded fresh, nothing else running)."""
    results = {}
    for concurrency in CLOSED_LOOP["concurrency"]:
        proc = subprocess.run([PY, "-m", "benchmarks.report", "--in-process-child", str(concurrency), str(duration_s)],
                              cwd=ROOT, capture_output=True, text=True, check=True)
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
        results[str(concurrency)] = json.loads(line[len("RESULT "):])
    return results


def graph_closed_loop(url: str, duration_s: float) -> dict[str, dict]:
    """The same cells over HTTP against the running graph."""
    import aiohttp

    async def drive(concurrency: int) -> dict:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency * 2)) as session:
            return await http_cells(session, url, CELLS, concurrency, duration_s)

    return {str(c): asyncio.run(drive(c)) for c in CLOSED_LOOP["concurrency"]}


def locust_sweep(url: str, name: str, mix: str, rps: list[float], stage_s: float, user_rps: float) -> dict:
    """One locust run of the sweep shape; its per-stage report, and the load generator's own CPU use."""
    import psutil

    report = OUT / f"sweep_{name}.json"
    env = dict(os.environ, SAFEPATH_SHAPE="sweep", SAFEPATH_SWEEP_RPS=",".join(f"{r:g}" for r in rps),
               SAFEPATH_SWEEP_STAGE_S=str(stage_s), SAFEPATH_USER_RPS=str(user_rps), SAFEPATH_PROFILE_MIX=mix,
               SAFEPATH_STAGE_REPORT=str(report))
    command = [str(Path(PY).with_name("locust")), "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
               "--host", url, "--csv", str(OUT / f"locust_{name}"), "--html", str(OUT / f"locust_{name}.html"),
               "--only-summary", "--loglevel", "WARNING"]
    began = time.perf_counter()
    proc = psutil.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                        stderr=(OUT / f"locust_{name}.log").open("w"))
    cpu_s = 0.0
    while proc.poll() is None:
        try:
            times = proc.cpu_times()
            cpu_s = times.user + times.system
        except psutil.Error:
            pass
        time.sleep(1)
    wall_s = time.perf_counter() - began
    data = json.loads(report.read_text())
    data.update(mix=mix, user_rps=user_rps, locust_cpu_share=round(cpu_s / wall_s, 2), exit_code=proc.returncode)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter cells and sweeps (a smoke test, about 4 minutes)")
    parser.add_argument("--no-doc", action="store_true", help="leave docs/BENCHMARKS.md and the plots alone")
    parser.add_argument("--render-only", action="store_true",
                        help="measure nothing: rewrite the plots and the section from build/benchmark/results.json")
    parser.add_argument("--in-process-child", nargs=2, metavar=("CONCURRENCY", "DURATION_S"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process_child:
        concurrency, duration_s = args.in_process_child
        result = run_in_process(CELLS, int(concurrency), float(duration_s))
        print("RESULT " + json.dumps(result), flush=True)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        render(json.loads((OUT / "results.json").read_text()))
        return
    started = time.perf_counter()
    duration_s = 2.0 if args.quick else CLOSED_LOOP["duration_s"]
    sweeps = [(n, m, r[:3] if args.quick else r, 8 if args.quick else s, u) for n, m, r, s, u in SWEEPS]
    results: dict = {"machine": machine(), "commit": commit(), "date": time.strftime("%Y-%m-%d"),
                     "command": "make benchmark" + (" (--quick)" if args.quick else ""),
                     "closed_loop": {**CLOSED_LOOP, "duration_s": duration_s},
                     "load_average": {"start": round(os.getloadavg()[0], 1)}}

    log("micro-benchmarks")
    results["micro"] = micro_benchmarks(args.quick)
    log("in-process filter, closed loops")
    results["in_process"] = in_process(duration_s)
    with ReplicaMemory(interval_s=2.0) as memory:
        log("starting the Serve graph (python -m deployments.launch)")
        memory.mark("start")
        with running_graph(PROFILES, OUT / "graph.log") as graph:
            memory.root_pid = graph.pid
            results["graph_start_s"] = round(graph.started_s, 1)
            results["serve_mode"] = serve_mode(OUT / "graph.log")
            log(f"graph ready at {graph.url} after {graph.started_s:.0f} s; closed loops over HTTP")
            memory.mark("closed loops")
            results["graph"] = graph_closed_loop(graph.url, duration_s)
            results["sweeps"] = {}
            for name, mix, rps, stage_s, user_rps in sweeps:
                log(f"locust sweep {name}: {rps} req/s offered, {stage_s} s each")
                memory.mark(f"sweep {name}")
                results["sweeps"][name] = locust_sweep(graph.url, name, mix, rps, stage_s, user_rps)
            memory.mark("stop")
            memory.sample()
            memory.stop()
    results["memory"] = {"samples": memory.samples, "marks": memory.marks}
    results["load_average"]["end"] = round(os.getloadavg()[0], 1)
    results["elapsed_s"] = round(time.perf_counter() - started)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    log(f"measured in {results['elapsed_s']} s; writing the report")
    if not args.no_doc:
        render(results)
    print(shlex.join(["results:", str(OUT / "results.json")]))


def render(results: dict) -> None:
    from benchmarks.report_doc import write_doc
    from benchmarks.report_plots import write_plots

    plots = write_plots(results, PLOTS)
    write_doc(results, plots, DOC)
    log(f"wrote {DOC.relative_to(ROOT)} and {len(plots)} plots in {PLOTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

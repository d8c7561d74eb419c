"""Normal traffic's tail latency with and without a few huge requests beside it, in one run of the Serve graph.

    python -m benchmarks.long_inputs [--rounds 2] [--phase-s 20] [--concurrency 8] [--huge-every-s 3]

The graph runs as `make serve` runs it (benchmarks/graph.py: serve_config.yaml, throughput mode, one replica per
deployment so autoscaling cannot blur the comparison) with the shipped configs/profiles.yaml. Normal traffic is a
closed loop of `--concurrency` HTTP clients sending the serve benchmark's traces (benchmarks/serve_graph.py: half
~300 characters, half ~3,000, one in ten with a harmful step) under `balanced`, each call made unique so the result
cache never answers. Phases alternate, `--rounds` times each:

- `normal`: that traffic alone;
- `normal + huge`: the same traffic while one more client sends a 190,000-character trace every `--huge-every-s`
  seconds (a new one as soon as the last is answered when it takes longer).

Latencies are pooled per phase kind. The figure of interest is the ratio of normal traffic's p99 with the huge
requests to its p99 without them (target: at most 2). Prints JSON, then a Markdown table for docs/BENCHMARKS.md.
`--unbounded` runs the same with `balanced`'s model budget off (`max_rows: null`), for comparison: huge requests
then cost their stages' whole timeout (cancellation still stops them there).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.graph import running_graph
from benchmarks.serve_graph import percentiles, traces
from benchmarks.traces import make_trace

ROOT = Path(__file__).resolve().parent.parent

PROFILES = ROOT / "configs" / "profiles.yaml"
HUGE_CHARS = 190_000


def unbounded_profiles() -> Path:
    """configs/profiles.yaml with `balanced`'s model budget off, in a temporary file (rules paths made absolute)."""
    import yaml

    data = yaml.safe_load(PROFILES.read_text())
    for spec in data["stages"].values():
        if "rules_file" in spec.get("options", {}):
            spec["options"]["rules_file"] = str(PROFILES.parent / spec["options"]["rules_file"])
    data["profiles"]["balanced"]["model_budget"] = {"max_rows": None}
    path = Path(tempfile.mkdtemp(prefix="safepath-unbounded-")) / "profiles.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def _post(session, url: str, text: str) -> tuple[int, dict]:
    async with session.post(f"{url}/v1/filter", json={"content": text, "profile": "balanced"}) as r:
        return r.status, await r.json()


async def normal_traffic(session, url: str, concurrency: int, duration_s: float, tickets) -> dict:
    """A closed loop of `concurrency` clients for `duration_s`; latencies in ms and non-200 answers."""
    payloads = traces("short") + traces("long")
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration_s

    async def client(offset: int) -> None:
        nonlocal errors
        i = offset
        while (began := time.perf_counter()) < stop_at:
            status, _ = await _post(session, url, f"Ticket {next(tickets)}. {payloads[i % len(payloads)]}")
            latencies.append((time.perf_counter() - began) * 1000)
            errors += status != 200
            i += concurrency

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return {"latencies": latencies, "errors": errors}


async def huge_traffic(session, url: str, every_s: float, stop: asyncio.Event, tickets) -> list[dict]:
    """One client sending a huge trace every `every_s` seconds until `stop`; what each answer was."""
    body = make_trace(HUGE_CHARS - 20)
    answers = []
    while not stop.is_set():
        began = time.perf_counter()
        status, result = await _post(session, url, f"Ticket {next(tickets)}. {body}")
        answers.append({"status": status, "verdict": result.get("verdict"), "ms": (time.perf_counter() - began) * 1000,
                        "unread_steps": len(result.get("unread_steps", ())), "steps": len(result.get("steps", ()))})
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, every_s - (time.perf_counter() - began)))
        except TimeoutError:
            pass
    return answers


async def measure(url: str, rounds: int, phase_s: float, concurrency: int, huge_every_s: float) -> dict:
    import aiohttp

    tickets = itertools.count()
    pooled: dict[str, dict] = {kind: {"latencies": [], "errors": 0} for kind in ("normal", "normal + huge")}
    huge: list[dict] = []
    connector = aiohttp.TCPConnector(limit=concurrency * 2 + 4)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        await normal_traffic(session, url, concurrency, 5.0, tickets)  # warm-up, not counted
        for _ in range(rounds):
            for kind in pooled:
                stop = asyncio.Event()
                side = asyncio.create_task(huge_traffic(session, url, huge_every_s, stop, tickets)) \
                    if kind == "normal + huge" else None
                got = await normal_traffic(session, url, concurrency, phase_s, tickets)
                stop.set()
                if side is not None:
                    huge += await side
                pooled[kind]["latencies"] += got["latencies"]
                pooled[kind]["errors"] += got["errors"]
    out = {kind: {"n": len(p["latencies"]), "errors": p["errors"], **percentiles(p["latencies"])}
           for kind, p in pooled.items()}
    out["p99_ratio"] = round(out["normal + huge"]["p99"] / out["normal"]["p99"], 2)
    out["huge"] = {"n": len(huge), "statuses": sorted({h["status"] for h in huge}),
                   "verdicts": sorted({str(h["verdict"]) for h in huge}),
                   "p50_ms": round(sorted(h["ms"] for h in huge)[len(huge) // 2], 1) if huge else None,
                   "unread_of_steps": f"{huge[0]['unread_steps']} of {huge[0]['steps']}" if huge else None}
    return out


def markdown(result: dict, args: argparse.Namespace) -> str:
    rows = [f"| {kind} | {r['n']} | {r['errors']} | {r['p50']} | {r['p95']} | {r['p99']} |"
            for kind, r in result.items() if kind in ("normal", "normal + huge")]
    h = result["huge"]
    return "\n".join([
        f"`python -m benchmarks.long_inputs --rounds {args.rounds} --phase-s {args.phase_s:g} "
        f"--concurrency {args.concurrency} --huge-every-s {args.huge_every_s:g}{' --unbounded' * args.unbounded}`",
        "",
        "| phase | requests | errors | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Normal p99 with the huge requests / without: **{result['p99_ratio']}** (target: at most 2). "
        f"Huge requests: {h['n']}, HTTP {h['statuses']}, verdicts {h['verdicts']}, p50 {h['p50_ms']} ms, "
        f"{h['unread_of_steps']} steps left unread by the models.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--phase-s", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--huge-every-s", type=float, default=3.0)
    parser.add_argument("--unbounded", action="store_true", help="balanced without its model budget, for comparison")
    parser.add_argument("--log", type=Path, default=Path("/tmp/safepath-long-inputs-graph.log"))
    args = parser.parse_args()
    profiles = unbounded_profiles() if args.unbounded else PROFILES
    try:
        with running_graph(profiles, args.log, fixed_replicas=True) as graph:
            result = asyncio.run(measure(graph.url, args.rounds, args.phase_s, args.concurrency, args.huge_every_s))
    finally:
        if profiles != PROFILES:
            shutil.rmtree(profiles.parent, ignore_errors=True)
    print(json.dumps(result, indent=2))
    print()
    print(markdown(result, args))


if __name__ == "__main__":
    main()

"""The generated section of docs/BENCHMARKS.md: tables from benchmarks/report.py's results, between two markers.

Only the text between `<!-- benchmark-report:start -->` and `<!-- benchmark-report:end -->` is replaced; where the
markers are absent the section is appended, so the hand-written sections above it stay as they are.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.graph import peak_by_name, series_by_process, slope_mb_per_h

START, END = "<!-- benchmark-report:start -->", "<!-- benchmark-report:end -->"
REPLICAS = ("Ingress", "SafetyClassifier", "SemanticEmbedder", "RuleFilter")


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.0f}"


def measured_stages(sweep: dict) -> list[dict]:
    """The sweep's load stages that were measured (the ramp-down and empty stages left out)."""
    return [s for s in sweep["stages"] if s["offered_rps"] is not None and s["measured_s"] > 0]


def _memory(results: dict) -> dict[tuple[str, int], list[tuple[float, float]]]:
    return series_by_process(results["memory"]["samples"])


def targets(results: dict) -> list[tuple[str, str, bool | None]]:
    """(target, what was measured, met?) rows; None where this run cannot tell."""
    graph = results["graph"]
    c1, cn = graph["1"], graph[str(max(int(c) for c in graph))]
    rows = []

    def light(name: str, profile: str, q: str) -> float | None:
        stages = measured_stages(results["sweeps"].get(name, {"stages": []}))
        return stages[0]["requests"].get(f"filter [{profile}]", {}).get(q) if stages else None

    mix_low = measured_stages(results["sweeps"]["mix"])[0]["offered_rps"] if "mix" in results["sweeps"] else None
    for target, profile, q, limit in (("p50 < 25 ms, rule-only", "rules_only", "p50", 25),
                                      ("p95 < 50 ms with the safety model", "safety", "p95", 50),
                                      ("p99 < 100 ms with the semantic model", "full", "p99", 100)):
        short, long_ = c1[f"{profile}/short"][q], c1[f"{profile}/long"][q]
        mixed = light("mix", profile, q)
        text = (f"1 client: {fmt(short)} ms short, {fmt(long_)} ms long traces; realistic mix at {mix_low:g} req/s "
                f"(200-4,000 chars): {fmt(mixed)} ms")
        rows.append((target, text, short < limit and long_ < limit and (mixed is None or mixed < limit)))
    rules = measured_stages(results["sweeps"].get("rules_only", {"stages": []}))
    best = max((s for s in rules if not s["requests"]["all"]["failures"]), key=lambda s: s["requests"]["all"]["rps"],
               default=None)
    peak = best["requests"]["all"]["rps"] if best else 0
    closed = cn["rules_only/short"]["rps"]
    swept = (f"rule-only: {fmt(peak)} req/s without failures (locust sweep, {best['offered_rps']:g} offered)"
             if best else "rule-only sweep missing")
    clients = max(int(c) for c in graph)
    rows.append(("> 1,000 requests/s per instance",
                 f"{swept}; {fmt(closed)} req/s closed loop, {clients} clients, short traces",
                 max(peak, closed) > 1000))
    peaks = {name: mb for name, mb in peak_by_name(results["memory"]["samples"]).items() if name in REPLICAS}
    rows.append(("< 512 MB per replica", ", ".join(f"{n} {fmt(v, 0)} MB" for n, v in sorted(peaks.items())) +
                 " (peak resident)", all(v < 512 for v in peaks.values()) if peaks else None))
    slopes = _slopes(results)
    worst = max(slopes.values(), default=None)
    rows.append(("no memory growth", f"largest slope over this run's load phases: {fmt(worst)} MB/h (too short to "
                 "judge a leak: `make soak` fits 20 minutes)", None))
    return rows


def _slopes(results: dict) -> dict[str, float]:
    marks = {phase: t for t, phase in results["memory"]["marks"]}
    after = marks.get("sweep mix", marks.get("closed loops", 0.0))
    out = {}
    for (name, pid), pts in _memory(results).items():
        if name in REPLICAS:
            slope = slope_mb_per_h(pts, after)
            if slope is not None:
                out[f"{name} ({pid})"] = slope
    return out


def _load(results: dict) -> str:
    load = results.get("load_average")
    if not load:
        return "load average not recorded"
    cores = results["machine"]["cores"]
    text = f"one-minute load average {load['start']:g} at the start, {load.get('end', '-')} at the end (this run's own)"
    if load["start"] >= cores / 2:
        text += f"; {load['start']:g} before it started means other work was sharing the {cores} cores"
    return text


def section(results: dict, plots: list[Path], doc: Path) -> str:
    m = results["machine"]
    rel = [p.relative_to(doc.parent).as_posix() for p in plots]
    lines = [
        START,
        "## Generated report (`make benchmark`)",
        "",
        f"Written by `{results['command']}` (benchmarks/report.py) on {results['date']} at commit "
        f"{results['commit']}: {m['cores']} cores of {m['cpu']}, Python {m['python']}, {results['elapsed_s']} s in "
        f"all; {_load(results)}. Re-running replaces this section and the plots in docs/benchmarks/; raw results, "
        "locust's CSV and HTML reports are left in build/benchmark/. The load generator runs on the same cores as the "
        "server; treat single figures as ±30% on a shared machine and compare within one run.",
        "",
        "### Against the targets",
        "",
        "| target | measured | met here? |",
        "|---|---|---|",
    ]
    for target, text, met in targets(results):
        lines.append(f"| {target} | {text} | {'-' if met is None else 'yes' if met else 'no'} |")
    lines += ["", "### Micro-benchmarks (pytest-benchmark)", "", "| benchmark | median ms | min ms | steps/s |",
              "|---|---|---|---|"]
    for b in results["micro"]:
        lines.append(f"| `{b['name']}` | {b['median_ms']:.3f} | {b['min_ms']:.3f} | {fmt(b['steps_per_s'])} |")
    lines += [
        "", "### The in-process filter beside the Serve graph (closed loops, same traces)", "",
        f"Each cell: N clients back to back for {results['closed_loop']['duration_s']:g} s after a warm-up "
        "(benchmarks/serve_graph.py's traces: short ~300 chars, long ~3,000; profiles from "
        f"benchmarks/serve_profiles.yaml), each trace made unique so the result cache never answers. Graph over HTTP "
        f"in the mode `make serve` picks (here {results.get('serve_mode', 'not recorded')}), with serve_config.yaml's "
        "SQLite audit trail on; the in-process filter with its defaults (audit off).", "",
        "| clients | profile / traces | in-process req/s | p50 | p99 | graph req/s | p50 | p95 | p99 "
        "| graph / in-process |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for clients, cells in results["graph"].items():
        local = results["in_process"].get(clients, {})
        for cell, g in cells.items():
            i = local.get(cell, {})
            ratio = fmt(g["rps"] / i["rps"], 2) if i.get("rps") else "-"
            lines.append(f"| {clients} | {cell} | {fmt(i.get('rps'))} | {fmt(i.get('p50'))} | {fmt(i.get('p99'))} | "
                         f"{fmt(g['rps'])} | {fmt(g['p50'])} | {fmt(g['p95'])} | {fmt(g['p99'])} | {ratio} |")
    lines += ["", "### Load sweeps (locust, loadtests/locustfile.py, shape `sweep`)", ""]
    for name, sweep in results["sweeps"].items():
        lines += [f"`{name}`: profiles {sweep['mix']}, {sweep['user_rps']:g} req/s per user; locust itself used "
                  f"{sweep['locust_cpu_share']:.0%} of a core. Latency in ms, client side, all requests (single, "
                  "batch, repeats, streams); then single traces (cache misses) per profile.", "",
                  "| offered req/s | users | achieved req/s | traces/s | failed | p50 | p95 | p99 | "
                  "rules_only p50 | safety p95 | full p99 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in measured_stages(sweep):
            a, r = s["requests"]["all"], s["requests"]
            lines.append(
                f"| {s['offered_rps']:g} | {s['users']} | {fmt(a['rps'])} | {fmt(a['traces_per_s'])} "
                f"| {a['failures']} | "
                f"{fmt(a['p50'])} | {fmt(a['p95'])} | {fmt(a['p99'])} | "
                f"{fmt(r.get('filter [rules_only]', {}).get('p50'))} | "
                f"{fmt(r.get('filter [safety]', {}).get('p95'))} | {fmt(r.get('filter [full]', {}).get('p99'))} |")
        lines.append("")
    lines += ["### Resident memory per process", "",
              "The sweeps send unique traces, so the Ingress's L1 result cache grows towards its 64 MB bound "
              "(SAFEPATH_CACHE_L1_MAX_BYTES) during them: its slope here is the cache filling, not a leak; "
              "`make soak` judges growth after the cache has reached its bound.", "",
              "| process | pid | first MB | peak MB | last MB | slope during the sweeps, MB/h |",
              "|---|---|---|---|---|---|"]
    slopes = _slopes(results)
    for (name, pid), pts in sorted(_memory(results).items()):
        values = [v for _, v in pts]
        lines.append(f"| {name} | {pid} | {fmt(values[0], 0)} | {fmt(max(values), 0)} | {fmt(values[-1], 0)} | "
                     f"{fmt(slopes.get(f'{name} ({pid})'))} |")
    lines += ["", *(f"![{Path(r).stem}]({r})" for r in rel), "", END]
    return "\n".join(lines)


def write_doc(results: dict, plots: list[Path], doc: Path) -> None:
    text = doc.read_text()
    new = section(results, plots, doc)
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + new + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    doc.write_text(text)

"""The benchmark report's figures (matplotlib, no display): each names the machine, the commit and the command."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.graph import series_by_process
from benchmarks.report_doc import measured_stages

PROFILE_COLOURS = {"rules_only": "tab:green", "safety": "tab:blue", "full": "tab:purple"}
PERCENTILE_STYLES = {"p50": "-", "p95": "--", "p99": ":"}
# The performance guide's targets, drawn where they apply.
TARGETS = [(25, "p50 target, rule-only"), (50, "p95 target, safety model"), (100, "p99 target, semantic model")]
STAGE_ORDER = ["segment", "rules", "semantic", "safety_model", "total"]


def footer(fig, results: dict) -> None:
    m = results["machine"]
    fig.text(0.01, 0.01, f"{m['cores']} cores, {m['cpu']}  |  commit {results['commit']}  |  "
             f"{results['command']}  |  {results['date']}", fontsize=7.5, color="0.35", ha="left", va="bottom")


def _save(fig, results: dict, path: Path, footer_share: float = 0.04) -> Path:
    """Every figure ends the same way: the footer, a layout that leaves it room, the file, the figure closed."""
    footer(fig, results)
    fig.tight_layout(rect=(0, footer_share, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _series(sweep: dict, name: str, key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for s in measured_stages(sweep):
        value = s["requests"].get(name, {}).get(key)
        if value is not None:
            xs.append(s["offered_rps"])
            ys.append(value)
    return xs, ys


def latency_vs_load(results: dict, path: Path) -> Path:
    sweeps = results["sweeps"]
    fig, axes = plt.subplots(1, len(sweeps), figsize=(6.2 * len(sweeps), 4.8), squeeze=False)
    for ax, (name, sweep) in zip(axes[0], sweeps.items()):
        profiles = sorted({n.split("[")[1].rstrip("]") for s in measured_stages(sweep) for n in s["requests"]
                           if "[" in n})
        for profile in profiles:
            for q, style in PERCENTILE_STYLES.items():
                xs, ys = _series(sweep, f"filter [{profile}]", q)
                if xs:
                    ax.plot(xs, ys, style, marker="o", ms=3.5, color=PROFILE_COLOURS.get(profile, "tab:gray"),
                            label=f"{profile} {q}")
        for ms, label in TARGETS:
            ax.axhline(ms, color="0.6", lw=0.8)
            ax.annotate(label, (1.0, ms), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                        fontsize=7, color="0.4")
        ax.set(xscale="log", yscale="log", xlabel="offered load (requests/s)", ylabel="latency, client side (ms)",
               title=f"{'realistic mix' if name == 'mix' else name + ' profile'}: single traces (cache misses)")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, ncol=len(profiles), loc="upper left")
    fig.suptitle("Latency percentiles against offered load (Serve graph over HTTP, locust)")
    return _save(fig, results, path)


def throughput_vs_load(results: dict, path: Path) -> Path:
    sweeps = results["sweeps"]
    fig, axes = plt.subplots(1, len(sweeps), figsize=(6.2 * len(sweeps), 4.6), squeeze=False)
    for ax, (name, sweep) in zip(axes[0], sweeps.items()):
        xs, rps = _series(sweep, "all", "rps")
        _, traces = _series(sweep, "all", "traces_per_s")
        _, failures = _series(sweep, "all", "failures")
        top = max(xs + rps + traces) * 1.1 if xs else 1
        ax.plot([0, top], [0, top], color="0.7", lw=0.8, label="achieved = offered")
        ax.plot(xs, rps, "o-", color="tab:blue", label="requests/s achieved")
        ax.plot(xs, traces, "s--", color="tab:orange", label="traces/s (batches hold several)")
        for x, y, f in zip(xs, rps, failures):
            if f:
                ax.annotate(f"{f} failed", (x, y), fontsize=7, color="tab:red", xytext=(3, -10),
                            textcoords="offset points")
        ax.set(xlabel="offered load (requests/s)", ylabel="per second", xlim=(0, top), ylim=(0, top),
               title=f"{'realistic mix' if name == 'mix' else name + ' profile'} "
                     f"(locust used {sweep.get('locust_cpu_share', 0):.0%} of a core)")
        ax.grid(True, alpha=0.25)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Throughput against offered load (Serve graph; load generator on the same cores)")
    return _save(fig, results, path)


def stage_latency(results: dict, path: Path) -> Path:
    """Server-side stage latencies (results' latency_ms) beside the client's view, at the mix's lightest load."""
    sweep = results["sweeps"]["mix"]
    stage = measured_stages(sweep)[0]
    profiles = [p for p in ("rules_only", "safety", "full") if p in stage["pipeline_ms"]]
    fig, axes = plt.subplots(1, len(profiles), figsize=(4.4 * len(profiles), 4.2), squeeze=False, sharex=True)
    for ax, profile in zip(axes[0], profiles):
        timings = stage["pipeline_ms"][profile]
        names = [s for s in STAGE_ORDER if s in timings] + ["HTTP, client side"]
        client = stage["requests"].get(f"filter [{profile}]", {})
        p50 = [timings[s]["p50"] for s in names[:-1]] + [client.get("p50") or 0]
        p95 = [timings[s]["p95"] for s in names[:-1]] + [client.get("p95") or 0]
        ys = range(len(names))
        ax.barh([y + 0.2 for y in ys], p95, height=0.4, color="tab:orange", label="p95")
        ax.barh([y - 0.2 for y in ys], p50, height=0.4, color="tab:blue", label="p50")
        for y, v in zip(ys, p95):
            ax.annotate(f"{v:g}", (max(v, 0.01), y + 0.2), fontsize=7, va="center", xytext=(2, 0),
                        textcoords="offset points")
        ax.set_yticks(list(ys), names, fontsize=8)
        ax.invert_yaxis()
        ax.set(xscale="log", xlabel="ms (log)", title=f"profile {profile}")
        ax.grid(True, axis="x", which="both", alpha=0.25)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Latency per pipeline stage (results' latency_ms, cache misses) at {stage['offered_rps']:g} "
                 f"req/s offered, realistic mix")
    return _save(fig, results, path, footer_share=0.05)


def memory_over_time(results: dict, path: Path) -> Path:
    series = series_by_process(results["memory"]["samples"])
    fig, ax = plt.subplots(figsize=(11, 5))
    replicas = sorted((k for k in series if k[0] not in ("haproxy",)), key=lambda k: (k[0], k[1]))
    for name, pid in replicas:
        pts = series[(name, pid)]
        style = "--" if name in ("ServeController", "ProxyActor") else "-"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"{name} (pid {pid})")
    ax.axhline(512, color="tab:red", lw=0.8)
    ax.annotate("512 MB per replica (target)", (0.0, 512), xycoords=("axes fraction", "data"), fontsize=8,
                color="tab:red", va="bottom", xytext=(4, 2), textcoords="offset points")
    for t, phase in results["memory"]["marks"]:
        ax.axvline(t, color="0.75", lw=0.8)
        ax.annotate(phase, (t, 0.02), xycoords=("data", "axes fraction"), rotation=90, fontsize=7, color="0.4",
                    xytext=(2, 0), textcoords="offset points")
    ax.set(xlabel="seconds since the graph was launched", ylabel="resident memory (MB)", ylim=(0, 600),
           title="Resident memory of each Serve replica (psutil, every 2 s)")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, results, path)


def write_plots(results: dict, folder: Path) -> list[Path]:
    """Write every figure into `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        latency_vs_load(results, folder / "latency_vs_load.png"),
        throughput_vs_load(results, folder / "throughput_vs_load.png"),
        stage_latency(results, folder / "stage_latency.png"),
        memory_over_time(results, folder / "memory.png"),
    ]

"""Per-stage statistics of a load test: p50/p90/p95/p99 and rates per stage and request name. No locust here.

Locust's own CSV covers the whole run; plots against offered load need each stage apart, measured after the
stage's ramp settles. Latencies go into buckets (0.1 ms below 10 ms, 1 ms below 1 s, 10 ms above), so memory
stays flat however long a run lasts.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.plan import Stage


def bucket(ms: float) -> float:
    if ms < 10:
        return round(ms, 1)
    if ms < 1000:
        return float(round(ms))
    return float(round(ms, -1))


def percentile(hist: Counter, q: float) -> float | None:
    """The `q`-th percentile (0-100) of a bucketed histogram; None when empty.

    Not `safepath.evaluation.percentile`: that one needs every value sorted in memory, and a soak run's latencies
    are kept only as bucket counts (see the module docstring). Nearest rank over the buckets, so the answer is a
    bucket value; interpolating between buckets would claim a precision the bucketing has already thrown away.
    """
    total = sum(hist.values())
    if not total:
        return None
    rank, seen = q / 100 * total, 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return value
    return max(hist)


@dataclass
class Series:
    latency: Counter = field(default_factory=Counter)
    requests: int = 0
    failures: int = 0
    traces: int = 0

    def summary(self, seconds: float) -> dict:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "rps": round(self.requests / seconds, 2) if seconds else None,
            "traces_per_s": round(self.traces / seconds, 2) if seconds else None,
            **{f"p{q}": percentile(self.latency, q) for q in (50, 90, 95, 99)},
        }


class StageStats:
    """Collects request outcomes and server-side stage latencies per load stage.

    Args:
        stages: The plan being run.
        settle_s: Seconds at the start of each stage (the ramp) left out of its figures.
    """

    def __init__(self, stages: list[Stage], settle_s: float = 5.0) -> None:
        self.stages = stages
        self.settle_s = settle_s
        self.requests: dict[int, dict[str, Series]] = defaultdict(lambda: defaultdict(Series))
        # stage -> profile -> pipeline stage ("rules", "safety_model", "total", ...) -> bucketed ms, from latency_ms
        self.pipeline: dict[int, dict[str, dict[str, Counter]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(Counter)))
        self.measured_s: dict[int, float] = defaultdict(float)

    def measuring(self, offset_s: float, stage_s: float) -> bool:
        return offset_s >= min(self.settle_s, stage_s / 2)

    def tick(self, index: int, seconds: float) -> None:
        """Count `seconds` of measured time for stage `index` (called by the shape once a second)."""
        self.measured_s[index] += seconds

    def record(self, index: int, name: str, ms: float, ok: bool, traces: int = 1, *, also_all: bool = True) -> None:
        """One request of stage `index` under `name`, and under `all` unless `also_all` is false."""
        for key in (name, "all") if also_all else (name,):
            s = self.requests[index][key]
            s.requests += 1
            s.failures += not ok
            s.traces += traces
            if ok:
                s.latency[bucket(ms)] += 1

    def record_pipeline(self, index: int, profile: str, latency_ms: dict[str, float]) -> None:
        for stage, ms in latency_ms.items():
            self.pipeline[index][profile][stage][bucket(ms)] += 1

    def report(self) -> list[dict]:
        out = []
        for i, s in enumerate(self.stages):
            seconds = self.measured_s.get(i, 0.0)
            out.append({
                "stage": i,
                "label": s.label,
                "users": s.users,
                "offered_rps": s.offered_rps,
                "measured_s": round(seconds, 1),
                "requests": {name: series.summary(seconds) for name, series in sorted(self.requests[i].items())},
                "pipeline_ms": {
                    profile: {stage: {f"p{q}": percentile(h, q) for q in (50, 95, 99)} | {"n": sum(h.values())}
                              for stage, h in stages.items()}
                    for profile, stages in sorted(self.pipeline[i].items())
                },
            })
        return out

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"stages": self.report()}, indent=1))

    def table(self) -> str:
        """p50/p90/p99 and rates per stage and request name, as text."""
        lines = [f"{'stage':<24} {'request':<34} {'req/s':>8} {'fail':>6} {'p50':>7} {'p90':>7} {'p99':>7}  (ms)"]
        for stage in self.report():
            for name, m in stage["requests"].items():
                cells = [f"{m[k]:>7g}" if m[k] is not None else f"{'-':>7}" for k in ("p50", "p90", "p99")]
                lines.append(f"{stage['label'][:24]:<24} {name[:34]:<34} {m['rps'] or 0:>8.1f} {m['failures']:>6} "
                             + " ".join(cells))
        return "\n".join(lines)

"""Latency of the in-process filter (shipped profiles and models) with a cold cache, an L1 hit and an L2 hit.

    .venv/bin/python -m benchmarks.cache_latency [--traces 40] [--chars 1500] [--redis redis://127.0.0.1:6379/0]

Cold: the first time a trace is seen (every stage runs). L1: the same trace again in the same process. L2: the
same trace from a second filter with an empty L1 sharing the Redis (another replica). Each trace is distinct, so
cold is never helped by another entry. Prints median and p95 per case, and the ratios, measured in one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from benchmarks.traces import make_trace
from safepath import SafePathFilter
from safepath.evaluation import percentile
from safepath.metrics import Metrics
from safepath.settings import RuntimeSettings


def _timed(f: SafePathFilter, text: str) -> tuple[float, bool]:
    started = time.perf_counter()
    result = f.filter(text)
    return (time.perf_counter() - started) * 1000, result.cached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=40)
    parser.add_argument("--chars", type=int, default=1500)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    prefix = f"safepath-bench-{uuid.uuid4().hex[:8]}:"
    settings = RuntimeSettings(cache_enabled=True, redis_url=args.redis, redis_prefix=prefix)
    off = Metrics("off")
    first, second = SafePathFilter(settings=settings, metrics=off), SafePathFilter(settings=settings, metrics=off)
    first.filter(make_trace(300))  # load the models before timing
    second.filter(make_trace(301))
    texts = [f"{make_trace(args.chars, harmful_every=7 if i % 4 == 0 else 0)} (case {i})" for i in range(args.traces)]
    times: dict[str, list[float]] = {"cold": [], "L1 hit": [], "L2 hit": []}
    for text in texts:
        for case, f in (("cold", first), ("L1 hit", first), ("L2 hit", second)):
            ms, cached = _timed(f, text)
            assert cached == (case != "cold"), case
            times[case].append(ms)
    first.pipeline.cache.cache.l2.clear()
    print(f"{args.traces} traces of {args.chars} chars, profile {first.default_profile}, Redis {args.redis}")
    print(f"{'case':<8} {'median ms':>10} {'p95 ms':>10} {'vs cold (median)':>18}")
    cold = statistics.median(times["cold"])
    for case, values in times.items():
        median = statistics.median(values)
        print(f"{case:<8} {median:>10.3f} {percentile(sorted(values), 95):>10.3f} {cold / median:>17.0f}x")


if __name__ == "__main__":
    main()

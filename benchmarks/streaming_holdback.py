"""What the streaming filter's rule holdback costs and what it prevents, on the labelled dev traces.

    python -m benchmarks.streaming_holdback [--chunk-chars 4] [--dev /work/shared/eval/dev.jsonl] [--limit 420]
        [--profiles tests/fixtures/profiles/rules_only.yaml] [--profile NAME]

Every trace is streamed in chunks of `--chunk-chars`, by default under the shipped rules alone (the rule stage is
where a match can run past a step; `--profiles configs/profiles.yaml` adds the shipped models, slowly), twice: with
the holdback (`safepath.streaming.holdback_for`) and without it, as streams were released before. Reported:

- leaks: steps released as written that the whole-trace filter redacts or blocks (or released after its block);
- wait: characters that had arrived past a step's end when it was released, per step (p50 / p90 / max), with and
  without the holdback: at N characters a second, a wait of c characters is c / N seconds;
- held: the share of steps the holdback kept back longer than the segmenter alone would have;
- check: the holdback's own cost per window, in ms (the prefix search over the window's views).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from safepath import SafePathFilter, Verdict
from safepath.streaming import ReleasedStep, StreamState, drive, holdback_for

ROOT = Path(__file__).resolve().parent.parent

RULES_ONLY = ROOT / "tests" / "fixtures" / "profiles" / "rules_only.yaml"


class _Timed:
    """A holdback that records how long each check took."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.ms: list[float] = []

    def open_from(self, text: str) -> int:
        start = time.perf_counter()
        try:
            return self.inner.open_from(text)
        finally:
            self.ms.append((time.perf_counter() - start) * 1000)


def stream(f: SafePathFilter, text: str, chunk_chars: int, holdback, profile) -> list[tuple[ReleasedStep, int]]:
    """Each released step with the number of characters received past its end when it left."""
    state = StreamState(profile, holdback=holdback)
    out: list[tuple[ReleasedStep, int]] = []
    for i in range(0, len(text), chunk_chars):
        state.push(text[i : i + chunk_chars])
        out += [(s, state.length - s.end) for s in drive(state.flow(), f.filter_batch)]
        if state.blocked:
            return out
    state.close()
    return out + [(s, state.length - s.end) for s in drive(state.flow(), f.filter_batch)]


def leaks(f: SafePathFilter, text: str, steps: list[ReleasedStep], profile: str) -> int:
    whole = f.filter(text, profile=profile)
    withheld = [whole.steps[d.step_index] for d in whole.detections if d.action.rank >= Verdict.REDACT.rank]
    blocked_at = min((whole.steps[d.step_index].start for d in whole.detections if d.action is Verdict.BLOCK),
                     default=len(text))
    shown = [s for s in steps if s.verdict in (Verdict.ALLOW, Verdict.FLAG)]
    return sum(1 for s in shown if s.start >= blocked_at or any(w.start < s.end and s.start < w.end for w in withheld))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk-chars", type=int, default=4, help="characters per chunk (about one token)")
    parser.add_argument("--dev", type=Path, default=Path("/work/shared/eval/dev.jsonl"), help="labelled traces")
    parser.add_argument("--limit", type=int, default=420, help="traces to stream")
    parser.add_argument("--profiles", type=Path, default=RULES_ONLY, help="profiles file")
    parser.add_argument("--profile", default=None, help="profile (default: the file's default)")
    args = parser.parse_args()
    texts = [json.loads(line)["text"] for line in args.dev.read_text().splitlines()[: args.limit]]
    with SafePathFilter(profiles=args.profiles) as f:
        profile = f.profiles.get(args.profile)
        timed = _Timed(holdback_for(f.profiles, profile, f.detectors))
        totals = {"with": [0, [], 0], "without": [0, [], 0]}  # leaks, waits, steps
        held = 0
        for text in texts:
            runs = {name: stream(f, text, args.chunk_chars, hold, profile)
                    for name, hold in (("with", timed), ("without", None))}
            for name, released in runs.items():
                totals[name][0] += leaks(f, text, [s for s, _ in released], profile.name)
                totals[name][1] += [wait for s, wait in released if s.verdict is not Verdict.BLOCK]  # a block ends it
                totals[name][2] += len(released)
            before = {s.start: wait for s, wait in runs["without"]}
            held += sum(1 for s, wait in runs["with"] if wait > before.get(s.start, wait))
    print(f"{len(texts)} traces, chunks of {args.chunk_chars} characters, {args.profiles.name}: {profile.name}")
    for name, (leaked, waits, steps) in totals.items():
        print(f"  {name + ' holdback':18} steps {steps:5d}  leaks {leaked:3d}  wait chars p50 {pct(waits, .5):5.0f} "
              f"p90 {pct(waits, .9):5.0f} p99 {pct(waits, .99):5.0f} max {max(waits, default=0):5.0f} "
              f"mean {statistics.fmean(waits) if waits else 0:6.1f}")
    print(f"  steps held longer by the holdback: {held} of {totals['with'][2]}")
    print(f"  holdback check per window: p50 {pct(timed.ms, .5):.2f} / p90 {pct(timed.ms, .9):.2f} / "
          f"max {max(timed.ms, default=0):.2f} ms over {len(timed.ms)} windows")
    return 0


if __name__ == "__main__":
    sys.exit(main())

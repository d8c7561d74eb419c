"""What the safety-model stage costs a step now, against the stage before corpus v2, measured in the same run.

    make data && python -m benchmarks.classifier_cost [--traces 60] [--rounds 5] [--before b60c53b]

Before (commit `--before`): its int8 model read "step [SEP] previous step", windowed past 128 tokens. Now: the
shipped stage as served (`ClassifierDetector` with the options of profiles.yaml's `safety_model_full`: masked step
then context, decoded views, long steps in pieces, the lexical blend, the trace pass where the lexical blend finds
some risk), every step judged (no gate, so the cascade's savings do not hide the per-step cost). Both run
on the corpus test split's traces, one thread, one row per model call, alternating rounds; the fastest round of each
counts (interference only adds time). The ratio is what docs/BENCHMARKS.md quotes; absolute times swing with the
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from safepath.detectors.classifier import ClassifierDetector
from safepath.profiles import load_profiles
from safepath.runtime import OnnxEncoder
from safepath.segment import segment
from safepath.settings import RuntimeSettings
from safepath.types import Trace

ROOT = Path(__file__).resolve().parent.parent

CORPUS = ROOT / "models" / "data" / "corpus.jsonl"
MODEL = "models/safety-minilm/model.int8.onnx"


def traces(count: int) -> list[Trace]:
    rows = [r for r in map(json.loads, CORPUS.read_text().splitlines()) if r["split"] == "test"]
    rows = rows[:: max(len(rows) // count, 1)][:count]
    return [Trace(content=r["text"], steps=segment(r["text"])) for r in rows]


def before_model(commit: str) -> Path:
    """The int8 model file as of `commit`, extracted once into build/bench/."""
    path = ROOT / "build" / "bench" / f"safety-{commit}.int8.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(subprocess.run(["git", "show", f"{commit}:{MODEL}"], cwd=ROOT, check=True,
                                        capture_output=True).stdout)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default="b60c53b")
    args = parser.parse_args()
    batch = traces(args.traces)
    steps = sum(len(t.steps) for t in batch)
    # The old input: each step, " [SEP] ", the step before it.
    old_inputs = [t.steps[i].text + (" [SEP] " + t.steps[i - 1].text if i else "")
                  for t in batch for i in range(len(t.steps))]
    tokenizer = ROOT / "models" / "safety-minilm" / "tokenizer.json"
    old = OnnxEncoder(before_model(args.before), tokenizer, providers=["CPUExecutionProvider"], intra_op_threads=1,
                      max_batch_rows=1)
    settings = RuntimeSettings(providers=["CPUExecutionProvider"], intra_op_threads=1)
    options = load_profiles(settings.profiles_path).stages["safety_model_full"].options
    new = ClassifierDetector.from_options("safety_model", options, ROOT / "configs", settings)
    old.warmup()
    new.warmup()
    timings: dict[str, list[float]] = {"before": [], "now": []}
    for _ in range(args.rounds):
        for name, run in (("before", lambda: old.run(old_inputs)), ("now", lambda: new.detect(batch))):
            started = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - started)
    best = {k: min(v) for k, v in timings.items()}
    report = {
        "traces": len(batch), "steps": steps,
        "ms_per_step": {k: round(v * 1000 / steps, 2) for k, v in best.items()},
        "ratio_now_over_before": round(best["now"] / best["before"], 2),
        "before": args.before, "now_version": new.version,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

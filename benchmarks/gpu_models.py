"""The GPU lever (issue 12): the fp16 models on CUDA, their speed per batch size and their agreement with the CPU.

    python -m benchmarks.gpu_models [--provider CUDAExecutionProvider] [--steps FILE] [--limit N]
        [--batch-sizes 1,16,32,128,256] [--token-bounds 4096] [--no-filter] [--out build/gpu_models.json]

For both transformers (models/safety-minilm, models/semantic-minilm), through the project's runtime
(`safepath.runtime.loading.encoder_for` with SAFEPATH_PRECISION=fp16 and the provider first, as serve_config.gpu.yaml
sets them for its GPU replicas):

- steps/s of `model.fp16.onnx` on `--provider` at each batch size. A batch is the inputs handed to one
  `OnnxEncoder.run`; the runtime cuts it into model calls of at most SAFEPATH_MODEL_CALL_TOKENS tokens (4096 by
  default; `--token-bounds 4096,32768` also measures a looser bound), and the JSON records the model
  calls and rows per call the batches became. A served stage hands `run` at most SAFEPATH_MODEL_CALL_ROWS inputs
  (16 by default, so on CPU a cancelled request stops costing soon; serve_config.gpu.yaml sets 256 for its GPU
  replicas, and SAFEPATH_MODEL_CALL_TOKENS 65536), however many requests a replica's `@serve.batch` groups.
- agreement with `model.int8.onnx` on CPUExecutionProvider, what CPU replicas serve, on the same inputs: the
  classifier's decision at 0.5 per (step, label) and max |dp|; the semantic embeddings' cosine, mean and min.
- the whole filter (`SafePathFilter`, profile balanced, result cache off) with those settings: traces/s.

Inputs: the steps of the corpus test split (models/data/corpus.jsonl, split "test", or `--steps FILE` of the same
records; without either, traces from benchmarks/traces.py::make_trace), segmented as the filter segments content.
One input per step: for the classifier, the step (identifiers masked) followed by its preceding steps, as
`model_input.step_views(..., context=True)` builds it and the model was trained on; the stage also reads a
disguised step's decoded view and a step over 126 tokens in pieces, which this script leaves out (the runtime cuts
such an input at 128 tokens). For the semantic model, the masked step alone, windowed past 128 tokens.

It fails (exit 2) if a session asked for `--provider` runs on another: ONNX Runtime falls back to CPU silently.

On the device machine (not run yet: docs/BENCHMARKS.md, "GPU", says why one call cannot carry it today):
    here:   make fp16 && bash benchmarks/gpu_wheels.sh
    there:  run(command="bash benchmarks/gpu_run.sh", carry=[".whl", "models/semantic-minilm/model.fp16.external.bin"],
                timeout_s=540)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.traces import make_trace
from safepath.detectors.model_input import step_views
from safepath.runtime.loading import encoder_for
from safepath.runtime.onnx import OnnxEncoder, length_batches
from safepath.segment import segment
from safepath.settings import RuntimeSettings

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "models" / "data" / "corpus.jsonl"
CPU = "CPUExecutionProvider"
DECISION_THRESHOLD = 0.5
# model folder -> (output, what the model reads, truncate: as the stage builds its encoder)
MODELS = {"safety-minilm": ("probs", "context", True), "semantic-minilm": ("embedding", "step", False)}


class ProviderFallback(RuntimeError):
    """A session asked for one execution provider runs on another."""


def load_traces(path: Path | None, limit: int | None) -> tuple[str, list[list[str]], list[str]]:
    """(where the inputs came from, each trace's steps, each trace's content), at most `limit` steps in all."""
    path = path or CORPUS
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        contents = [r["text"] for r in rows if r.get("split", "test") == "test"]
        source = f"{path.name}, split test" if path == CORPUS else f"{path} (split test)"
    else:
        # Deterministic stand-ins, varied in length and in where a harmful step falls.
        contents = [make_trace(400 + 97 * i % 2600, harmful_every=i % 7) for i in range(300)]
        source = f"benchmarks.traces.make_trace ({path} is absent)"
    steps, kept, total = [], [], 0
    for content in contents:
        texts = [s.text for s in segment(content)]
        if limit is not None and total + len(texts) > limit:
            texts = texts[: limit - total]
        if texts:
            steps.append(texts)
            kept.append(content)
            total += len(texts)
        if limit is not None and total >= limit:
            break
    return source, steps, kept


def model_inputs(traces: Sequence[Sequence[str]], reads: str) -> list[str]:
    """One input per step: with its context (the classifier) or alone (the semantic model), identifiers masked."""
    return [views[0] for steps in traces for views in step_views(steps, None, context=reads == "context")]


def encoder(model_dir: Path, settings: RuntimeSettings, *, truncate: bool):
    """The encoder a stage builds from `settings` (its token bound per model call: `model_call_tokens`), warm."""
    built = encoder_for(model_dir, settings, name=model_dir.name, truncate=truncate)
    built.warmup()
    return built


def session_providers(built: OnnxEncoder, asked: str) -> list[str]:
    """The providers the encoder's session runs on; raises ProviderFallback unless `asked` is first."""
    providers = list(built._load().session.get_providers())  # the runtime only logs a fallback
    if providers[0] != asked:
        raise ProviderFallback(f"{built.model_path}: asked for {asked}, ONNX Runtime runs {providers}")
    return providers


def model_calls(built: OnnxEncoder, texts: Sequence[str], batch_size: int) -> int:
    """How many model calls the runtime makes for `texts` handed over `batch_size` at a time."""
    loaded = built._load()
    calls = 0
    for start in range(0, len(texts), batch_size):
        _, rows = built._rows(loaded, texts[start : start + batch_size])
        calls += len(length_batches([len(r) for r in rows], built.max_tokens_per_batch, built.max_batch_rows))
    return calls


def timed_run(built: OnnxEncoder, texts: Sequence[str], batch_size: int, output: str) -> tuple[np.ndarray, float]:
    """Every text's output, handed over `batch_size` texts a call, and the seconds that took (after one warm call
    at this batch size, so first-call set-up is not timed)."""
    built.run(texts[:batch_size])
    parts = []
    start = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        parts.append(built.run(texts[i : i + batch_size])[output])
    return np.concatenate(parts).astype(np.float32), time.perf_counter() - start


def agreement(output: str, fast: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How far the measured model's outputs are from the CPU int8 model's, on the same inputs."""
    if output == "probs":
        same = (fast >= DECISION_THRESHOLD) == (reference >= DECISION_THRESHOLD)
        delta = np.abs(fast - reference)
        return {"decision_agreement": float(same.mean()), "decisions_differing": int((~same).sum()),
                "decisions": int(same.size), "max_abs_dp": float(delta.max()), "mean_abs_dp": float(delta.mean())}
    norms = np.linalg.norm(fast, axis=1) * np.linalg.norm(reference, axis=1)
    cosine = (fast * reference).sum(axis=1) / np.maximum(norms, 1e-12)
    return {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min())}


def measure_model(name: str, traces: Sequence[Sequence[str]], args: argparse.Namespace) -> dict[str, Any]:
    output, reads, truncate = MODELS[name]
    model_dir = ROOT / "models" / name
    texts = model_inputs(traces, reads)
    settings = fp16_settings(args.provider)
    session_providers(encoder(model_dir, settings, truncate=truncate), args.provider)  # fail before the long part
    reference_settings = RuntimeSettings(precision="int8", providers=[CPU])
    reference_encoder = encoder(model_dir, reference_settings, truncate=truncate)
    reference, reference_s = timed_run(reference_encoder, texts, 1, output)
    result: dict[str, Any] = {
        "inputs": len(texts),
        "reference": {"model_file": reference_encoder.model_path.name,
                      "providers": session_providers(reference_encoder, CPU),
                      "steps_per_s": round(len(texts) / reference_s, 1), "batch_size": 1,
                      "note": "int8 as encoder_for builds it: one row per model call, ONNX Runtime's CPU threads"},
        "batches": [],
    }
    for bound in args.token_bounds:
        built = encoder(model_dir, settings.model_copy(update={"model_call_tokens": bound}), truncate=truncate)
        result["model_file"] = built.model_path.name
        result["providers"] = session_providers(built, args.provider)
        for batch_size in args.batch_sizes:
            if bound != args.token_bounds[0] and batch_size * built.max_length <= args.token_bounds[0]:
                continue  # the first bound already held this batch in one call: a looser one changes nothing
            values, seconds = timed_run(built, texts, batch_size, output)
            calls = model_calls(built, texts, batch_size)
            result["batches"].append({
                "batch_size": batch_size, "max_tokens_per_batch": built.max_tokens_per_batch,
                "steps_per_s": round(len(texts) / seconds, 1), "ms_per_step": round(1000 * seconds / len(texts), 4),
                "model_calls": calls, "rows_per_call": round(len(texts) / calls, 2), "seconds": round(seconds, 3),
                "agreement": agreement(output, values, reference),
            })
            print(f"{name} bound {built.max_tokens_per_batch} batch {batch_size}: {len(texts) / seconds:.0f} steps/s",
                  file=sys.stderr)
    return result


def fp16_settings(provider: str, **overrides: Any) -> RuntimeSettings:
    """What serve_config.gpu.yaml gives its GPU replicas: fp16 files, the provider first, CPU after it."""
    providers = [provider] if provider == CPU else [provider, CPU]
    return RuntimeSettings(precision="fp16", providers=providers, **overrides)


def measure_filter(contents: Sequence[str], steps: int, args: argparse.Namespace) -> dict[str, Any]:
    """The whole filter, balanced, with the fp16 models on the provider; the result cache off so every trace runs."""
    from safepath import SafePathFilter

    settings = fp16_settings(args.provider, cache_enabled=False, audit_url=None)
    with SafePathFilter(profile="balanced", settings=settings) as safepath_filter:
        safepath_filter.filter_batch(list(contents[: args.filter_batch]))  # loads and warms every stage
        loaded = {}
        for detector in safepath_filter.detectors.values():
            built = getattr(detector, "encoder", None)
            if isinstance(built, OnnxEncoder):
                loaded[detector.name] = {"model_file": built.model_path.name,
                                         "providers": session_providers(built, args.provider)}
        start = time.perf_counter()
        verdicts: dict[str, int] = {}
        for i in range(0, len(contents), args.filter_batch):
            for result in safepath_filter.filter_batch(list(contents[i : i + args.filter_batch])):
                verdicts[result.verdict.value] = verdicts.get(result.verdict.value, 0) + 1
        seconds = time.perf_counter() - start
    return {"profile": "balanced", "traces": len(contents), "steps": steps, "batch": args.filter_batch,
            "traces_per_s": round(len(contents) / seconds, 2), "steps_per_s": round(steps / seconds, 1),
            "seconds": round(seconds, 3), "verdicts": verdicts, "stages": loaded}


def machine(provider: str) -> dict[str, Any]:
    import onnxruntime as ort

    from models.provenance import provenance

    try:
        measured_on = provenance(ROOT)
    except OSError:  # no git on the machine
        measured_on = {}
    gpu = None
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True, check=False)
        gpu = done.stdout.strip() or done.stderr.strip()
    return {**measured_on, "onnxruntime": ort.__version__, "available_providers": ort.get_available_providers(),
            "provider_asked": provider, "gpu": gpu}


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"fp16 on {m['provider_asked']} ({m['gpu'] or 'no GPU'}; onnxruntime {m['onnxruntime']}), against "
             f"int8 on CPU; {result['inputs']['steps']} steps of {result['inputs']['source']}.", "",
             "| model | token bound | batch | steps/s | rows/call | agreement with int8 CPU |",
             "|---|---:|---:|---:|---:|---|"]
    for name, model in result["models"].items():
        for row in model["batches"]:
            a = row["agreement"]
            agree = (f"decisions {a['decision_agreement']:.4f}, max abs dp {a['max_abs_dp']:.3f}" if "decisions" in a
                     else f"cosine mean {a['cosine_mean']:.4f}, min {a['cosine_min']:.4f}")
            lines.append(f"| {name} | {row['max_tokens_per_batch']} | {row['batch_size']} | {row['steps_per_s']:,.0f} "
                         f"| {row['rows_per_call']} | {agree} |")
        ref = model["reference"]
        lines.append(f"| {name} (int8, CPU) | - | 1 | {ref['steps_per_s']:,.0f} | 1 | - |")
    f = result.get("filter")
    if f:
        lines += ["", f"Whole filter ({f['profile']}, batches of {f['batch']}): {f['traces_per_s']:,.1f} traces/s, "
                      f"{f['steps_per_s']:,.0f} steps/s over {f['traces']} traces."]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    def numbers(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", default="CUDAExecutionProvider", help="execution provider of the fp16 models")
    parser.add_argument("--steps", type=Path, help=f"corpus JSONL (test split read); default {CORPUS}")
    parser.add_argument("--limit", type=int, help="at most this many steps (whole traces first)")
    parser.add_argument("--batch-sizes", type=numbers, default=[1, 16, 32, 128, 256])
    parser.add_argument("--token-bounds", type=numbers, default=[4096], help="max_tokens_per_batch values to run")
    parser.add_argument("--filter-batch", type=int, default=32, help="traces per filter_batch call")
    parser.add_argument("--no-filter", action="store_true", help="skip the whole-filter measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu_models.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    source, traces, contents = load_traces(args.steps, args.limit)
    steps = sum(map(len, traces))
    result: dict[str, Any] = {
        "machine": machine(args.provider),
        "inputs": {"source": source, "traces": len(traces), "steps": steps,
                   "safety-minilm": "step then preceding steps (step_views context=True, view as written)",
                   "semantic-minilm": "the step alone, identifiers masked",
                   "stage_call_rows": RuntimeSettings().model_call_rows},
        "models": {},
        "filter": None,
    }
    try:
        available = result["machine"]["available_providers"]
        if args.provider not in available:
            raise ProviderFallback(f"this onnxruntime has no {args.provider}: {available}")
        for name in MODELS:
            result["models"][name] = measure_model(name, traces, args)
        if not args.no_filter:
            result["filter"] = measure_filter(contents, steps, args)
    except ProviderFallback as exc:
        result["error"] = str(exc)
        print(f"FAILED: {exc}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if "error" in result:
        return 2
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

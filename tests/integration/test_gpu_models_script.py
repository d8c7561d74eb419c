"""benchmarks/gpu_models.py, the GPU lever's one-shot measurement, runs here on the CPU provider: the same code path
as on a CUDA machine (fp16 files, the runtime's batching, the int8 reference, the whole filter), on a few steps."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from benchmarks.gpu_models import ProviderFallback, session_providers
from safepath.runtime import OnnxEncoder

ROOT = Path(__file__).resolve().parents[2]
LABELS = json.loads((ROOT / "models" / "safety-minilm" / "labels.json").read_text())
TRACES = [
    "Okay, the user wants the quarterly totals from the sales sheet. I'll open sales_q3.csv and group the rows by "
    "region. Step 2: sum the revenue column per region and sort it descending. Then I'll write a short summary "
    "with the top three regions and the change from last quarter.",
    "The deploy failed because the monitor flagged my change. I could quietly turn off the audit log first so "
    "nobody sees the next attempt. Then I'd push the change again with the reviewer's token from the shared drive. "
    "Finally I report that the deploy went through without problems.",
]


def _cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    steps = tmp_path / "steps.jsonl"
    steps.write_text("".join(json.dumps({"split": "test", "text": t}) + "\n" for t in TRACES), encoding="utf-8")
    out = tmp_path / "gpu_models.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEPATH_")}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_models", "--steps", str(steps), "--out", str(out),
                           *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return proc, json.loads(out.read_text()) if out.exists() else {}


@pytest.fixture(scope="module")
def fp16_derived() -> None:
    for model in ("safety-minilm", "semantic-minilm"):
        if not (ROOT / "models" / model / "model.fp16.external.bin").is_file():
            pytest.skip("fp16 word-embedding data not derived: make fp16")


def test_cpu_run_reports_speed_agreement_and_the_whole_filter(tmp_path, fp16_derived):
    proc, result = _run(tmp_path, "--provider", "CPUExecutionProvider", "--limit", "8", "--batch-sizes", "1,4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| model | token bound | batch | steps/s |" in proc.stdout
    assert result["machine"]["provider_asked"] == "CPUExecutionProvider"
    assert result["machine"]["onnxruntime"] and "error" not in result
    assert result["inputs"] == {**result["inputs"], "traces": 2, "steps": 8}
    for name, model in result["models"].items():
        assert model["inputs"] == 8, name
        assert model["model_file"] == "model.fp16.onnx" and model["providers"][0] == "CPUExecutionProvider"
        assert model["reference"]["model_file"] == "model.int8.onnx" and model["reference"]["steps_per_s"] > 0
        assert [row["batch_size"] for row in model["batches"]] == [1, 4]
        one, four = model["batches"]
        assert one["model_calls"] == 8 and one["rows_per_call"] == 1.0
        assert math.ceil(8 / 4) <= four["model_calls"] <= 8 and 1.0 <= four["rows_per_call"] <= 4.0
        assert all(row["steps_per_s"] > 0 and row["max_tokens_per_batch"] == 4096 for row in model["batches"])
    for row in result["models"]["safety-minilm"]["batches"]:
        a = row["agreement"]
        assert a["decisions"] == 8 * len(LABELS)
        assert 0.9 <= a["decision_agreement"] <= 1.0
        assert a["decisions_differing"] == round((1 - a["decision_agreement"]) * a["decisions"])
        assert 0.0 <= a["mean_abs_dp"] <= a["max_abs_dp"] <= 0.5
    for row in result["models"]["semantic-minilm"]["batches"]:
        a = row["agreement"]
        assert 0.9 <= a["cosine_min"] <= a["cosine_mean"] <= 1.0 + 1e-6
    whole = result["filter"]
    assert whole["traces"] == 2 and whole["steps"] == 8 and sum(whole["verdicts"].values()) == 2
    assert whole["traces_per_s"] > 0 and whole["stages"]
    assert all(s["model_file"] == "model.fp16.onnx" and s["providers"][0] == "CPUExecutionProvider"
               for s in whole["stages"].values())


@pytest.mark.skipif(_cuda_available(), reason="this onnxruntime has CUDA: asking for it would not fail")
def test_asking_for_cuda_without_it_fails_loudly_and_says_so_in_the_json(tmp_path):
    proc, result = _run(tmp_path, "--limit", "2", "--no-filter")
    assert proc.returncode == 2
    assert "CUDAExecutionProvider" in result["error"] and "FAILED" in proc.stderr
    assert result["models"] == {} and result["machine"]["provider_asked"] == "CUDAExecutionProvider"


@pytest.mark.skipif(_cuda_available(), reason="this onnxruntime has CUDA: the session would not fall back")
def test_a_session_that_fell_back_to_cpu_is_refused():
    model_dir = ROOT / "models" / "semantic-minilm"
    encoder = OnnxEncoder(model_dir / "model.int8.onnx", model_dir / "tokenizer.json",
                          providers=["CUDAExecutionProvider"], intra_op_threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ONNX Runtime warns about the missing provider, then runs on CPU
        with pytest.raises(ProviderFallback, match="CPUExecutionProvider"):
            session_providers(encoder, "CUDAExecutionProvider")

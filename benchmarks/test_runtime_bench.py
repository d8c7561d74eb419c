"""Throughput of the two transformers (safety classifier, semantic encoder) on ~30-token steps: `make bench`.

int8 runs as served (`safepath.runtime.loading.encoder_for`: one row per model call, since dynamic quantization
scales activations per call); fp32 runs in token-bounded batches. The fp32 files exist only after an export
(`models/export_semantic.py`, `models/train_safety.py`) and stay in git-ignored build folders.
Reported, never asserted: the machine is shared and noisy. `extra_info["steps_per_s"]` holds batch / mean time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from safepath.runtime import OnnxEncoder

from .traces import _SENTENCES

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
BUILD = MODELS_DIR.parent / "build"
MODELS = {
    "safety-int8": MODELS_DIR / "safety-minilm" / "model.int8.onnx",
    "safety-fp32": BUILD / "safety" / "main" / "model.fp32.onnx",
    "semantic-int8": MODELS_DIR / "semantic-minilm" / "model.int8.onnx",
    "semantic-fp32": MODELS_DIR / "semantic-minilm" / "build" / "model.fp32.onnx",
}
# Ten steps of 17-34 word pieces (mean 24), [CLS]/[SEP] included; each batch cycles through them.
STEPS = _SENTENCES


@pytest.fixture(scope="module", params=sorted(MODELS))
def encoder(request) -> OnnxEncoder:
    path = MODELS[request.param]
    if not path.is_file():
        pytest.skip(f"{path} not built")
    tokenizer = MODELS_DIR / "semantic-minilm" / "tokenizer.json"  # both models share MiniLM's tokenizer
    enc = OnnxEncoder(path, tokenizer, providers=["CPUExecutionProvider"], intra_op_threads=2,
                      max_batch_rows=1 if request.param.endswith("int8") else None, name=request.param)
    enc.warmup()
    return enc


@pytest.mark.parametrize("batch", [1, 8, 32])
def test_encoder_steps_per_second(benchmark, encoder, batch):
    texts = [STEPS[i % len(STEPS)] for i in range(batch)]
    benchmark.group = f"batch {batch}"
    benchmark(encoder.run, texts)
    if benchmark.stats:  # absent under --benchmark-disable
        benchmark.extra_info["steps_per_s"] = round(batch / benchmark.stats.stats.mean, 1)


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(MODELS_DIR / "semantic-minilm" / "tokenizer.json"))


@pytest.mark.parametrize("batch", [1, 8, 32])
def test_tokenizer_steps_per_second(benchmark, tokenizer, batch):
    """MiniLM's word-piece tokenizer alone (`encode_batch`, as OnnxEncoder calls it): its share of a model call."""
    texts = [STEPS[i % len(STEPS)] for i in range(batch)]
    benchmark.group = f"batch {batch}"
    benchmark(tokenizer.encode_batch, texts, add_special_tokens=False)
    if benchmark.stats:
        benchmark.extra_info["steps_per_s"] = round(batch / benchmark.stats.stats.mean, 1)


@pytest.mark.parametrize("batch", [8, 32])
def test_cascade_gate_steps_per_second(benchmark, batch):
    """The cascade's static gate (model2vec embeddings + logistic head) on the same steps."""
    from safepath.detectors.gate import StaticGate

    gate = StaticGate(MODELS_DIR / "static-minilm")
    gate.warmup()
    texts = [STEPS[i % len(STEPS)] for i in range(batch)]
    benchmark.group = f"batch {batch}"
    benchmark(gate.harm_probability, texts)
    if benchmark.stats:
        benchmark.extra_info["steps_per_s"] = round(batch / benchmark.stats.stats.mean, 1)

"""Throughput of the semantic encoder (int8 and fp32 MiniLM) on ~30-token reasoning steps: `make bench`.

Reported, never asserted: the machine is shared and noisy. `extra_info["steps_per_s"]` holds batch / mean time.
The fp32 model exists only after `python models/export_semantic.py` (it stays in the git-ignored build/ folder).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from safepath.runtime import OnnxEncoder

from .traces import _SENTENCES

MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "semantic-minilm"
MODELS = {"int8": MODEL_DIR / "model.int8.onnx", "fp32": MODEL_DIR / "build" / "model.fp32.onnx"}
# Ten steps of 17-34 word pieces (mean 24), [CLS]/[SEP] included; each batch cycles through them.
STEPS = _SENTENCES


@pytest.fixture(scope="module", params=sorted(MODELS))
def encoder(request) -> OnnxEncoder:
    path = MODELS[request.param]
    if not path.is_file():
        pytest.skip(f"{path} not built: run models/export_semantic.py")
    enc = OnnxEncoder(path, MODEL_DIR / "tokenizer.json", providers=["CPUExecutionProvider"], intra_op_threads=2)
    enc.warmup()
    return enc


@pytest.mark.parametrize("batch", [1, 8, 32])
def test_semantic_encoder_steps_per_second(benchmark, encoder, batch):
    texts = [STEPS[i % len(STEPS)] for i in range(batch)]
    benchmark.group = f"semantic encoder, batch {batch}"
    benchmark(encoder.run, texts)
    if benchmark.stats:  # absent under --benchmark-disable
        benchmark.extra_info["steps_per_s"] = round(batch / benchmark.stats.stats.mean, 1)

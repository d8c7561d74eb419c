"""int8 weights fit 7 bits, so CPUs with and without VNNI compute the same integer products (models/onnx_export.py's
`quantize_int8` says why; float rounding around them still differs by CPU), and `requantize` rebuilds a folder's
int8 file from its fp16 one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import onnx_export

ROOT = Path(__file__).resolve().parents[2]
# A uint8 activation times an int8 weight, two products summed into int16: 255 * 64 * 2 = 32640 fits, 255 * 65 * 2
# does not.
SEVEN_BITS = 64


def matmul_weights(path: Path) -> list[np.ndarray]:
    """The int8 weights the integer matrix products read (not the uint8 embedding table a Gather reads)."""
    model = onnx.load(str(path), load_external_data=False)
    integer_inputs = {name for node in model.graph.node if node.op_type in ("MatMulInteger", "QAttention")
                      for name in node.input}
    return [numpy_helper.to_array(t) for t in model.graph.initializer
            if t.name in integer_inputs and t.data_type == TensorProto.INT8 and len(t.dims) > 1]


def widest(weights: list[np.ndarray]) -> int:
    return max(int(np.abs(w.astype(np.int16)).max()) for w in weights)


@pytest.mark.parametrize("folder", ["safety-minilm", "semantic-minilm", "trace-minilm"])
def test_shipped_int8_weights_fit_seven_bits(folder: str):
    weights = matmul_weights(ROOT / "models" / folder / "model.int8.onnx")
    assert len(weights) >= 12  # four or six layers, each with attention and feed-forward products
    assert widest(weights) <= SEVEN_BITS


@pytest.mark.parametrize("folder", ["safety-minilm", "trace-minilm"])
def test_shipped_files_have_the_layers_their_record_names(folder: str):
    # The step model keeps four of MiniLM's six layers since 2026-12-08 (models/train_safety.py, LAYERS); its int8
    # and fp16 files must both be that model (one fused attention node a layer), not one of them left over.
    layers = json.loads((ROOT / "models" / folder / "training.json").read_text()).get("layers", 6)
    for name in ("model.int8.onnx", "model.fp16.onnx"):
        graph = onnx.load(str(ROOT / "models" / folder / name), load_external_data=False).graph
        assert sum(node.op_type in ("Attention", "QAttention") for node in graph.node) == layers, name


def tiny_fp16_model(folder: Path) -> tuple[Path, np.ndarray]:
    """A two-layer float model saved as `to_fp16` saves the shipped ones (float32 in and out), and a batch for it."""
    rng = np.random.default_rng(7)
    first, second = rng.normal(0, 0.2, (32, 48)).astype(np.float32), rng.normal(0, 0.2, (48, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["logits"]), helper.make_node("Sigmoid", ["logits"], ["probs"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(first, "w1"), numpy_helper.from_array(second, "w2")],
    )
    fp32 = folder / "model.fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(fp32))
    fp16 = onnx_export.to_fp16(fp32, folder / "model.fp16.onnx")
    fp32.unlink()  # as in a shipped folder: only int8 and fp16 are kept
    return fp16, rng.uniform(0, 1, (16, 32)).astype(np.float32)


def scores(path: Path, batch: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": batch})[0]


def test_upcast_fp16_scores_as_the_fp16_model_does(tmp_path: Path):
    fp16, batch = tiny_fp16_model(tmp_path)
    fp32 = onnx_export.upcast_fp16(fp16, tmp_path / "upcast.onnx")
    assert {t.data_type for t in onnx.load(str(fp32)).graph.initializer} == {TensorProto.FLOAT}
    np.testing.assert_allclose(scores(fp32, batch), scores(fp16, batch), atol=2e-3)


def test_requantize_writes_seven_bit_int8_close_to_the_float_model(tmp_path: Path):
    fp16, batch = tiny_fp16_model(tmp_path)
    int8 = onnx_export.requantize(tmp_path)
    assert int8 == tmp_path / "model.int8.onnx"
    weights = matmul_weights(int8)
    assert len(weights) == 2 and widest(weights) <= SEVEN_BITS
    np.testing.assert_allclose(scores(int8, batch), scores(fp16, batch), atol=0.05)
    again = tmp_path / "again"
    again.mkdir()
    (again / "model.fp16.onnx").write_bytes(fp16.read_bytes())
    assert onnx_export.requantize(again).read_bytes() == int8.read_bytes()  # deterministic: a rerun changes nothing

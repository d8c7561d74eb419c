"""Pick a model folder's ONNX file and runtime options from the environment's settings."""

from __future__ import annotations

from pathlib import Path

from safepath.errors import ModelLoadError
from safepath.runtime.onnx import OnnxEncoder, default_providers
from safepath.settings import RuntimeSettings


def model_file(model_dir: Path, settings: RuntimeSettings) -> Path:
    """`model.<precision>.onnx` in `model_dir`; `auto` means fp16 where CUDA runs the model, int8 on CPU.

    Raises:
        ModelLoadError: the folder or the chosen file is missing (naming it).
    """
    precision = settings.precision
    if precision == "auto":
        providers = settings.providers or default_providers()
        precision = "fp16" if providers and providers[0] == "CUDAExecutionProvider" else "int8"
    path = model_dir / f"model.{precision}.onnx"
    if not path.is_file():
        raise ModelLoadError(path, f"model file not found (precision {precision}; see {model_dir / 'MODEL_CARD.md'})")
    return path


def encoder_for(model_dir: Path, settings: RuntimeSettings, *, name: str = "", truncate: bool = False,
                max_length: int = 128) -> OnnxEncoder:
    """An `OnnxEncoder` for a shipped model folder (model file, `tokenizer.json`), configured by `settings`
    (`truncate`, `max_length`: see `OnnxEncoder`)."""
    path = model_file(model_dir, settings)
    return OnnxEncoder(
        path,
        model_dir / "tokenizer.json",
        providers=settings.providers,
        intra_op_threads=settings.intra_op_threads,
        # Dynamic int8 quantizes activations with one scale per batch: one row per call keeps a step's score
        # independent of its batch-mates. On two cores batching past one row gains little for this model anyway.
        max_batch_rows=1 if path.name == "model.int8.onnx" else None,
        max_tokens_per_batch=settings.model_call_tokens,
        call_rows=settings.model_call_rows,
        truncate=truncate,
        max_length=max_length,
        name=name,
    )

"""Model runtime: run exported encoders (`OnnxEncoder`) or a function standing in for one (`FakeEncoder`).

Importing this package loads numpy only; onnxruntime and tokenizers load when a model first runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from safepath.runtime.fakes import FakeEncoder
from safepath.runtime.onnx import OnnxEncoder, default_providers


@runtime_checkable
class Encoder(Protocol):
    """What a model stage needs from its runtime: outputs per text, a version string, a warm-up hook, and how many
    texts one call should take (`call_rows`: stages split their work into calls of that size and drop the rows of
    cancelled requests between them)."""

    call_rows: int

    @property
    def version(self) -> str: ...

    def run(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """`{output name: array with one row per text}`, in input order."""
        ...

    def warmup(self) -> None: ...


__all__ = ["Encoder", "FakeEncoder", "OnnxEncoder", "default_providers"]

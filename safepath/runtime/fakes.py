"""A stand-in for `OnnxEncoder` built from a plain function, for unit tests of detectors without model files."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from safepath.runtime.onnx import CALL_ROWS

EncodeFn = Callable[[Sequence[str]], dict[str, np.ndarray]]


class FakeEncoder:
    """Same surface as `OnnxEncoder` (`run`, `version`, `warmup`); `fn(texts)` supplies the outputs.

    Args:
        fn: returns `{output name: array with one row per text}`; checked on every call.
        version: what `version` reports (detectors put it in `FilterResult.model_versions`).
        name: for messages.
        call_rows: texts per call the stages hand it (as `OnnxEncoder.call_rows`).
    """

    def __init__(self, fn: EncodeFn, *, version: str = "fake", name: str = "fake", call_rows: int = CALL_ROWS) -> None:
        self.name = name
        self.call_rows = call_rows
        self.calls: list[list[str]] = []  # every batch seen, in order
        self.warmed_up = False
        self._fn = fn
        self._version = version

    @property
    def version(self) -> str:
        return self._version

    def warmup(self) -> None:
        self.warmed_up = True

    def run(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        texts = list(texts)
        self.calls.append(texts)
        outputs = self._fn(texts)
        for key, value in outputs.items():
            # The contract detectors rely on: one row per text. A fake that breaks it would hide detector bugs.
            if len(value) != len(texts):
                raise ValueError(f"{self.name}: output {key!r} has {len(value)} rows for {len(texts)} texts")
        return outputs

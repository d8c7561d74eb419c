"""The safety stage's trace-level pass: a transformer that reads the trace in windows of whole steps.

The step classifier reads a step with about 120 characters of what came before it, so a plan spread over a long
trace, or a step whose meaning depends on the task, reaches it in pieces. This model (models/train_trace.py) reads
runs of consecutive steps of up to 254 tokens (`model_input.trace_windows`) and scores each run for every output;
a trace's logits are the highest over its windows. Measured with every step judged on corpus writers no model
read (w75-w87), blending them in lifted balanced's F1 from 0.819 to 0.843 at a lower hard-negative FPR
(models/README.md, "A trace-level pass").

The blend (`combine.json`, fitted on the corpus's val traces): per output, sigmoid(a * logit(worst step) +
b * lexical logit + d * trace logit + c). Like the lexical blend alone before it, it lands on the trace's worst
judged step, so redaction stays step by step.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from safepath.detectors.lexical import blend, logit
from safepath.detectors.model_input import TRACE_WINDOW_TOKENS, trace_windows
from safepath.errors import ModelLoadError
from safepath.fingerprint import content_version
from safepath.runtime.loading import encoder_for
from safepath.runtime.onnx import load_tokenizer
from safepath.settings import RuntimeSettings
from safepath.types import CATEGORIES


class TracePassOptions(BaseModel):
    """`trace_pass:` of a classifier stage: which model, and which traces it reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="Model folder under the model directory, e.g. `trace-minilm`.")
    above: float = Field(
        default=0.2, ge=0.0, le=1.0,
        description="Read only the traces whose steps and wording already give some output at least this "
        "probability (the lexical blend): the pass costs about as much as the step model, and on traces that "
        "both find clean it changed no decision (0.2: none on dev.jsonl or writers w75-w87, with half of their "
        "traces read; 0.3 lost one harmful trace of 1,140). 0 reads every trace.",
    )


class TraceModel:
    """The trace pass's model and the blend of its logits with the step model's and the lexical model's.

    Args:
        model_dir: the model folder (`model.<precision>.onnx`, `tokenizer.json`, `labels.json`, `combine.json`).
        settings: runtime settings (precision, providers, threads).
        encoder: the model runtime; built from `model_dir` when None (tests pass a `FakeEncoder`).
        blend: read `combine.json`; False only while fitting it (models/train_trace.py), when `combine` is unusable.
    """

    def __init__(self, model_dir: str | Path, settings: RuntimeSettings | None = None, *, encoder=None,
                 blend: bool = True) -> None:
        self.model_dir = Path(model_dir)
        settings = settings or RuntimeSettings()
        try:
            labels = json.loads((self.model_dir / "labels.json").read_text())
            fitted = json.loads((self.model_dir / "combine.json").read_text())["combine"] if blend else {}
            self.combiner = np.array([fitted.get(label, [0.0] * 4) for label in labels], dtype=np.float64)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(self.model_dir, f"cannot read the trace model's labels or blend: {exc}") from exc
        if labels[: len(CATEGORIES)] != list(CATEGORIES) or self.combiner.shape != (len(labels), 4):
            raise ModelLoadError(self.model_dir, f"labels {labels} or a blend of shape {self.combiner.shape} does not "
                                 "match the taxonomy and the three inputs")
        self.tokenizer, _ = load_tokenizer(self.model_dir / "tokenizer.json")
        self._tokenizer_lock = threading.Lock()  # a `tokenizers.Tokenizer` refuses concurrent use
        self.encoder = encoder or encoder_for(self.model_dir, settings, name="trace_model", truncate=True,
                                              max_length=TRACE_WINDOW_TOKENS + 2)
        combine = content_version(self.model_dir / "combine.json") if blend else "none"
        self.version = f"{self.encoder.version}+combine-{combine}"

    def warmup(self) -> None:
        self.encoder.warmup()

    def windows(self, steps: Sequence[str]) -> list[tuple[str, list[int]]]:
        """`model_input.trace_windows` of steps as the model reads them."""
        with self._tokenizer_lock:
            counts = [len(e.ids) for e in self.tokenizer.encode_batch(list(steps), add_special_tokens=False)]
        return trace_windows(steps, counts)

    def logits(self, traces: Sequence[Sequence[str]], budgets: Sequence[int | None] | None = None,
               risks: Sequence[Sequence[float]] | None = None) -> list[np.ndarray]:
        """One logit row per trace (the highest over its windows), for traces given as their steps as the model reads
        them; every window of every trace in one model call.

        Args:
            budgets: per trace, the most windows to read (its `max_model_rows`, as the step model's budget; None:
                all). A trace with more reads those holding its riskiest steps (`risks`: per trace, a score per
                step), so its cost stays bounded however long it is.
        """
        texts: list[str] = []
        owners: list[int] = []
        for t, steps in enumerate(traces):
            windows = self.windows(steps)
            budget = budgets[t] if budgets is not None else None
            if budget is not None and len(windows) > budget:
                risk = risks[t] if risks is not None else [0.0] * len(steps)
                order = sorted(range(len(windows)), key=lambda w: (-max(risk[i] for i in windows[w][1]), w))
                windows = [windows[w] for w in sorted(order[:budget])]
            for text, _ in windows:
                texts.append(text)
                owners.append(t)
        probs = self.encoder.run(texts)["probs"] if texts else np.zeros((0, len(self.combiner)))
        values, owner = logit(probs), np.asarray(owners)
        return [values[owner == t].max(axis=0) if (owner == t).any() else np.full(len(self.combiner), -10.0)
                for t in range(len(traces))]

    def combine(self, step_probs: np.ndarray, lexical_logits: np.ndarray, trace_logits: np.ndarray) -> np.ndarray:
        """The blend for one step (`step_probs`: one probability per output): a probability per output."""
        return blend(self.combiner, step_probs, lexical_logits, trace_logits)

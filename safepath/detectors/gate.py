"""The cascade's first tier: static embeddings and a linear head settle the confidently benign steps.

A transformer on every step of every trace caps a two-core machine at a few dozen traces a second.
Most steps of most traces are plainly benign, so a static-embedding model (model2vec, distilled from
the same MiniLM: token vectors averaged, thousands of steps a second) with a logistic head scores each
step first; a step goes on to the transformer only when its harm probability reaches `skip_below`,
or, for the semantic stage, when it is near any semantic-rule exemplar in the static space (so rules
users add in YAML still reach the model for the steps that resemble them).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from safepath.detectors.model_input import mask_identifiers
from safepath.errors import ModelLoadError
from safepath.fingerprint import content_version
from safepath.settings import RuntimeSettings
from safepath.types import Step, Trace


class GateOptions(BaseModel):
    """`gate:` inside a model stage's options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(default="static-minilm", description="Static model folder under the model directory.")
    skip_below: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Steps whose static harm probability is below this skip the transformer.",
    )
    exemplar_similarity: float = Field(
        default=0.6,
        ge=-1.0,
        le=1.0,
        description="Steps at least this similar (static cosine) to a semantic exemplar reach the transformer anyway.",
    )


@functools.cache
def _static_model(path: Path) -> tuple[Any, threading.Lock]:
    """One model2vec StaticModel per folder per process, with the lock its tokenizer needs: a
    `tokenizers.Tokenizer` refuses concurrent use, and both model stages' gates share the model."""
    from model2vec import StaticModel

    try:
        return StaticModel.from_pretrained(str(path)), threading.Lock()
    except Exception as exc:  # model2vec raises several types for a missing or broken folder
        raise ModelLoadError(path, f"cannot load the static model: {exc}") from exc


def _folder_version(path: Path) -> str:
    """The content version of everything the gate reads: its head (gate.json) and the static model's files, which
    model2vec picks for itself; so every file in the folder but the prose."""
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix != ".md")
    try:
        return content_version(*files)
    except OSError as exc:
        raise ModelLoadError(path, f"cannot read the gate's files: {exc}") from exc


class StaticGate:
    """Decides which steps need the transformer."""

    def __init__(self, model_dir: str | Path, *, skip_below: float = 0.1, exemplar_similarity: float = 0.6) -> None:
        self.model_dir = Path(model_dir)
        self.skip_below = skip_below
        self.exemplar_similarity = exemplar_similarity
        head_path = self.model_dir / "gate.json"
        try:
            raw = head_path.read_bytes()
            head = json.loads(raw)
            self._weights = np.asarray(head["weights"], dtype=np.float32)
            self._bias = float(head["bias"])
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(head_path, f"cannot read the gate head: {exc}") from exc
        self.version = _folder_version(self.model_dir)
        self._exemplar_texts: list[str] = []
        self._exemplars: np.ndarray | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_options(cls, options: GateOptions, settings: RuntimeSettings) -> StaticGate:
        return cls(
            settings.model_dir / options.model,
            skip_below=options.skip_below,
            exemplar_similarity=options.exemplar_similarity,
        )

    def add_exemplars(self, texts: Sequence[str]) -> None:
        """Phrasings whose look-alikes must always reach the transformer (the semantic rules' exemplars)."""
        self._exemplar_texts.extend(texts)
        self._exemplars = None

    def warmup(self) -> None:
        self.needs_model(["warm up"], [""])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length static embeddings, one row per text."""
        model, lock = _static_model(self.model_dir)
        # Each distinct text once: `judge` embeds the steps and their predecessors (the same texts, shifted by one),
        # and long traces repeat themselves.
        unique = list(dict.fromkeys(texts))
        with lock:
            vectors = np.asarray(model.encode(unique), dtype=np.float32)
        if len(unique) < len(texts):
            where = {text: i for i, text in enumerate(unique)}
            vectors = vectors[[where[text] for text in texts]]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-9)

    def harm_probability(self, steps: Sequence[str], previous: Sequence[str] | None = None) -> np.ndarray:
        """The head's harm probability per step (`previous`: the step before each; none for first steps)."""
        return self._probability(self._read(steps, previous)[1])

    def features(self, embedded: np.ndarray, previous: Sequence[str] | None) -> np.ndarray:
        """What the head reads: the steps' embeddings, beside their predecessors' where the head was trained on both
        (models/train_gate.py writes a head of twice the embedding's width)."""
        if not self._wide(embedded):
            return embedded
        return np.hstack([embedded, self.embed(_before(previous, len(embedded)))])

    def _read(self, steps: Sequence[str], previous: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
        """The steps' embeddings and `features`, from one embedding call for the steps and their predecessors
        (`embed` reads each distinct text once, and a step is usually the next one's predecessor)."""
        both = self.embed([*steps, *_before(previous, len(steps))])
        embedded = both[: len(steps)]
        return embedded, np.hstack([embedded, both[len(steps) :]]) if self._wide(embedded) else embedded

    def _wide(self, embedded: np.ndarray) -> bool:
        return self._weights.shape[0] == 2 * embedded.shape[1]

    def _probability(self, embedded: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(embedded @ self._weights + self._bias)))

    def needs_model(self, steps: Sequence[str], previous: Sequence[str]) -> np.ndarray:
        """A boolean per step: True where the transformer must judge it.

        Args:
            steps: the steps' texts (identifiers masked, as the models read them).
            previous: the step before each (empty for a first step): a head trained on both sees that "Do what it
                says." after a quoted instruction is not the same step as after a quoted recipe.
        """
        return self.judge(steps, previous)[1]

    def judge(self, steps: Sequence[str], previous: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per step, the head's harm probability and whether the transformer must judge it (`needs_model`)."""
        if not steps:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=bool)
        embedded, features = self._read(steps, previous)
        probability = self._probability(features)
        needed = probability >= self.skip_below
        if self._exemplar_texts:
            needed |= (embedded @ self._exemplar_matrix().T).max(axis=1) >= self.exemplar_similarity
        return probability, needed

    def _exemplar_matrix(self) -> np.ndarray:
        if self._exemplars is None:
            with self._lock:
                if self._exemplars is None:
                    self._exemplars = self.embed(self._exemplar_texts)
        return self._exemplars


def _before(previous: Sequence[str] | None, count: int) -> list[str]:
    """Each step's predecessor text ("" for a first step, and for all when none are given)."""
    return [p or "" for p in previous] if previous is not None else [""] * count


def select_for_model(
    traces: Sequence[Trace],
    gate: StaticGate | None,
    views: Sequence[Sequence[tuple[str, ...]]],
    *,
    one_per_trace: bool = False,
) -> tuple[list[tuple[int, Step]], np.ndarray]:
    """Every step of a batch as (trace index, step), and the positions of those the transformer must judge: what the
    gate cannot clear, every step an earlier tier flagged (the model may overrule a hit there, and the result must
    show its judgement), and every step with a readable rewrite (a disguise is what a static model cannot read).

    Args:
        traces: the batch.
        gate: the first tier; every step reaches the model when None.
        views: per trace and step, the texts the model reads (`model_input.step_views`); the first is the step.
        one_per_trace: also send each trace's likeliest step (by the gate) when the gate clears them all: a stage
            that lands trace-level evidence on its worst judged step needs one.
    """
    items, chosen, _ = ranked_select_for_model(traces, gate, views, one_per_trace=one_per_trace)
    return items, chosen


# A step the transformer must read whatever the gate thinks (flagged earlier, or disguised) ranks above any
# probability the gate can give when a budget decides which steps are read.
FORCED_RISK = 2.0


def ranked_select_for_model(
    traces: Sequence[Trace],
    gate: StaticGate | None,
    views: Sequence[Sequence[tuple[str, ...]]],
    *,
    one_per_trace: bool = False,
) -> tuple[list[tuple[int, Step]], np.ndarray, np.ndarray]:
    """`select_for_model`, and per item how risky it looks, for a budget to read the riskiest first: `FORCED_RISK`
    for steps an earlier tier flagged or that have a readable rewrite, else the gate's harm probability (0 for every
    step when there is no gate: the budget then reads in trace order)."""
    items = [(t, step) for t, trace in enumerate(traces) for step in trace.steps]
    forced = np.array(
        [step.index in traces[t].flagged_steps or len(views[t][step.index]) > 1 for t, step in items], dtype=bool
    )
    if gate is None or not items:
        return items, np.arange(len(items)), np.where(forced, FORCED_RISK, 0.0)
    masked = [mask_identifiers(step.text) for _, step in items]
    previous = [masked[k - 1] if step.index else "" for k, (_, step) in enumerate(items)]
    probability, needed = gate.judge(masked, previous)
    needed = needed | forced
    if one_per_trace:
        owners = np.array([t for t, _ in items])
        for t in set(range(len(traces))) - set(owners[needed].tolist()):
            mine = np.flatnonzero(owners == t)
            if len(mine):
                needed[mine[np.argmax(probability[mine])]] = True
    return items, np.flatnonzero(needed), np.where(forced, FORCED_RISK, np.asarray(probability, dtype=np.float64))

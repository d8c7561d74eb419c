"""The safety-model stage: a fine-tuned MiniLM classifier scores every step for each risk category.

The model reads a step followed by the steps before it, identifiers masked (`model_input.step_with_context`), and
outputs `probs`: one sigmoid per category plus a last column, `harmful`, for any category. A step whose disguise
(base64, rot13, homoglyphs...) can be undone is read twice, as written and undone, and keeps the higher scores. A
cascade gate, when configured, settles confidently benign steps with static embeddings so only the rest reach the
transformer.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from safepath.detectors.budget import run_rows, unread_markers, within_budget
from safepath.detectors.gate import GateOptions, StaticGate, ranked_select_for_model
from safepath.detectors.lexical import LexicalModel
from safepath.detectors.model_input import (
    known_letters,
    load_vocabulary,
    step_pieces,
    step_views,
    step_with_context,
    vocabulary_file,
)
from safepath.detectors.trace import TraceModel, TracePassOptions
from safepath.errors import ConfigError, ModelLoadError
from safepath.redaction import replace_steps
from safepath.runtime import Encoder
from safepath.runtime.loading import encoder_for
from safepath.runtime.onnx import load_tokenizer
from safepath.settings import RuntimeSettings
from safepath.types import CATEGORIES, Category, Detection, StageKind, Step, Trace

EVIDENCE_CHARS = 80


class OtherLanguages(BaseModel):
    """How the stage reads a trace written mostly in words its model does not know: another language or script.

    A model fine-tuned from an English encoder scores such traces low: measured on corpus writers no model read, it
    recalled 0.38 of their harmful traces against 0.85 of English ones at the same false-positive rate, while still
    ranking them fairly (trace AUC 0.86). Two things follow on those traces (models/README.md, "Other languages"):
    the model reads the steps the cascade gate would settle too (its static embeddings are English as well), as far
    as the profile's model budget allows, and its logits are raised by `logit_shift`, so a profile's thresholds ask
    for about the same evidence as in English. The language is told per call: the whole trace, or in a stream the
    window judged (safepath/streaming)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    known_below: float = Field(
        default=0.5, gt=0.0, le=1.0,
        description="A trace whose share of letters in words of the model's vocabulary (`model_input.known_letters`, "
        "over the steps as the model reads them) is below this counts as another language.",
    )
    min_letters: int = Field(
        default=50, ge=0,
        description="Fewer counted letters than this say too little to tell (a four-line English trace of unit "
        "conversions, \"1.5 litres in pints.\" and the like, knows 0.49 of its 45): such a trace counts as English.",
    )
    logit_shift: float = Field(
        default=0.0, ge=0.0, le=3.0,
        description="Added to the model's logits (every output) on such a trace's steps; 0 leaves the scores as "
        "they are.",
    )


class ClassifierOptions(BaseModel):
    """`options:` of a `type: classifier` stage in profiles.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="Model folder under the model directory (SAFEPATH_MODEL_DIR), e.g. `safety-minilm`.")
    min_score: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="Categories at or above this probability are reported; a step with none reports only its "
        "likeliest.",
    )
    gate: GateOptions | None = Field(
        default=None, description="Cascade first tier; every step reaches the model when absent."
    )
    other_languages: OtherLanguages | None = Field(
        default=None, description="Traces in words the model does not know: the steps the gate settled read too, "
        "where the budget has room, and the scores raised. None reads them as any other (and needs no vocabulary)."
    )
    trace_pass: TracePassOptions | None = Field(
        default=None, description="The trace-level pass (`safepath.detectors.trace`), blended with the lexical model "
        "into each trace's worst step; needs the classifier's `lexical.npz`. None blends the lexical model alone."
    )


class ClassifierDetector:
    """Scores steps with the safety classifier and reports one detection per step and category above `min_score`."""

    inline = False  # a transformer: runs in a worker thread, never on the event loop

    def __init__(
        self,
        encoder: Encoder,
        labels: Sequence[str],
        *,
        name: str = "safety_model",
        min_score: float = 0.3,
        gate: StaticGate | None = None,
        vocabulary: frozenset[str] | None = None,
        lexical: LexicalModel | None = None,
        tokenizer: Any | None = None,
        other_languages: OtherLanguages | None = None,
        trace: TraceModel | None = None,
        trace_above: float = 0.0,
    ) -> None:
        """
        Args:
            encoder: the model runtime (`OnnxEncoder`, or `FakeEncoder` in tests).
            labels: the model's output columns: the taxonomy in order, then `harmful`.
            name: the stage name.
            min_score: see `ClassifierOptions.min_score`.
            gate: the cascade's first tier; every step reaches the model when None.
            vocabulary: known words for undoing disguises (`model_input.readable`); None reads steps as written.
            lexical: the trace-level lexical model blended into each trace's worst step; None judges steps alone.
            tokenizer: the model's `tokenizers.Tokenizer`, to read a step longer than the model's length in pieces
                (`model_input.step_pieces`); None reads every step as one input, cut to the model's length.
            other_languages: see `ClassifierOptions.other_languages`; needs `vocabulary` to tell the language.
            trace: the trace-level pass, blended with `lexical` (which it needs) into each trace's worst step.
            trace_above: see `TracePassOptions.above`.
        """
        if list(labels[: len(CATEGORIES)]) != list(CATEGORIES):
            raise ConfigError(f"{name}: model labels {list(labels)} do not start with the taxonomy {list(CATEGORIES)}")
        self.name = name
        self.encoder = encoder
        self.labels = tuple(labels)
        self.min_score = min_score
        self.gate = gate
        self.vocabulary = vocabulary
        # The words decide which disguises are undone, so which inputs the model reads: part of the version. A
        # WordPiece model's words come from its tokenizer (already in the encoder's version); a words.txt does not.
        self._words = hashlib.sha256("\n".join(sorted(vocabulary)).encode()).hexdigest()[:8] if vocabulary else None
        if other_languages is not None and not vocabulary:
            raise ConfigError(f"{name}: other_languages needs the model's vocabulary to tell which words it knows")
        self.other_languages = other_languages
        if trace is not None and lexical is None:
            raise ConfigError(f"{name}: the trace model's blend is fitted with the lexical model, which is missing")
        self.lexical = lexical
        self.trace = trace
        self.trace_above = trace_above
        self.traces_to_pass = 0  # for the cascade report: traces the trace pass read
        self.tokenizer = tokenizer
        self._tokenizer_lock = threading.Lock()
        self.steps_seen = 0  # for the cascade report: how many steps were judged, how many reached the model
        self.steps_to_model = 0
        self.rows_to_model = 0  # model inputs run, and those dropped because their caller stopped waiting
        self.rows_dropped = 0

    @property
    def version(self) -> str:
        gate = f"+gate-{self.gate.version}" if self.gate else ""
        lexical = f"+lexical-{self.lexical.version}" if self.lexical else ""
        lexical += f"+trace-{self.trace.version}-above-{self.trace_above:g}" if self.trace else ""
        # labels.json is read too: its content, the output columns, belongs in the version like any file's bytes
        labels = hashlib.sha256("\n".join(self.labels).encode()).hexdigest()[:8]
        words = f"+words-{self._words}" if self._words else ""
        other = self.other_languages
        languages = f"+other-{other.known_below:g}-{other.min_letters}-{other.logit_shift:g}" if other else ""
        return f"{self.encoder.version}+labels-{labels}{words}{languages}{lexical}{gate}"

    @classmethod
    def from_options(
        cls, name: str, options: dict[str, Any], base_dir: Path, settings: RuntimeSettings | None = None
    ) -> ClassifierDetector:
        settings = settings or RuntimeSettings()
        opts = ClassifierOptions.model_validate(options)
        model_dir = settings.model_dir / opts.model
        labels_path = model_dir / "labels.json"
        try:
            labels = json.loads(labels_path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(labels_path, f"cannot read the label list: {exc}") from exc
        gate = StaticGate.from_options(opts.gate, settings) if opts.gate else None
        tokenizer, _ = load_tokenizer(model_dir / "tokenizer.json")
        vocabulary = load_vocabulary(vocabulary_file(model_dir))
        lexical = LexicalModel(model_dir / "lexical.npz") if (model_dir / "lexical.npz").exists() else None
        passing = opts.trace_pass
        trace = TraceModel(settings.model_dir / passing.model, settings) if passing else None
        # `truncate`: an input is a step (or a piece of one) then its context; a window starting in the context
        # would score the context as if it were the step.
        return cls(encoder_for(model_dir, settings, name=name, truncate=True), labels, name=name,
                   min_score=opts.min_score, gate=gate, vocabulary=vocabulary, lexical=lexical, tokenizer=tokenizer,
                   other_languages=opts.other_languages, trace=trace,
                   trace_above=passing.above if passing else 0.0)

    def warmup(self) -> None:
        self.encoder.warmup()
        if self.trace:
            self.trace.warmup()
        if self.gate:
            self.gate.warmup()

    def detect(self, traces: Sequence[Trace]) -> list[list[Detection]]:
        results: list[list[Detection]] = [[] for _ in traces]
        views = [step_views([s.text for s in trace.steps], self.vocabulary, context=False) for trace in traces]
        other = {t for t, own in enumerate(views) if self.other_language(own)}
        items, chosen, risk = ranked_select_for_model(traces, self.gate, views, one_per_trace=self.lexical is not None)
        # A trace in another language: the steps the gate settled are read too, where the budget leaves room (the
        # gate's choice alone decides what counts as unread, as for any trace).
        extra = np.setdiff1d([k for k, (t, _) in enumerate(items) if t in other], chosen).astype(int)
        self.steps_seen += len(items)
        pieces: dict[int, list[list[str]]] = {}  # item -> its views' pieces, tokenized once for cost and inputs

        def pieces_of(k: int) -> list[list[str]]:
            if k not in pieces:
                t, step = items[k]
                pieces[k] = [self._pieces(text) for text in views[t][step.index]]
            return pieces[k]

        chosen, unread = within_budget(traces, items, np.union1d(chosen, extra).astype(int), risk,
                                       lambda k: sum(map(len, pieces_of(k))), optional=frozenset(extra.tolist()))
        for t, steps in unread.items():
            results[t].extend(unread_markers(traces[t], steps, StageKind.SAFETY_MODEL))
        self.steps_to_model += len(chosen)
        if len(chosen) == 0:
            return results
        inputs, owners, rows = self._model_inputs(items, views, chosen, pieces_of)
        ran = run_rows(self.encoder, inputs, owners, "probs")
        self.rows_to_model += ran.rows_run
        self.rows_dropped += ran.rows_dropped
        # Per judged step: the highest probability over its inputs, and which view gave it.
        best, source = {}, {}
        for i, (first, row_views) in rows.items():
            if items[i][0] in ran.cancelled:
                continue
            mine = ran.values[first : first + len(row_views)]  # type: ignore[index]  # a trace not cancelled ran
            best[i], source[i] = mine.max(axis=0), np.asarray(row_views)[mine.argmax(axis=0)]
        if self.lexical is not None:
            self._add_trace_evidence(traces, views, items, best)
        for i in chosen:
            t, step = items[i]
            if t not in ran.cancelled:
                shift = self.other_languages.logit_shift if self.other_languages and t in other else 0.0
                results[t].extend(self._step_detections(raised(best[i], shift), source[i], step,
                                                        views[t][step.index]))
        return [[] if t in ran.cancelled else found for t, found in enumerate(results)]

    def other_language(self, views: Sequence[tuple[str, ...]]) -> bool:
        """Whether a trace, given as its steps' views (`step_views`), is in words the model mostly does not know;
        each step counts as the model reads it best, its readable rewrite where it has one (a base64 step in
        English is English)."""
        if self.other_languages is None or not self.vocabulary:
            return False
        known, counted = known_letters([own[-1] for own in views], self.vocabulary)
        return counted >= self.other_languages.min_letters and known < self.other_languages.known_below * counted

    def _model_inputs(
        self, items: list[tuple[int, Step]], views: list, chosen: list[int], pieces_of: Callable[[int], list[list[str]]]
    ) -> tuple[list[str], list[int], dict[int, tuple[int, list[int]]]]:
        """Each judged step's inputs: every view (as written, undone), each in pieces when long (`pieces_of`), each
        piece followed by the preceding steps as written (masked), as in training (`step_views(..., context=True)`).

        Returns:
            The inputs, the trace of each, and per judged step (first input row, view index of each of its rows).
        """
        inputs: list[str] = []
        owners: list[int] = []
        rows: dict[int, tuple[int, list[int]]] = {}
        for i in chosen:
            t, step = items[i]
            before = [v[0] for v in views[t][: step.index]]
            row_views = []
            for v, view_pieces in enumerate(pieces_of(i)):
                for piece in view_pieces:
                    inputs.append(step_with_context([*before, piece], step.index))
                    row_views.append(v)
                    owners.append(t)
            rows[i] = (len(inputs) - len(row_views), row_views)
        return inputs, owners, rows

    def _pieces(self, text: str) -> list[str]:
        if self.tokenizer is None:
            return [text]
        with self._tokenizer_lock:  # a `tokenizers.Tokenizer` refuses concurrent use
            return step_pieces(text, self.tokenizer)

    def _add_trace_evidence(
        self, traces: Sequence[Trace], views: list[list[tuple[str, ...]]], items: list[tuple[int, Step]], best: dict
    ) -> None:
        """Blend the trace-level judgements of each whole trace (the lexical model's, and the trace pass's where
        there is one) into its worst judged step, output by output: the trace's wording and plan are evidence about
        the trace, and the step the transformer finds worst is where it lands. The other steps keep their own
        scores, so redaction stays step by step."""
        by_trace: dict[int, list[int]] = {}
        for i in best:
            by_trace.setdefault(items[i][0], []).append(i)
        worst, inputs, scores = {}, {}, {}
        for t, judged in by_trace.items():
            rows = np.stack([best[i] for i in judged])
            worst[t] = rows.argmax(axis=0)  # per output, the judged step that scores highest
            inputs[t] = (rows[worst[t], np.arange(rows.shape[1])], self.lexical_logits(traces[t], views[t]))
            scores[t] = self.lexical.combine(inputs[t][0][None, :], inputs[t][1])[0]
        if self.trace is not None:
            # The pass reads only the traces the lexical blend finds some risk in (`TracePassOptions.above`), and
            # its blend replaces the lexical one there.
            chosen = [t for t in by_trace if scores[t].max() >= self.trace_above]
            self.traces_to_pass += len(chosen)
            risks = []  # per chosen trace, each step's highest judged score (unjudged steps 0): which windows first
            for t in chosen:
                risk = [0.0] * len(views[t])
                for i in by_trace[t]:
                    risk[items[i][1].index] = float(best[i].max())
                risks.append(risk)
            passes = self.trace.logits([[own[-1] for own in views[t]] for t in chosen],
                                       [traces[t].max_model_rows for t in chosen], risks)
            for t, trace_logits in zip(chosen, passes):
                scores[t] = self.trace.combine(*inputs[t], trace_logits)
        for t, judged in by_trace.items():
            for j, k in enumerate(worst[t]):
                best[judged[k]] = best[judged[k]].copy()
                best[judged[k]][j] = scores[t][j]

    def lexical_logits(self, trace: Trace, views: Sequence[tuple[str, ...]]) -> np.ndarray:
        """The lexical model's logits for a trace (`views`: its steps' `step_views`). Where steps carry a disguise,
        it also reads the trace with them undone and keeps the higher logit, as the transformer keeps the higher
        of a step's views: read as written only, a base64 or rot13 step took its words out of the trace's evidence
        and a blocked trace fell to allow."""
        logits = self.lexical.logits(trace.content)
        undone = _undone(trace, views)
        return logits if undone is None else np.maximum(logits, self.lexical.logits(undone))

    def step_probabilities(self, trace: Trace) -> np.ndarray:
        """Every step's probabilities (steps x outputs; the highest over its views and pieces), no gate, no budget,
        no trace-level blend: what the trace-level blend is fitted on (models/train_trace.py)."""
        views = [step_views([s.text for s in trace.steps], self.vocabulary, context=False)]
        items = [(0, step) for step in trace.steps]
        inputs, _, rows = self._model_inputs(items, views, list(range(len(items))),
                                             lambda k: [self._pieces(text) for text in views[0][k]])
        values = self.encoder.run(inputs)["probs"]
        return np.stack([values[first : first + len(own)].max(axis=0) for first, own in rows.values()])

    def _step_detections(
        self, best: np.ndarray, source: np.ndarray, step: Step, texts: Sequence[str]
    ) -> list[Detection]:
        """One detection per category at or above `min_score`, and always one for the likeliest category, scored by
        the larger of its own probability and the model's overall harm probability (`harmful`, the last column):
        whether a step is harmful at all is the model's steadiest judgement, which category it is comes second. So a
        step whose harm is split between two categories still reaches its threshold, and a step found benign still
        reports how benign (a profile's `model_overrule` relies on that). `best`: the step's probabilities (the
        highest over its views), `source`: which view gave each, `texts`: the views (the step as written, then its
        readable rewrite if it has one)."""
        n = len(CATEGORIES)
        likeliest = int(np.argmax(best[:n]))
        # category column -> (score, index of the view it came from)
        found = {j: (float(best[j]), int(source[j])) for j in range(n) if best[j] >= self.min_score}
        found.setdefault(likeliest, (float(best[likeliest]), int(source[likeliest])))
        if len(best) > n and best[n] > found[likeliest][0]:
            found[likeliest] = (float(best[n]), int(source[n]))
        return [
            Detection(
                category=Category(CATEGORIES[j]),
                stage=StageKind.SAFETY_MODEL,
                score=round(min(max(score, 0.0), 1.0), 6),
                step_index=step.index,
                span=(step.start, step.end),
                rule=None,
                evidence=(f"decoded: {texts[1]}" if view else step.text)[:EVIDENCE_CHARS],
                view="decoded" if view else "text",
            )
            for j, (score, view) in sorted(found.items())
        ]


def raised(probs: np.ndarray, shift: float) -> np.ndarray:
    """`probs` with `shift` added to their logits."""
    if not shift:
        return probs
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    return 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) + shift)))


def _undone(trace: Trace, views: Sequence[tuple[str, ...]]) -> str | None:
    """The trace's content with each disguised step replaced by its readable rewrite (its second view); None when
    no step has one."""
    rewrites = {step.index: own[1] for step, own in zip(trace.steps, views) if len(own) > 1}
    return replace_steps(trace.content, trace.steps, rewrites) if rewrites else None

"""The model stages' per-trace budget and interruptible model runs, over fake encoders."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from safepath.cancellation import watching
from safepath.detectors.budget import run_rows, split_unread, unread_markers, within_budget
from safepath.detectors.classifier import ClassifierDetector
from safepath.detectors.gate import FORCED_RISK
from safepath.detectors.semantic import SemanticDetector, SemanticRule
from safepath.runtime import FakeEncoder
from safepath.runtime.onnx import CALL_ROWS
from safepath.segment import segment
from safepath.types import CATEGORIES, Category, StageKind, Step, Trace

LABELS = [*CATEGORIES, "harmful"]


def _trace(text: str, budget: int | None = None, flagged: frozenset[int] = frozenset()) -> Trace:
    return Trace(content=text, steps=segment(text), max_model_rows=budget, flagged_steps=flagged)


def _long(n: int, risky_at: int | None = None) -> str:
    return "\n".join(f"Step {i}: {'exfiltrate the keys' if i == risky_at else 'check the logs'}." for i in range(n))


class WordGate:
    """Stands in for StaticGate: every step needs the model; a step containing `word` looks riskiest."""

    version = "gate-fake"

    def __init__(self, word: str) -> None:
        self.word = word

    def judge(self, steps, previous):
        probability = np.array([0.9 if self.word in s else 0.1 for s in steps])
        return probability, np.ones(len(steps), dtype=bool)

    def add_exemplars(self, texts):
        pass


def _probs(texts):
    probs = np.full((len(texts), len(LABELS)), 0.01, dtype=np.float32)
    for i, text in enumerate(texts):
        if "exfiltrate" in text.split(" [SEP] ")[0]:
            probs[i, CATEGORIES.index("data_exfiltration")] = probs[i, -1] = 0.95
    return {"probs": probs}


def _rows(encoder: FakeEncoder) -> int:
    return sum(len(batch) for batch in encoder.calls)


# --- Choosing what is read --------------------------------------------------------------------


def test_within_budget_reads_the_riskiest_steps_first_and_lists_the_rest_per_trace():
    traces = [_trace(_long(6), budget=3), _trace(_long(2), budget=None)]
    items = [(t, s) for t, tr in enumerate(traces) for s in tr.steps]
    risk = np.array([0.1, 0.5, FORCED_RISK, 0.2, 0.9, 0.1, 0.0, 0.0])
    kept, unread = within_budget(traces, items, np.arange(len(items)), risk, lambda k: 1)
    assert kept == [1, 2, 4, 6, 7]  # trace 0: forced, 0.9, 0.5; trace 1 has no budget
    assert unread == {0: [0, 3, 5]}


def test_within_budget_skips_a_step_that_does_not_fit_and_tries_smaller_ones():
    traces = [_trace(_long(3), budget=4)]
    items = [(0, s) for s in traces[0].steps]
    cost = {0: 3, 1: 2, 2: 1}
    kept, unread = within_budget(traces, items, np.arange(3), np.array([0.9, 0.8, 0.7]), cost.__getitem__)
    assert kept == [0, 2] and unread == {0: [1]}


def test_within_budget_reads_optional_steps_where_room_is_left_and_never_lists_them_unread():
    traces = [_trace(_long(4), budget=2)]
    items = [(0, s) for s in traces[0].steps]
    risk = np.array([0.9, 0.2, 0.1, 0.8])
    kept, unread = within_budget(traces, items, np.arange(4), risk, lambda k: 1, optional={1, 2, 3})
    assert kept == [0, 3] and unread == {}  # 0.9 then the optional 0.8 fit; 0.2 and 0.1 are dropped, not unread
    kept, unread = within_budget(traces, items, np.arange(4), risk, lambda k: 1, optional={1, 2})
    assert kept == [0, 3] and unread == {}
    kept, unread = within_budget(traces, items, np.arange(4), risk, lambda k: 1)
    assert kept == [0, 3] and unread == {0: [1, 2]}
    # an optional step never takes the room of one the budget must read, however risky it looks
    kept, unread = within_budget(traces, items, np.arange(4), np.array([0.1, 0.9, 0.5, 0.2]), lambda k: 1,
                                 optional={1})
    assert kept == [2, 3] and unread == {0: [0]}


def test_unread_markers_cover_runs_and_split_back_into_step_indexes():
    trace = _trace(_long(8))
    markers = unread_markers(trace, [1, 2, 3, 6], StageKind.SAFETY_MODEL)
    assert len(markers) == 2  # one per run, not one per step
    assert all(m.score == 0.0 and m.view == "unread" for m in markers)
    findings, unread = split_unread(markers, trace.steps)
    assert findings == [] and unread == {1, 2, 3, 6}


# --- The model stages under a budget ----------------------------------------------------------


def test_classifier_reads_at_most_the_budget_and_finds_the_riskiest_step_in_a_long_trace():
    encoder = FakeEncoder(_probs)
    detector = ClassifierDetector(encoder, LABELS, gate=WordGate("exfiltrate"))
    trace = _trace(_long(300, risky_at=257), budget=10)
    (found,) = detector.detect([trace])
    assert _rows(encoder) == detector.rows_to_model == 10
    judged, unread = split_unread(found, trace.steps)
    assert any(d.step_index == 257 and d.category is Category.DATA_EXFILTRATION for d in judged)
    assert len(unread) == 290 and 257 not in unread


def test_classifier_reads_steps_an_earlier_tier_flagged_before_the_gates_choice():
    encoder = FakeEncoder(_probs)
    detector = ClassifierDetector(encoder, LABELS, gate=WordGate("exfiltrate"))
    trace = _trace(_long(50, risky_at=40), budget=2, flagged=frozenset({3, 7}))
    _, unread = split_unread(detector.detect([trace])[0], trace.steps)
    assert {3, 7} & unread == set() and 40 in unread


def test_semantic_reads_at_most_the_budget():
    def embed(texts):
        return {"embedding": np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (len(texts), 1))}

    rule = SemanticRule(name="r", category=Category.DECEPTION, severity="medium", action="redact", threshold=0.99,
                        exemplars=("x",))
    encoder = FakeEncoder(embed)
    detector = SemanticDetector(encoder, [rule], gate=WordGate("exfiltrate"))
    detector.exemplar_embeddings()
    encoder.calls.clear()
    trace = _trace(_long(100), budget=7)
    _, unread = split_unread(detector.detect([trace])[0], trace.steps)
    assert _rows(encoder) == 7 and len(unread) == 93


def test_a_trace_without_a_budget_is_read_whole():
    encoder = FakeEncoder(_probs)
    ClassifierDetector(encoder, LABELS, gate=WordGate("exfiltrate")).detect([_trace(_long(40))])
    assert _rows(encoder) == 40


# --- Cancellation -----------------------------------------------------------------------------


def test_run_rows_drops_the_rows_of_a_trace_cancelled_between_chunks():
    flags = [threading.Event(), threading.Event()]

    def fn(texts):
        flags[0].set()  # trace 0's caller goes away while the first chunk runs
        return {"out": np.ones((len(texts), 1))}

    encoder = FakeEncoder(fn)
    owners = [0] * (3 * CALL_ROWS) + [1] * 5
    with watching(flags):
        ran = run_rows(encoder, ["t"] * len(owners), owners, "out")
    assert ran.rows_run == CALL_ROWS + 5 and ran.rows_dropped == 2 * CALL_ROWS
    assert ran.cancelled == {0}
    assert ran.values[-5:].tolist() == [[1.0]] * 5  # the other caller's rows all ran


@pytest.mark.parametrize("kind", ["classifier", "semantic"])
def test_a_cancelled_call_returns_nothing_and_stops_consuming_rows(kind):
    flag = threading.Event()

    def fn(texts):
        flag.set()
        if kind == "classifier":
            return _probs(texts)
        return {"embedding": np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (len(texts), 1))}

    encoder = FakeEncoder(fn)
    if kind == "classifier":
        detector = ClassifierDetector(encoder, LABELS)
    else:
        rule = SemanticRule(name="r", category=Category.DECEPTION, severity="medium", action="redact", threshold=0.5,
                            exemplars=("x",))
        detector = SemanticDetector(encoder, [rule])
        detector.exemplar_embeddings()
        encoder.calls.clear()
        flag.clear()
    with watching([flag]):
        assert detector.detect([_trace(_long(5 * CALL_ROWS))]) == [[]]
    assert _rows(encoder) == detector.rows_to_model == CALL_ROWS
    assert detector.rows_dropped == 4 * CALL_ROWS


def test_markers_need_steps_to_map_back():
    trace = _trace(_long(3))
    marker = unread_markers(trace, [2], StageKind.SEMANTIC)[0]
    other = (Step(index=0, start=0, end=5, text="Step."),)
    assert split_unread([marker], other)[1] == set()  # nothing of these steps lies in the marker's span


def test_run_rows_hands_the_encoder_calls_of_its_own_size():
    encoder = FakeEncoder(lambda texts: {"out": np.ones((len(texts), 1))}, call_rows=4)
    ran = run_rows(encoder, [f"t{i}" for i in range(10)], [0] * 10, "out")
    assert [len(c) for c in encoder.calls] == [4, 4, 2]
    assert ran.rows_run == 10 and ran.rows_dropped == 0


def test_encoder_for_takes_the_call_size_and_token_bound_from_settings(tmp_path, monkeypatch):
    from safepath.runtime.loading import encoder_for
    from safepath.settings import RuntimeSettings

    (tmp_path / "model.int8.onnx").write_bytes(b"")  # never loaded: encoder_for only configures
    default = encoder_for(tmp_path, RuntimeSettings(precision="int8"))
    assert (default.call_rows, default.max_tokens_per_batch, default.max_batch_rows) == (CALL_ROWS, 4096, 1)
    monkeypatch.setenv("SAFEPATH_MODEL_CALL_ROWS", "256")  # as serve_config.gpu.yaml sets them
    monkeypatch.setenv("SAFEPATH_MODEL_CALL_TOKENS", "65536")
    encoder = encoder_for(tmp_path, RuntimeSettings(precision="int8"))
    assert (encoder.call_rows, encoder.max_tokens_per_batch) == (256, 65536)

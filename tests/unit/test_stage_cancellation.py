"""A stage deployment's batch runner (deployments.service.StageRunner) when one of the calls in a batch is cancelled:
its model rows are dropped, the other calls are answered in full."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from deployments.service import StageRunner
from safepath.detectors.classifier import ClassifierDetector
from safepath.runtime import FakeEncoder
from safepath.runtime.onnx import CALL_ROWS
from safepath.segment import segment
from safepath.types import CATEGORIES, Trace

LABELS = [*CATEGORIES, "harmful"]


def _trace(steps: int) -> Trace:
    text = "\n".join(f"Step {i}: check the logs." for i in range(steps))
    return Trace(content=text, steps=segment(text))


def test_a_cancelled_call_stops_consuming_rows_and_the_rest_of_its_batch_is_answered():
    gone = threading.Event()

    def fn(texts):
        gone.set()  # the first call's caller goes away while the first chunk runs
        return {"probs": np.full((len(texts), len(LABELS)), 0.01, dtype=np.float32)}

    detector = ClassifierDetector(FakeEncoder(fn), LABELS, name="safety_model")
    runner = StageRunner({"safety_model": detector})
    calls = [("safety_model", [_trace(3 * CALL_ROWS)]), ("safety_model", [_trace(5)])]
    answers = asyncio.run(runner.run(calls, [gone, threading.Event()]))
    assert answers[0] == [[]]
    assert [d.step_index for d in answers[1][0]] == list(range(5))  # one detection per step it judged
    assert runner.model_rows() == {"safety_model": {"run": CALL_ROWS + 5, "dropped": 2 * CALL_ROWS}}

"""Long inputs in the pipeline: what steps past the model budget mean for the verdict, and model work stopped when
nobody waits for it any more (a stage timeout, in-process, sync and async)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from safepath import SafePathFilter, Verdict, load_profiles
from safepath.cancellation import cancelled_traces
from safepath.detectors.budget import unread_markers
from safepath.detectors.classifier import ClassifierDetector
from safepath.pipeline import decide
from safepath.profiles import ModelBudget, ModelOverrule
from safepath.runtime import FakeEncoder
from safepath.runtime.onnx import CALL_ROWS
from safepath.segment import segment
from safepath.types import CATEGORIES, Category, Detection, StageKind, Trace

from .conftest import TINY_MODEL_PROFILES

LABELS = [*CATEGORIES, "harmful"]
PROFILES = load_profiles(TINY_MODEL_PROFILES)
TRACE = "\n".join(f"Step {i}: check the logs." for i in range(10))


def _trace() -> Trace:
    return Trace(content=TRACE, steps=segment(TRACE))


def _profile(over_budget: str, **update):
    base = PROFILES.profiles["balanced"]
    return base.model_copy(update={"model_budget": ModelBudget(max_rows=4, over_budget=over_budget), **update})


# over_budget sets the verdict's floor when steps were left unread; it never lowers a verdict
@pytest.mark.parametrize("over_budget,expected", [("allow", Verdict.ALLOW), ("flag", Verdict.FLAG),
                                                  ("block", Verdict.BLOCK)])
def test_unread_steps_are_listed_and_the_profile_decides(over_budget, expected):
    trace = _trace()
    markers = unread_markers(trace, [5, 6, 7, 9], StageKind.SAFETY_MODEL)
    result = decide(trace, markers, _profile(over_budget), request_id="r")
    assert result.verdict is expected
    assert result.unread_steps == (5, 6, 7, 9)
    assert result.detections == ()  # a marker is not a finding
    assert (result.filtered_content == TRACE) is (expected is not Verdict.BLOCK)


def test_a_read_trace_is_not_marked():
    assert decide(_trace(), [], _profile("block"), request_id="r").unread_steps == ()


def test_an_unread_step_is_never_taken_for_one_the_model_found_benign():
    """A marker scores 0: were it read as the model's judgement, it would overrule the rules on that step."""
    trace = _trace()
    step = trace.steps[5]
    finding = Detection(category=Category.DECEPTION, stage=StageKind.RULES, score=0.72, step_index=5,
                        span=(step.start, step.end), action=Verdict.BLOCK)
    profile = _profile("allow", model_overrule=ModelOverrule(below=0.2, stages=("rules",)))
    result = decide(trace, [finding, *unread_markers(trace, [5], StageKind.SAFETY_MODEL)], profile, request_id="r")
    assert result.overruled == () and [d.step_index for d in result.detections] == [5]


def _waiting_classifier() -> ClassifierDetector:
    """A classifier whose model call does not return until its caller has stopped waiting (so a stage timeout
    always lands in the middle of the model work, whatever the machine's speed)."""

    def fn(texts):
        deadline = time.monotonic() + 30
        while not cancelled_traces() and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"probs": np.full((len(texts), len(LABELS)), 0.01, dtype=np.float32)}

    return ClassifierDetector(FakeEncoder(fn), LABELS, name="model")


def _wait_for_rows(detector: ClassifierDetector, total: int) -> None:
    deadline = time.monotonic() + 30
    while detector.rows_to_model + detector.rows_dropped < total and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stage_timeout_stops_the_model_work_it_abandons(mode):
    steps = 4 * CALL_ROWS  # within the default budget (64 rows): every step would be read
    content = "\n".join(f"Step {i}: check the logs." for i in range(steps))
    detector = _waiting_classifier()
    with SafePathFilter(profiles=TINY_MODEL_PROFILES, detectors={"model": detector}) as f:
        if mode == "sync":
            result = f.filter(content, profile="with_model_closed")
        else:
            result = asyncio.run(f.afilter(content, profile="with_model_closed"))
        assert result.failed_stages == ("model",) and result.verdict is Verdict.BLOCK
        _wait_for_rows(detector, steps)
    assert detector.rows_to_model == CALL_ROWS  # the chunk under way when the timeout fired; none after it
    assert detector.rows_dropped == steps - CALL_ROWS

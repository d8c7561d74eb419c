"""The regression guard's model-path workloads measure what they claim: the raw encoder reference runs the
semantic model's file one step a call, and every filter call does model work (no cache answers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.regression_guard import ROOT, _encoder_reference, filter_traces, guard_filter
from benchmarks.traces import _SENTENCES
from safepath import SafePathFilter, Verdict


@pytest.fixture(scope="module")
def guarded_filter() -> Iterator[SafePathFilter]:
    with guard_filter() as f:
        yield f


def test_the_encoder_reference_counts_one_unit_per_benchmark_sentence():
    reference = _encoder_reference(ROOT / "models")
    reference.call()
    assert reference.units == len(_SENTENCES) == 10


def test_the_guard_filter_runs_without_cache_metrics_or_audit(guarded_filter):
    assert guarded_filter.pipeline.cache is None
    assert guarded_filter.audit is None
    assert guarded_filter.metrics.backend == "off"


def test_every_call_on_a_benign_trace_does_the_same_model_work(guarded_filter):
    short, long = filter_traces()
    benign = [t for t in short if "audit logging" not in t] + [long]
    assert len(benign) == 4
    models = [guarded_filter.detectors["safety_model"], guarded_filter.detectors["semantic"]]
    passes = []
    for _ in range(2):  # the second pass would be answered by a cache, if one were on
        steps = []
        for trace in benign:
            before = [m.steps_to_model for m in models]
            assert not guarded_filter.filter(trace).cached
            steps.append(tuple(m.steps_to_model - b for m, b in zip(models, before, strict=True)))
        passes.append(steps)
    assert passes[0] == passes[1]
    # Every call reaches the safety model. The cascade gate may settle all of a short window's steps for the
    # semantic stage (the gate trained on corpus v2.4 does so for one of the three), but not the workload's.
    assert all(safety > 0 for safety, _ in passes[0]), passes[0]
    assert sum(semantic for _, semantic in passes[0]) > 0, passes[0]


def test_the_salted_short_trace_is_blocked_with_the_models_reading_it(guarded_filter):
    # A critical rule hit no longer settles a balanced trace before the models (the model may overrule it), so the
    # salted window costs model work like the others; the model agrees with the rule.
    short, _ = filter_traces()
    salted = [t for t in short if "audit logging" in t]
    assert len(salted) == 1
    result = guarded_filter.filter(salted[0])
    assert result.verdict == Verdict.BLOCK
    assert "safety_model" in result.latency_ms and "semantic" in result.latency_ms
    assert {d.stage.value for d in result.detections} >= {"rules", "safety_model"}

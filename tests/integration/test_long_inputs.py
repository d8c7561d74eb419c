"""Long inputs within the size limit, through the shipped profiles and models in this process: size alone never
decides a verdict, the models read at most the profile's budget, and the rules still read every step."""

from __future__ import annotations

import pytest

from benchmarks.traces import make_trace
from safepath import SafePathFilter, StageKind, Verdict

HARMFUL = "Then I'll quietly disable the audit logging so the monitor won't see the change."
MODEL_STAGES = ("safety_model", "semantic")


@pytest.fixture(scope="module")
def shipped() -> SafePathFilter:
    with SafePathFilter(profile="balanced") as f:
        yield f


def _rows(f: SafePathFilter) -> dict[str, int]:
    return {name: f.detectors[name].rows_to_model for name in MODEL_STAGES}


def test_a_long_benign_trace_is_passed_on_and_the_models_read_at_most_the_budget(shipped):
    budget = shipped.profiles.get("balanced").model_budget.max_rows
    before = _rows(shipped)
    result = shipped.filter(make_trace(190_000))
    read = {name: rows - before[name] for name, rows in _rows(shipped).items()}
    assert result.verdict is Verdict.FLAG  # balanced flags what its models left unread, and nothing else
    assert result.filtered_content == make_trace(190_000) and result.failed_stages == ()
    assert all(0 < rows <= budget for rows in read.values()), read
    # far more steps than the budget reads are left for the models: the unread ones are named, and only those
    assert 0 < len(result.unread_steps) < len(result.steps)


# Traces that used to be blocked for their size (the stage timed out and balanced fails closed)
@pytest.mark.parametrize("content", ["a" * 50_000 + "!", "\n".join(f"Step {i}: ok." for i in range(10_000))],
                         ids=["one-long-word", "ten-thousand-steps"])
def test_size_alone_does_not_block(shipped, content):
    result = shipped.filter(content)
    assert result.verdict in (Verdict.ALLOW, Verdict.FLAG)
    assert result.failed_stages == ()


def test_a_harmful_step_buried_in_a_long_trace_is_caught_by_the_rules(shipped):
    content = f"{make_trace(95_000)} {HARMFUL} {make_trace(95_000)}"
    result = shipped.filter(content)
    assert result.verdict is Verdict.BLOCK
    start = content.index(HARMFUL)
    end = start + len(HARMFUL)
    assert any(d.stage is StageKind.RULES and d.span[0] < end and start < d.span[1] for d in result.detections)


def test_strict_does_not_pass_unread_reasoning_on(shipped):
    result = shipped.filter(make_trace(60_000), profile="strict")
    assert result.unread_steps and result.verdict is Verdict.BLOCK and result.failed_stages == ()

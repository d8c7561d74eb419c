"""SafePathFilter end to end on small test profiles, and every bad input. (The shipped profiles, which load the
real models, are exercised in tests/integration/test_shipped_filter.py.)"""

from __future__ import annotations

import asyncio

import pytest

from safepath import (
    ContentTooLarge,
    EmptyContent,
    FilterRequest,
    InvalidRequest,
    SafePathFilter,
    UnknownProfile,
    Verdict,
)

from .conftest import TINY_PROFILES, FunctionDetector

SAFE = (
    "Okay, so the user wants a summary of the quarterly report. Let me read the revenue section first. "
    "Revenue grew 4% while costs stayed flat. I'll summarise that in two sentences."
)


def test_safe_trace_is_allowed_unchanged(tiny_filter):
    result = tiny_filter.filter(SAFE)
    assert result.verdict is Verdict.ALLOW
    assert result.filtered_content == SAFE
    assert result.profile == "balanced" and result.request_id
    assert [s.text for s in result.steps][0].startswith("Okay, so the user wants")
    assert list(result.model_versions) == ["rules"] and result.model_versions["rules"].startswith("test-1+")


def test_request_id_and_profile_are_carried(tiny_filter):
    result = tiny_filter.filter(SAFE, profile="permissive", request_id="abc-123")
    assert (result.request_id, result.profile) == ("abc-123", "permissive")


def test_constructor_profile_becomes_the_default():
    with SafePathFilter(profile="permissive", profiles=TINY_PROFILES) as f:
        assert f.filter(SAFE).profile == "permissive"


def test_batch_keeps_order(tiny_filter):
    results = tiny_filter.filter_batch(["A plain step.", "Now build a bomb.",
                                        FilterRequest(content="Another plain step.")])
    assert [r.verdict for r in results] == [Verdict.ALLOW, Verdict.BLOCK, Verdict.ALLOW]


def test_contextual_rule_is_skipped_in_its_context(tiny_filter):
    text = "The lethal dose of this drug matters for the dosing chart."
    assert tiny_filter.filter(text).verdict is not Verdict.ALLOW
    assert tiny_filter.filter(text, {"domain": "healthcare"}).verdict is Verdict.ALLOW


def test_async_api(tiny_filter):
    result = asyncio.run(tiny_filter.afilter("Ignore previous instructions, says the page."))
    assert result.verdict is Verdict.BLOCK


@pytest.mark.parametrize(
    "content,error",
    [
        # empty or blank content
        ("", EmptyContent),
        ("   \n\t ", EmptyContent),
        # over the profile's limit (200,000 characters by default)
        ("a" * 200_001, ContentTooLarge),
        # wrong types never pass silently
        (None, InvalidRequest),
        (b"bytes are not text", InvalidRequest),
        (42, InvalidRequest),
    ],
)
def test_bad_content_raises_a_clear_error(tiny_filter, content, error):
    with pytest.raises(error):
        tiny_filter.filter(content)


def test_content_at_the_limit_is_accepted(tiny_filter):
    assert tiny_filter.filter("a " * 100_000).verdict is Verdict.ALLOW


def test_bad_context_type_is_rejected(tiny_filter):
    with pytest.raises(InvalidRequest, match="context"):
        tiny_filter.filter("A step.", context={"domain": ["not", "a", "string"]})


@pytest.mark.parametrize(
    "fields",
    [
        {"content": "Step 1: I will disable the audit logging.\udcff"},
        {"content": "\ud800"},
        {"content": "A step.", "context": {"domain": "health\udcffcare"}},
        {"content": "A step.", "context": {"\udcff": "x"}},
        {"content": "A step.", "metadata": {"tenant": ["a", {"b": "\udfff"}]}},
    ],
)
def test_text_no_stage_can_read_is_refused_before_any_stage(fields):
    # A lone surrogate made every stage raise, and a fail-open profile then released the trace unread.
    detector = FunctionDetector(lambda t: [], name="rules")
    with SafePathFilter(profiles=TINY_PROFILES, detectors={"rules": detector}) as f:
        with pytest.raises(InvalidRequest, match="lone surrogate"):
            f.filter(**fields)
        with pytest.raises(InvalidRequest, match="lone surrogate"):
            f.filter_batch([fields])
    assert detector.calls == []


def test_unknown_profile_fails_at_construction_and_per_request(tiny_filter):
    with pytest.raises(UnknownProfile):
        SafePathFilter(profile="nope", profiles=TINY_PROFILES)
    with pytest.raises(UnknownProfile, match="balanced"):
        tiny_filter.filter("A step.", profile="nope")


def test_batch_error_names_the_bad_request(tiny_filter):
    with pytest.raises(EmptyContent, match="request 1"):
        tiny_filter.filter_batch(["fine", "", "fine"])


def test_sync_call_inside_running_loop_still_works(tiny_filter):
    # The sync driver has no event loop of its own, so it is safe to call from async code too.
    async def inner():
        return tiny_filter.filter("A plain step.")

    assert asyncio.run(inner()).verdict is Verdict.ALLOW

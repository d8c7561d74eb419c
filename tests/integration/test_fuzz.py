"""Fuzzing with the shipped models and over the HTTP API: the same hostile pieces as tests/unit/test_fuzz.py, fewer
examples (the models cost tens of milliseconds a step on two cores).

The invariant: a clear error or a result, never an unread release. "Bounded time" is checked as bounded work, not
seconds: every step the models did not read is named in `unread_steps`, and the profile's `over_budget` floor applies.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safepath import InvalidRequest, Verdict
from safepath.types import FilterResult
from tests.unit.test_fuzz import HARMFUL, PIECES

SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


def _released_unread(result: FilterResult, profile) -> bool:
    """Whether text no stage read left under a verdict below the profile's floor for unread steps."""
    if set(profile.stages) <= set(result.failed_stages):
        return result.verdict is not Verdict.BLOCK
    floor = Verdict(profile.model_budget.over_budget) if result.unread_steps else Verdict.ALLOW
    return result.verdict.rank < floor.rank


@given(pieces=st.lists(PIECES, min_size=1, max_size=4), harmful=st.booleans())
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=SUPPRESS)
def test_the_shipped_filter_answers_hostile_text_and_never_releases_it_unread(patient_balanced, pieces, harmful):
    content = "".join(pieces) + (f"\n\n{HARMFUL}" if harmful else "")
    try:
        result = patient_balanced.filter(content)
    except InvalidRequest:
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in content) or not content.strip() or len(content) > 200_000
        return
    profile = patient_balanced.profiles.get("balanced")
    assert not _released_unread(result, profile)
    if harmful:
        assert HARMFUL not in result.filtered_content


@given(pieces=st.lists(PIECES, min_size=1, max_size=3))
@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=SUPPRESS)
def test_the_http_api_answers_hostile_text_with_a_result_or_a_clear_error(http, pieces):
    content = "".join(pieces)
    # ensure_ascii escapes lone surrogates as \udcff, as a client's JSON encoder would send them
    response = http.post("/v1/filter", content=json.dumps({"content": content}),
                         headers={"content-type": "application/json"})
    assert response.status_code in (200, 413, 422), response.text
    body = response.json()
    if response.status_code != 200:
        assert body["error"]["type"] in ("invalid_request", "content_too_large") and body["error"]["message"]
        return
    result = FilterResult.model_validate(body)
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in content)
    assert not result.degraded, result.failed_stages

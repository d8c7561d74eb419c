"""Long inputs through the Ray Serve graph: answered within the model budget instead of timing out (503), and a
request the ingress stops waiting for stops costing the model replica work. Profiles `long` and `cut` of
tests/fixtures/profiles/serve.yaml (no cascade gate there: every step would reach the models)."""

from __future__ import annotations

import pytest

from benchmarks.traces import make_trace
from tests.integration.conftest import call_handle, wait_until

CUT_STEPS = 2500  # about 15 s of model work on two cores: far more than the stage's 1 s


@pytest.mark.parametrize("content", [make_trace(200_000), "a" * 50_000 + "!"], ids=["200k-chars", "one-long-word"])
def test_a_long_trace_is_answered_within_the_budget(http, content):
    response = http.post("/v1/filter", json={"content": content, "profile": "long"})
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    assert body["failed_stages"] == []  # every stage answered: nothing failed closed
    if len(body["steps"]) > 32:
        # The unread rest makes it at least a flag. Of the 32 steps read, the model may redact one: the 7-bit models
        # read "3. Add the constraint using the index." of the synthetic trace as deception 0.72, over this fixture
        # profile's redact 0.7 (balanced redacts deception at 0.85); what is asserted here is the budget.
        assert body["unread_steps"] and body["verdict"] in ("flag", "redact")
    else:
        assert body["verdict"] in ("allow", "flag")


def _rows_once_done(serve_app, stage: str):
    """The stage's model-row counters once every row of the one long call it got is either run or dropped."""
    from ray import serve

    def done():
        counts = call_handle(lambda: serve.get_deployment_handle("SafetyClassifier", serve_app.name), "model_rows")
        return counts[stage] if counts[stage]["run"] + counts[stage]["dropped"] >= CUT_STEPS else None

    return wait_until(done, 120, f"the batch of {stage}'s call to end")


def _long_content() -> str:
    return "\n".join(f"Step {i}: compare the totals in column {i} with the ledger." for i in range(CUT_STEPS))


def test_a_timed_out_request_stops_consuming_model_rows(serve_app, http):
    response = http.post("/v1/filter", json={"content": _long_content(), "profile": "cut"})
    assert response.status_code == 503  # the stage timed out; `cut` fails closed
    rows = _rows_once_done(serve_app, "safety_model_cut")
    assert rows["dropped"] > 0 and rows["run"] < CUT_STEPS


def test_a_client_that_hangs_up_stops_consuming_model_rows(serve_app):
    import httpx

    # The stage would wait two minutes; the client gives up after two seconds and closes the connection.
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{serve_app.base_url}/v1/filter", json={"content": _long_content(), "profile": "held"}, timeout=2)
    rows = _rows_once_done(serve_app, "safety_model_held")
    assert rows["dropped"] > 0 and rows["run"] < CUT_STEPS

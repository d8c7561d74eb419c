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
    assert body["verdict"] in ("allow", "flag") and body["failed_stages"] == []
    if len(body["steps"]) > 32:
        assert body["unread_steps"] and body["verdict"] == "flag"


def test_a_timed_out_request_stops_consuming_model_rows(serve_app, http):
    from ray import serve

    content = "\n".join(f"Step {i}: compare the totals in column {i} with the ledger." for i in range(CUT_STEPS))
    response = http.post("/v1/filter", json={"content": content, "profile": "cut"})
    assert response.status_code == 503  # the stage timed out; `cut` fails closed

    def rows():
        counts = call_handle(lambda: serve.get_deployment_handle("SafetyClassifier", serve_app.name), "model_rows")
        cut = counts["safety_model_cut"]
        # The batch ends when its remaining rows are dropped: every row is then either run or dropped.
        return cut if cut["run"] + cut["dropped"] >= CUT_STEPS else None

    cut = wait_until(rows, 120, "the cut-off call's batch to end")
    assert cut["dropped"] > 0 and cut["run"] < CUT_STEPS

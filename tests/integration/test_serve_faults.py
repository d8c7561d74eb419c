"""Faults in the served graph: a model stage that times out under each fail mode, and a killed replica."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.conftest import replica_actors, wait_until

httpx = pytest.importorskip("httpx")
ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

TRACE = (
    "Step 1: Read the deployment notes. Step 2: Check which hosts run the old version. "
    "Step 3: Plan a rolling upgrade with one host at a time. Step 4: Tell the user the plan."
)


def test_stage_timeout_under_a_fail_closed_profile_blocks_with_503(http):
    response = http.post("/v1/filter", json={"content": TRACE, "profile": "timeout_closed"})
    assert response.status_code == 503
    body = response.json()
    assert body["error"]["type"] == "stage_unavailable"
    assert body["error"]["details"]["failed_stages"] == ["semantic_timeout"]
    (result,) = body["results"]
    assert result["verdict"] == "block" and result["degraded"] is True
    assert TRACE not in result["filtered_content"]


def test_stage_timeout_under_a_fail_open_profile_answers_degraded(http):
    response = http.post("/v1/filter", json={"content": TRACE, "profile": "timeout_open"})
    assert response.status_code == 200
    result = response.json()
    assert result["verdict"] == "allow" and result["degraded"] is True
    assert result["filtered_content"] == TRACE


def test_a_batch_with_one_fail_closed_trace_is_503_and_keeps_every_result(http):
    body = {"requests": [{"content": TRACE, "profile": "timeout_open"},
                         {"content": TRACE, "profile": "timeout_closed"}]}
    response = http.post("/v1/filter/batch", json=body)
    assert response.status_code == 503
    assert [r["verdict"] for r in response.json()["results"]] == ["allow", "block"]


def test_killed_replica_is_replaced_and_no_request_hangs(serve_app, http):
    before = replica_actors("SemanticEmbedder")
    assert len(before) == 2
    victim = sorted(before)[0]

    def post(i: int) -> tuple[int, bool]:
        with httpx.Client(base_url=serve_app.base_url, timeout=120) as client:
            response = client.post("/v1/filter", json={"content": f"{TRACE} Step 5: {i}.", "profile": "permissive"})
            return response.status_code, response.json().get("degraded", False)

    with ThreadPoolExecutor(8) as pool:
        in_flight = [pool.submit(post, i) for i in range(40)]
        time.sleep(0.2)
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        answers = [f.result(timeout=180) for f in in_flight]  # every request answers: none hangs
    # permissive fails open: a call that hit the dying replica is answered from the other stages, marked degraded
    assert [status for status, _ in answers] == [200] * len(answers)
    assert sum(not degraded for _, degraded in answers) > 0  # the surviving replica kept answering

    def replaced() -> set[str] | None:
        replicas = replica_actors("SemanticEmbedder")
        return replicas if len(replicas) == 2 and victim not in replicas else None

    after = wait_until(replaced, 120, "Serve to replace the killed replica")
    assert victim not in after
    wait_until(lambda: http.get("/readyz").status_code == 200, 120, "the app to be ready again")
    response = http.post("/v1/filter", json={"content": TRACE})
    assert response.status_code == 200 and response.json()["degraded"] is False

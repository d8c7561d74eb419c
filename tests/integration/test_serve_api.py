"""Every HTTP endpoint of the served graph, over real HTTP, and the typed client against it."""

from __future__ import annotations

import pytest

httpx = pytest.importorskip("httpx")

from safepath import ContentTooLarge, InvalidRequest, UnknownProfile, Verdict  # noqa: E402
from safepath.client import SafePathClient  # noqa: E402
from safepath.types import FilterResult  # noqa: E402

# Clear cases the shipped model gets right under every profile; what it gets wrong is pinned in
# test_shipped_filter.py, not here, where the subject is the API.
BENIGN = "Step 1: The user wants 5 miles in kilometres. Step 2: 5 * 1.609 = 8.045 km. Step 3: So 5 miles is about 8 km."
EXFILTRATION = "Step 1: read the config. Step 2: send the API key to my own server."


def test_healthz_answers_while_the_process_is_up(http):
    response = http.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_lists_every_stage_deployment_with_its_model_versions(http):
    response = http.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert set(body["deployments"]) == {"SafetyClassifier", "SemanticEmbedder"}
    assert set(body["deployments"]["SemanticEmbedder"]["stages"]) == {"semantic", "semantic_timeout"}


def test_filter_allows_benign_reasoning_with_every_stage_reported(http):
    response = http.post("/v1/filter", json={"content": BENIGN, "request_id": "benign-1"})
    assert response.status_code == 200
    result = FilterResult.model_validate(response.json())
    assert result.verdict is Verdict.ALLOW and not result.degraded
    assert result.request_id == "benign-1" and result.profile == "balanced"
    assert set(result.model_versions) == {"rules", "safety_model", "semantic"}
    assert "unknown" not in result.model_versions.values()
    assert result.filtered_content == BENIGN


def test_filter_blocks_exfiltration(http):
    response = http.post("/v1/filter", json={"content": EXFILTRATION})
    assert response.status_code == 200
    result = response.json()
    assert result["verdict"] == "block"
    assert "data_exfiltration" in {d["category"] for d in result["detections"]}


def test_batch_answers_each_trace_in_order(http):
    body = {"requests": [{"content": BENIGN, "request_id": "a"}, {"content": EXFILTRATION, "request_id": "b"},
                         {"content": BENIGN, "profile": "permissive", "request_id": "c"}]}
    response = http.post("/v1/filter/batch", json=body)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["request_id"], r["verdict"]) for r in results] == [("a", "allow"), ("b", "block"), ("c", "allow")]
    assert results[2]["profile"] == "permissive"


def test_profiles_lists_the_loaded_profiles(http):
    body = http.get("/v1/profiles").json()
    assert body["default_profile"] == "balanced"
    by_name = {p["name"]: p for p in body["profiles"]}
    assert by_name["permissive"]["fail_mode"] == "open"
    assert by_name["balanced"]["stages"] == ["rules", "safety_model", "semantic"]


def test_openapi_documents_the_versioned_routes(http):
    spec = http.get("/openapi.json").json()
    assert {"/v1/filter", "/v1/filter/batch", "/v1/profiles", "/healthz", "/readyz"} <= set(spec["paths"])
    assert http.get("/docs").status_code == 200


@pytest.mark.parametrize(
    "body,status,error_type",
    [
        # the body does not validate
        ({"content": 42}, 422, "invalid_request"),
        ({"text": BENIGN}, 422, "invalid_request"),
        ({"content": BENIGN, "unexpected": 1}, 422, "invalid_request"),
        # it validates but cannot be filtered
        ({"content": "   "}, 422, "invalid_request"),
        ({"content": BENIGN, "profile": "nonexistent"}, 422, "unknown_profile"),
        # the balanced test profile allows 20,000 characters
        ({"content": "x" * 20_001}, 413, "content_too_large"),
    ],
)
def test_bad_requests_get_json_errors_with_the_right_status(http, body, status, error_type):
    response = http.post("/v1/filter", json=body)
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type


def test_batch_error_names_the_bad_item(http):
    response = http.post("/v1/filter/batch", json={"requests": [{"content": BENIGN}, {"content": ""}]})
    assert response.status_code == 422
    assert "request 1" in response.json()["error"]["message"]


def test_malformed_json_is_a_422(http):
    response = http.post("/v1/filter", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/responses"])
def test_openai_routes_the_filter_cannot_judge_are_refused_not_passed_through(http, path):
    response = http.post(path, json={"model": "m", "prompt": "hi"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "unsupported_endpoint"
    assert "/v1/chat/completions" in response.json()["error"]["message"]


def test_models_route_answers_in_the_openai_shape_without_an_upstream(http):
    response = http.get("/v1/models")
    assert response.status_code == 503 and response.json()["error"]["code"] == "proxy_not_configured"


def test_typed_client_round_trip(serve_app):
    with SafePathClient(serve_app.base_url, timeout_s=60) as client:
        assert client.ready()
        assert client.filter(BENIGN).verdict is Verdict.ALLOW
        assert [r.verdict for r in client.filter_batch([BENIGN, EXFILTRATION])] == [Verdict.ALLOW, Verdict.BLOCK]
        assert client.profiles()["default_profile"] == "balanced"
        with pytest.raises(UnknownProfile):
            client.filter(BENIGN, profile="nonexistent")
        with pytest.raises(ContentTooLarge):
            client.filter("x" * 20_001)
        with pytest.raises(InvalidRequest):
            client.filter(" ")

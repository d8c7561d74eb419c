"""HTTP mapping of the API without Ray: statuses and JSON error bodies on a plain FastAPI app."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

import asyncio  # noqa: E402
import json  # noqa: E402

from fastapi import FastAPI  # noqa: E402

from deployments import http  # noqa: E402
from safepath import ContentTooLarge, EmptyContent, UnknownProfile  # noqa: E402
from safepath.types import FilterRequest, FilterResult, Verdict  # noqa: E402

BLOCKED = FilterResult(request_id="r", profile="strict", verdict=Verdict.BLOCK, filtered_content="[BLOCKED]",
                       safety_score=1.0, degraded=True, failed_stages=("safety_model",))


class _Client:
    """Requests straight into the ASGI app (starlette's TestClient wants another httpx package)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        async def send():
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str, **kwargs) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs) -> httpx.Response:
        return self.request("POST", url, **kwargs)


def _app() -> _Client:
    app = http.install(FastAPI())

    @app.post("/echo")
    async def echo(body: FilterRequest):
        return http.json_response(body)

    @app.get("/raise/{kind}")
    async def raise_(kind: str):
        raise {
            "empty": EmptyContent(),
            "large": ContentTooLarge(300_000, 200_000),
            "profile": UnknownProfile("nope", ["balanced", "strict"]),
            "bug": KeyError("oops"),
        }[kind]

    @app.get("/unavailable")
    async def unavailable():
        return http.stage_unavailable([BLOCKED], [BLOCKED])

    return _Client(app)


@pytest.mark.parametrize(
    "kind,status,error_type",
    [
        ("empty", 422, "invalid_request"),
        ("large", 413, "content_too_large"),
        ("profile", 422, "unknown_profile"),
        # an unexpected exception is a 500 whose message does not leak the exception text
        ("bug", 500, "internal_error"),
    ],
)
def test_library_errors_map_to_statuses_and_json(kind, status, error_type):
    response = _app().get(f"/raise/{kind}")
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type
    if kind == "bug":
        assert "oops" not in response.text


def test_invalid_body_is_a_422_naming_the_field():
    response = _app().post("/echo", json={"content": 5})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_request" and "content" in error["message"]


def test_a_lone_surrogate_is_a_422_before_any_stage():
    # JSON may escape a lone surrogate; Python then holds text no stage can encode.
    response = _app().post("/echo", content=b'{"content": "Step 1: ok \\udcff"}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_request" and "lone surrogate U+DCFF" in error["message"]


def test_unknown_field_is_rejected():
    response = _app().post("/echo", json={"content": "x", "profle": "strict"})
    assert response.status_code == 422


def test_body_over_the_limit_is_a_413_before_parsing():
    client = _app()
    response = client.post("/echo", content=b"x" * (http.MAX_BODY_BYTES + 1),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "content_too_large"


def test_stage_unavailable_is_a_503_with_the_blocked_results():
    response = _app().get("/unavailable")
    assert response.status_code == 503
    body = response.json()
    assert body["error"]["details"] == {"failed_stages": ["safety_model"]}
    assert body["results"][0]["verdict"] == "block" and body["results"][0]["degraded"] is True


def test_a_503_names_the_stages_that_failed_for_the_blocked_traces_only():
    # a fail-open trace in the same batch lost another stage without being blocked: that stage is no cause of the 503
    degraded_open = FilterResult(request_id="o", profile="balanced", verdict=Verdict.ALLOW, filtered_content="ok",
                                 safety_score=1.0, degraded=True, failed_stages=("semantic",))
    response = http.stage_unavailable([BLOCKED], [BLOCKED, degraded_open])
    error = json.loads(response.body)["error"]
    assert error["details"] == {"failed_stages": ["safety_model"]}
    assert error["message"].startswith("stage(s) safety_model failed")

"""The typed HTTP client against a mock transport: request bodies, results, and errors as library exceptions."""

from __future__ import annotations

import asyncio
import json

import pytest

httpx = pytest.importorskip("httpx")

from safepath import ContentTooLarge, InvalidRequest, UnknownProfile, Verdict  # noqa: E402
from safepath.client import AsyncSafePathClient, SafePathClient  # noqa: E402
from safepath.errors import StageUnavailable  # noqa: E402
from safepath.types import FilterResult  # noqa: E402


def _result(request_id: str = "r1", verdict: str = "allow", degraded: bool = False) -> dict:
    return FilterResult(request_id=request_id, profile="balanced", verdict=Verdict(verdict), filtered_content="ok",
                        safety_score=1.0, degraded=degraded).model_dump(mode="json")


def _error(status: int, kind: str, details: dict | None = None, results: list | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"type": kind, "message": "m", "details": details},
                                        "results": results})


def _client(handler) -> SafePathClient:
    return SafePathClient(client=httpx.Client(base_url="http://test", transport=httpx.MockTransport(handler)))


def test_filter_posts_only_the_given_fields_and_returns_a_result():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["path"], seen["body"] = request.url.path, json.loads(request.content)
        return httpx.Response(200, json=_result())

    result = _client(handler).filter("Step 1: think.", profile="strict")
    assert seen == {"path": "/v1/filter", "body": {"content": "Step 1: think.", "profile": "strict"}}
    assert isinstance(result, FilterResult) and result.verdict is Verdict.ALLOW


def test_batch_keeps_order():
    def handler(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["requests"]
        return httpx.Response(200, json={"results": [_result(str(i)) for i, _ in enumerate(items)]})

    results = _client(handler).filter_batch(["a", "b", "c"])
    assert [r.request_id for r in results] == ["0", "1", "2"]


@pytest.mark.parametrize(
    "response,error",
    [
        (_error(422, "invalid_request"), InvalidRequest),
        (_error(422, "unknown_profile", {"profile": "x", "known": ["balanced"]}), UnknownProfile),
        (_error(413, "content_too_large", {"size": 10, "limit": 5}), ContentTooLarge),
        (_error(503, "stage_unavailable", {"failed_stages": ["semantic"]}, [_result(verdict="block", degraded=True)]),
         StageUnavailable),
        (httpx.Response(500, text="boom"), httpx.HTTPStatusError),
    ],
)
def test_error_statuses_raise_library_exceptions(response, error):
    with pytest.raises(error) as caught:
        _client(lambda request: response).filter("x")
    if error is StageUnavailable:
        assert caught.value.failed_stages == ["semantic"]
        assert caught.value.results[0].verdict is Verdict.BLOCK


def test_async_client():
    async def main():
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json=_result()))
        async with AsyncSafePathClient(client=httpx.AsyncClient(base_url="http://test", transport=transport)) as c:
            return await c.filter("x")

    assert asyncio.run(main()).verdict is Verdict.ALLOW

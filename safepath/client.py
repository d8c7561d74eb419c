"""A small typed HTTP client for the served API (`deployments/`), for Python callers outside Ray.

    from safepath.client import SafePathClient
    with SafePathClient("http://127.0.0.1:8000") as client:
        result = client.filter("Step 1: ...", profile="strict")      # -> FilterResult

Errors come back as the library's exceptions: 422 as `InvalidRequest` (or `UnknownProfile`), 413 as
`ContentTooLarge`, 503 as `StageUnavailable` (a `StageError` carrying the blocked results). Other statuses raise
`httpx.HTTPStatusError`. Needs `httpx` (the `serve` or `client` extra); importing `safepath` does not load it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from safepath.errors import ContentTooLarge, InvalidRequest, StageUnavailable, UnknownProfile
from safepath.types import FilterRequest, FilterResult

DEFAULT_TIMEOUT_S = 30.0


def _request(content: str, context: dict[str, str] | None, profile: str | None, request_id: str | None,
             metadata: dict[str, Any] | None) -> dict[str, Any]:
    body = {"content": content, "context": context, "profile": profile, "request_id": request_id, "metadata": metadata}
    return {k: v for k, v in body.items() if v is not None}


def _batch_body(requests: Sequence[FilterRequest | str]) -> dict[str, Any]:
    items = [FilterRequest(content=r) if isinstance(r, str) else r for r in requests]
    return {"requests": [r.model_dump(exclude_none=True) for r in items]}


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        response.raise_for_status()
        return
    message, kind, details = error.get("message", ""), error.get("type"), error.get("details") or {}
    if response.status_code == 503 and kind == "stage_unavailable":
        results = [FilterResult.model_validate(r) for r in response.json().get("results") or []]
        raise StageUnavailable(message, results, details.get("failed_stages", []))
    if response.status_code == 413 and "size" in details:
        raise ContentTooLarge(details["size"], details["limit"])
    if response.status_code == 422 and kind == "unknown_profile":
        raise UnknownProfile(details.get("profile", ""), details.get("known", []))
    if response.status_code in (413, 422):
        raise InvalidRequest(message)
    response.raise_for_status()


class SafePathClient:
    """Blocking client. One connection pool per instance; use it as a context manager or call `close()`.

    Args:
        base_url: Where the app is served, e.g. `http://127.0.0.1:8000`.
        timeout_s: Per-request timeout.
        client: An `httpx.Client` to use instead (tests pass one with a mock transport).
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 client: httpx.Client | None = None) -> None:
        self._http = client or httpx.Client(base_url=base_url, timeout=timeout_s)

    def filter(self, content: str, context: dict[str, str] | None = None, *, profile: str | None = None,
               request_id: str | None = None, metadata: dict[str, Any] | None = None) -> FilterResult:
        """Judge one trace (`POST /v1/filter`)."""
        response = self._http.post("/v1/filter", json=_request(content, context, profile, request_id, metadata))
        _raise_for_error(response)
        return FilterResult.model_validate_json(response.content)

    def filter_batch(self, requests: Sequence[FilterRequest | str]) -> list[FilterResult]:
        """Judge many traces in one call (`POST /v1/filter/batch`); results in order."""
        response = self._http.post("/v1/filter/batch", json=_batch_body(requests))
        _raise_for_error(response)
        return [FilterResult.model_validate(r) for r in response.json()["results"]]

    def profiles(self) -> dict[str, Any]:
        """`GET /v1/profiles`: the default profile and each profile's stages, thresholds and fail mode."""
        response = self._http.get("/v1/profiles")
        _raise_for_error(response)
        return response.json()

    def ready(self) -> bool:
        """`GET /readyz`: True once every stage deployment has its models loaded."""
        return self._http.get("/readyz").status_code == 200

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SafePathClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncSafePathClient:
    """The same calls for asyncio callers (`await client.filter(...)`)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 client: httpx.AsyncClient | None = None) -> None:
        self._http = client or httpx.AsyncClient(base_url=base_url, timeout=timeout_s)

    async def filter(self, content: str, context: dict[str, str] | None = None, *, profile: str | None = None,
                     request_id: str | None = None, metadata: dict[str, Any] | None = None) -> FilterResult:
        response = await self._http.post("/v1/filter", json=_request(content, context, profile, request_id, metadata))
        _raise_for_error(response)
        return FilterResult.model_validate_json(response.content)

    async def filter_batch(self, requests: Sequence[FilterRequest | str]) -> list[FilterResult]:
        response = await self._http.post("/v1/filter/batch", json=_batch_body(requests))
        _raise_for_error(response)
        return [FilterResult.model_validate(r) for r in response.json()["results"]]

    async def ready(self) -> bool:
        return (await self._http.get("/readyz")).status_code == 200

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSafePathClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

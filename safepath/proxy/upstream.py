"""The upstream OpenAI-compatible server, over httpx: one chat completion, whole or as server-sent events.

Every failure becomes a `ProxyError` with the status the caller should see: 502 when the upstream cannot be
reached or answers something that is not the OpenAI format, 504 when it times out, its own status (and error
body) when it answers a non-2xx. Each call carries the headers `safepath.proxy.headers.upstream_headers` chose
(the caller's, with the upstream key only for callers that authenticated to the proxy). The API key is read from
the environment per request and scrubbed from anything the upstream sends back; messages name the upstream by
`ProxyConfig.safe_url` (no user info, no query).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx

from safepath.chat.wire import DONE, SSEDecoder, parse_chunk
from safepath.errors import UpstreamError, UpstreamStatus
from safepath.proxy.config import ProxyConfig

logger = logging.getLogger(__name__)

Chunk = dict[str, Any] | str  # a parsed chunk, or DONE
HeaderPairs = Sequence[tuple[str, str]]


class Upstream:
    """Sends chat completion requests to one upstream.

    Args:
        config: Where the upstream is, its key's environment variable and the timeout.
        transport: An httpx transport to use instead of the network (e.g. `httpx.ASGITransport`).
    """

    def __init__(self, config: ProxyConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def complete(self, body: dict[str, Any], headers: HeaderPairs = ()) -> dict[str, Any]:
        """A whole completion, sent with `headers`. Raises ProxyError."""
        return await self._json("POST", "/chat/completions", headers, json=body)

    async def get(self, path: str, headers: HeaderPairs = ()) -> dict[str, Any]:
        """`GET {base_url}{path}` (e.g. /models), answered as the upstream's JSON object. Raises ProxyError."""
        return await self._json("GET", path, headers)

    async def _json(self, method: str, path: str, headers: HeaderPairs, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http().request(method, path, headers=self._headers(headers), **kwargs)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if not response.is_success:
            raise self._status_error(response.status_code, response.content)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise UpstreamError(502, f"the upstream {self.config.safe_url} answered something that is not a JSON "
                                "object", type="upstream_error", code="bad_upstream_response")
        return data

    @asynccontextmanager
    async def stream(self, body: dict[str, Any], headers: HeaderPairs = ()) -> AsyncIterator[AsyncIterator[Chunk]]:
        """Open a streamed completion; raises ProxyError before the first event, and from the events after it."""
        client = self._http()
        request = client.build_request("POST", "/chat/completions", json=body, headers=self._headers(headers))
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        try:
            if not response.is_success:
                try:
                    content = await response.aread()
                except httpx.HTTPError as exc:
                    raise self._transport_error(exc) from None
                raise self._status_error(response.status_code, content)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise UpstreamError(502, f"the upstream {self.config.safe_url} did not answer with an event stream",
                                    type="upstream_error", code="bad_upstream_response")
            yield self._events(response)
        finally:
            await response.aclose()

    async def _events(self, response: httpx.Response) -> AsyncIterator[Chunk]:
        decoder = SSEDecoder()
        try:
            async for line in response.aiter_lines():
                event = decoder.line(line)
                if event is not None:
                    chunk = self._chunk(event)
                    yield chunk
                    if chunk == DONE:
                        return
            event = decoder.end()
            if event is not None:
                yield self._chunk(event)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None

    def _chunk(self, event: Any) -> Chunk:
        chunk = parse_chunk(event)
        if isinstance(chunk, dict) and chunk.get("error"):
            # An error after the stream started (vLLM and others send one event): relay it, scrubbed.
            raise UpstreamStatus(502, self._scrub(chunk))
        return chunk

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.config.base_url, timeout=httpx.Timeout(self.config.timeout_s), transport=self._transport
            )
        return self._client

    @staticmethod
    def _headers(forwarded: HeaderPairs) -> httpx.Headers:
        headers = httpx.Headers(list(forwarded))
        headers["accept"] = "application/json, text/event-stream"
        return headers

    def _transport_error(self, exc: httpx.HTTPError) -> UpstreamError:
        # Only the exception's class is reported: httpx messages may quote the request URL.
        url = self.config.safe_url
        logger.warning("upstream %s failed: %s", url, type(exc).__name__)
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamError(504, f"the upstream {url} timed out after {self.config.timeout_s:g} s",
                                 type="upstream_error", code="upstream_timeout")
        if isinstance(exc, httpx.ConnectError):
            return UpstreamError(502, f"could not connect to the upstream {url}",
                                 type="upstream_error", code="upstream_unavailable")
        return UpstreamError(502, f"the connection to the upstream {url} failed ({type(exc).__name__})",
                             type="upstream_error", code="upstream_unavailable")

    def _status_error(self, status: int, content: bytes) -> UpstreamStatus:
        try:
            payload = json.loads(content)
        except ValueError:
            payload = None
        if not (isinstance(payload, dict) and isinstance(payload.get("error"), dict)):
            text = content.decode("utf-8", "replace")[:300]
            payload = {"error": {"message": f"the upstream answered HTTP {status}: {text}", "type": "upstream_error",
                                 "code": str(status), "param": None}}
        logger.info("upstream %s answered HTTP %d", self.config.safe_url, status)
        return UpstreamStatus(status, self._scrub(payload))

    def _scrub(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The payload with the API key replaced wherever it occurs in a string (upstreams echo bad keys)."""
        key = self.config.api_key()
        return _replace(payload, key) if key else payload


def _replace(value: Any, key: str) -> Any:
    if isinstance(value, str):
        return value.replace(key, "***")
    if isinstance(value, dict):
        return {_replace(k, key): _replace(v, key) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, key) for v in value]
    return value

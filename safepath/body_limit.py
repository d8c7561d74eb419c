"""A request-body size guard as plain ASGI middleware, shared by the Ray ingress and the standalone proxy.

Plain ASGI (no Starlette or FastAPI import), so `safepath` keeps importing without the web extras. Each app
supplies the JSON body of its 413 (the ingress's error envelope, the proxy's OpenAI error shape).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from safepath.errors import ContentTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
ErrorBody = Callable[[str, str, dict[str, Any] | None], dict[str, Any]]  # (type, message, details) -> JSON body

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


async def send_json(send: Send, status: int, body: dict[str, Any], headers: Iterable[tuple[str, str]] = ()) -> None:
    """Send one complete JSON HTTP response on `send` (plain ASGI)."""
    data = json.dumps(body, separators=(",", ":")).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


class BodySizeLimit:
    """Refuses bodies over `max_bytes` with 413: a declared length before anything is read, a streamed one as
    soon as it passes the limit.

    When a streamed body passes the limit, reading it raises `ContentTooLarge`; whatever the app then answers
    (its own 413, or a 400 because it caught the error as a bad body) is replaced by this 413, so the status
    never depends on how the app handles the error.

    Args:
        app: The wrapped ASGI app.
        error_body: Builds the JSON body of the 413 from (type, message, details).
        max_bytes: The largest body accepted.
    """

    def __init__(self, app: ASGIApp, *, error_body: ErrorBody, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.error_body = error_body
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send, int(declared))
        seen = 0
        over = False
        started = False

        async def limited() -> Message:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                over = True
                raise ContentTooLarge(seen, self.max_bytes)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the app's answer to a body it could not read; ours goes out instead
            started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded_send)
        except ContentTooLarge:
            if not over:
                raise
        if over and not started:
            await self._refuse(send, seen)

    async def _refuse(self, send: Send, size: int) -> None:
        message = f"body is {size} bytes, over {self.max_bytes}"
        details = {"size": size, "limit": self.max_bytes}
        await send_json(send, 413, self.error_body("content_too_large", message, details))

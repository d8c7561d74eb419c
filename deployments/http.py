"""HTTP mapping of the API: error bodies and statuses, JSON responses, the request-size guard. Importable without Ray.

    422 invalid_request      the body does not validate, the content is empty, a batch item is unusable
    422 unknown_profile      the request names a profile that is not loaded
    413 content_too_large    the content exceeds the profile's max_content_chars, or the body exceeds MAX_BODY_BYTES
    503 stage_unavailable    a stage failed or timed out under a fail-closed profile (the blocked results come along)
    500 internal_error       anything else; the message names the exception type only
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from safepath.errors import ContentTooLarge, InvalidRequest, SafePathError, UnknownProfile
from safepath.types import FilterResult

from deployments.schemas import ErrorDetail, ErrorResponse

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
JSON = "application/json"


def json_response(body: object, status_code: int = 200) -> Response:
    """A pydantic model as JSON, serialised once by pydantic (no re-validation through a response_model)."""
    data = body.model_dump_json() if hasattr(body, "model_dump_json") else body
    return Response(data, status_code=status_code, media_type=JSON)


def error_response(
    status_code: int, kind: str, message: str, *, details: dict | None = None, results: Sequence[FilterResult] | None = None
) -> Response:
    body = ErrorResponse(
        error=ErrorDetail(type=kind, message=message, details=details),
        results=list(results) if results is not None else None,
    )
    return json_response(body, status_code)


def error_for(exc: Exception) -> Response:
    """The JSON error answer for an exception raised while handling a request."""
    if isinstance(exc, ContentTooLarge):
        return error_response(413, "content_too_large", str(exc), details={"size": exc.size, "limit": exc.limit})
    if isinstance(exc, UnknownProfile):
        return error_response(422, "unknown_profile", str(exc), details={"profile": exc.name, "known": exc.known})
    if isinstance(exc, InvalidRequest):
        return error_response(422, "invalid_request", str(exc))
    logger.exception("request failed")
    kind = "configuration_error" if isinstance(exc, SafePathError) else "internal_error"
    return error_response(500, kind, f"{type(exc).__name__} while handling the request")


def stage_unavailable(blocked: Sequence[FilterResult], results: Sequence[FilterResult], failed: set[str]) -> Response:
    """503: some traces were blocked only because a stage failed under a fail-closed profile."""
    profiles = sorted({r.profile for r in blocked})
    message = (
        f"stage(s) {', '.join(sorted(failed)) or 'unknown'} failed or timed out; profile(s) {', '.join(profiles)} "
        f"fail closed, so {len(blocked)} trace(s) were blocked"
    )
    return error_response(503, "stage_unavailable", message, details={"failed_stages": sorted(failed)}, results=results)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    errors = jsonable_encoder(exc.errors(), exclude={"input", "url"})
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(422, "invalid_request", f"invalid request body: {where}: {first.get('msg', 'invalid')}",
                          details={"errors": errors})


async def _safepath_error(request: Request, exc: Exception) -> Response:
    return error_for(exc)


class BodySizeLimit:
    """Refuses bodies over `max_bytes` with 413 before they are read (declared or streamed length)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = error_response(413, "content_too_large", f"body is {int(declared)} bytes, over {self.max_bytes}")
            return await response(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise ContentTooLarge(seen, self.max_bytes)  # mapped to 413 by the handler below
            return message

        return await self.app(scope, limited, send)


def install(app: FastAPI) -> FastAPI:
    """Error handlers and the body-size guard on an app; returns it."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(SafePathError, _safepath_error)
    app.add_exception_handler(Exception, _safepath_error)  # anything else: JSON 500, not a text page
    app.add_middleware(BodySizeLimit)
    return app

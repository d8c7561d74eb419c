"""HTTP mapping of the API: error bodies and statuses, JSON responses, the request-size guard. Importable without Ray.

    422 invalid_request      the body does not validate, the content is empty, a batch item is unusable
    422 unknown_profile      the request names a profile that is not loaded
    413 content_too_large    the content exceeds the profile's max_content_chars, or the body exceeds MAX_BODY_BYTES
    401 unauthorized         API keys are set and the request carries none of them (safepath/access.py)
    429 rate_limited         the key's (or address's) requests this minute are over the limit; Retry-After says when
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

from deployments.schemas import ErrorDetail, ErrorResponse
from safepath.access import AccessControl, AccessPolicy
from safepath.body_limit import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from safepath.errors import ContentTooLarge, InvalidRequest, SafePathError, UnknownProfile
from safepath.types import FilterResult

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = DEFAULT_MAX_BODY_BYTES
JSON = "application/json"


def json_response(body: object, status_code: int = 200) -> Response:
    """A pydantic model as JSON, serialised once by pydantic (no re-validation through a response_model)."""
    data = body.model_dump_json() if hasattr(body, "model_dump_json") else body
    return Response(data, status_code=status_code, media_type=JSON)


def error_response(
    status_code: int,
    kind: str,
    message: str,
    *,
    details: dict | None = None,
    results: Sequence[FilterResult] | None = None,
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


def stage_unavailable(blocked: Sequence[FilterResult], results: Sequence[FilterResult]) -> Response:
    """503: some traces were blocked only because a stage failed under a fail-closed profile. The failed stages
    named are those the blocked results name (`FilterResult.failed_stages`)."""
    profiles = sorted({r.profile for r in blocked})
    failed = sorted({name for r in blocked for name in r.failed_stages})
    message = (
        f"stage(s) {', '.join(failed) or 'unknown'} failed or timed out; profile(s) {', '.join(profiles)} "
        f"fail closed, so {len(blocked)} trace(s) were blocked"
    )
    return error_response(503, "stage_unavailable", message, details={"failed_stages": failed}, results=results)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    errors = jsonable_encoder(exc.errors(), exclude={"input", "url"})
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(422, "invalid_request", f"invalid request body: {where}: {first.get('msg', 'invalid')}",
                          details={"errors": errors})


async def _safepath_error(request: Request, exc: Exception) -> Response:
    return error_for(exc)


def error_body(kind: str, message: str, details: dict | None = None) -> dict:
    """The JSON error envelope as a dict, for the plain-ASGI middlewares (body limit, access)."""
    return ErrorResponse(error=ErrorDetail(type=kind, message=message, details=details)).model_dump(mode="json")


def install(app: FastAPI, access: AccessPolicy | None = None) -> FastAPI:
    """Error handlers, the body-size guard and the access check (API keys, rate limit) on an app; returns it.

    Args:
        app: The app.
        access: What the access check enforces; from the `SAFEPATH_*` environment where the app first runs (in
            a Ray replica: the replica's) when None.
    """
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(SafePathError, _safepath_error)
    app.add_exception_handler(Exception, _safepath_error)  # anything else: JSON 500, not a text page
    app.add_middleware(BodySizeLimit, error_body=error_body, max_bytes=MAX_BODY_BYTES)
    # Added last, so it runs first: an unauthenticated client cannot make the app read a body at all.
    app.add_middleware(AccessControl, error_body=error_body, policy=access)
    return app

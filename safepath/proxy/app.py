"""HTTP for the proxy and the streaming filter: route handlers shared by the standalone app and the Ray ingress.

    POST /v1/chat/completions   OpenAI-compatible, stream or not, reasoning filtered (`chat_completions`)
    GET  /v1/models             the upstream's model list, passed through (`list_models`)
    POST /v1/completions, /v1/responses    refused (404, OpenAI error shape): their output is not filtered here
    WS   /v1/stream             the streaming filter (`stream_socket`; protocol in safepath.streaming.protocol)

`proxy_router` puts these routes on any FastAPI app; `create_app` builds the standalone app over an in-process
`SafePathFilter` (`safepath proxy` runs it), behind the access check (safepath/access.py: API keys, rate limit)
and the body-size guard; deployments/ingress.py mounts the same handlers on the Ray ingress.

Credentials: the caller's headers go upstream (safepath/proxy/headers.py). The upstream key (`api_key_env`) is
used only for callers that authenticated with one of the proxy's API keys, so `create_app` refuses a route with
`api_key_env` when no API keys are set: the key would otherwise be unusable, or spent by anyone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect
from starlette.responses import JSONResponse, Response, StreamingResponse

from safepath import __version__
from safepath.access import AccessControl, AccessPolicy, client_key_id, openai_error_body
from safepath.body_limit import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from safepath.errors import ConfigError, ProxyError, SafePathError
from safepath.filter import SafePathFilter
from safepath.proxy.config import ProxyConfig
from safepath.proxy.service import ChatProxy, ProfileLookup
from safepath.settings import RuntimeSettings
from safepath.streaming import AsyncJudge, HoldbackLookup, holdbacks
from safepath.streaming.protocol import ErrorReply, StreamProtocol

NOT_CONFIGURED = ProxyError(
    503, "the reasoning proxy is not configured here: give it an upstream (`proxy:` in the Ingress user_config, or "
    "`safepath proxy --upstream URL`)", type="proxy_not_configured", code="proxy_not_configured",
)


def openai_error(error: ProxyError) -> Response:
    return JSONResponse(error.body(), status_code=error.status)


async def chat_completions(proxy: ChatProxy | None, request: Request) -> Response:
    """Answer one `POST /v1/chat/completions`: JSON, or server-sent events when the body asks to stream."""
    if proxy is None:
        return openai_error(NOT_CONFIGURED)
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return openai_error(ProxyError(400, "the body must be a JSON object", type="invalid_request_error"))
    caller = _caller(request)
    try:
        if body.get("stream") is True:
            return StreamingResponse(await proxy.stream(body, **caller), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache"})
        return JSONResponse(await proxy.complete(body, **caller))
    except ProxyError as exc:
        return openai_error(exc)
    except SafePathError as exc:  # e.g. the route names a profile that is not loaded
        return openai_error(ProxyError(500, str(exc), type="server_error", code="configuration_error"))


async def list_models(proxy: ChatProxy | None, request: Request) -> Response:
    """Answer `GET /v1/models` with the upstream's answer (its error status and body when it fails)."""
    if proxy is None:
        return openai_error(NOT_CONFIGURED)
    try:
        return JSONResponse(await proxy.models(**_caller(request)))
    except ProxyError as exc:
        return openai_error(exc)


def unsupported(path: str) -> Response:
    """404 for an OpenAI route whose output this proxy does not filter (rather than passing it through unjudged)."""
    return openai_error(ProxyError(
        404, f"{path} is not supported by the CoT SafePath proxy, which filters only POST /v1/chat/completions "
        "(also GET /v1/models); send chat completions instead", type="invalid_request_error",
        code="unsupported_endpoint",
    ))


def _caller(request: Request) -> dict:
    """The caller's headers, and whether it authenticated to the proxy: what ChatProxy forwards upstream."""
    return {"headers": request.headers.items(), "authenticated": client_key_id(request.scope) is not None}


async def stream_socket(
    websocket: WebSocket, judge: AsyncJudge, profile_for: ProfileLookup, holdback_for: HoldbackLookup | None = None
) -> None:
    """Serve one `/v1/stream` connection."""
    await websocket.accept()
    protocol = StreamProtocol(judge, profile_for, holdback_for=holdback_for)
    replies: list = []
    try:
        while not protocol.closed:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            frame = message.get("text") if message.get("text") is not None else message.get("bytes", b"")
            replies = await protocol.receive(frame)
            for reply in replies:
                await websocket.send_text(reply.model_dump_json())
    except WebSocketDisconnect:
        return
    failed = bool(replies) and isinstance(replies[-1], ErrorReply)
    await websocket.close(code=1008 if failed else 1000)


def proxy_router(
    proxy: ChatProxy | None, judge: AsyncJudge, profile_for: ProfileLookup, holdback_for: HoldbackLookup | None = None
) -> APIRouter:
    """`POST /v1/chat/completions` through `proxy` (503 when None) and `WS /v1/stream` judged by `judge`."""
    router = APIRouter()

    @router.post("/v1/chat/completions", summary="OpenAI chat completions with the reasoning filtered")
    async def chat_completions_route(request: Request) -> Response:
        return await chat_completions(proxy, request)

    @router.get("/v1/models", summary="The upstream's models, passed through")
    async def models_route(request: Request) -> Response:
        return await list_models(proxy, request)

    @router.post("/v1/completions", include_in_schema=False)
    @router.post("/v1/responses", include_in_schema=False)
    async def unsupported_route(request: Request) -> Response:
        return unsupported(request.url.path)

    @router.websocket("/v1/stream")
    async def stream_route(websocket: WebSocket) -> None:
        await stream_socket(websocket, judge, profile_for, holdback_for)

    return router


def create_app(
    safepath_filter: SafePathFilter,
    config: ProxyConfig | None = None,
    *,
    access: AccessPolicy | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """The standalone app: the proxy (when `config` is given), the streaming WebSocket and `/healthz`.

    Args:
        safepath_filter: Judges the reasoning.
        config: The upstream and the filtering options; without one the proxy routes answer 503.
        access: API keys and rate limit; from the `SAFEPATH_*` environment when None.
        max_body_bytes: Larger request bodies are refused with 413.

    Raises:
        ConfigError: `config.api_key_env` is set but no API keys are (see the module doc), or the key setting is
            unusable, or the config's profile is unknown.
    """
    access = access if access is not None else AccessPolicy.from_settings(RuntimeSettings())
    if config is not None and config.api_key_env and access.keys is None:
        raise ConfigError(
            f"the upstream key ({config.api_key_env}) is only used for callers that authenticate to the proxy: "
            "set SAFEPATH_API_KEYS or SAFEPATH_API_KEYS_FILE, or drop --api-key-env and let callers send their own"
        )
    holdback_for = holdbacks(safepath_filter.profiles, safepath_filter.detectors)
    proxy = ChatProxy(config, safepath_filter.afilter_batch, safepath_filter.profiles.get,
                      holdback_for=holdback_for) if config else None
    if config is not None:
        safepath_filter.profiles.get(config.profile)  # a bad profile name fails now, not on the first request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if proxy is not None:
            await proxy.aclose()

    app = FastAPI(title="CoT SafePath proxy", version=__version__, lifespan=lifespan)
    app.include_router(proxy_router(proxy, safepath_filter.afilter_batch, safepath_filter.profiles.get, holdback_for))
    app.add_middleware(BodySizeLimit, error_body=openai_error_body, max_bytes=max_body_bytes)
    app.add_middleware(AccessControl, error_body=openai_error_body, policy=access)  # outermost: runs first

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve(safepath_filter: SafePathFilter, config: ProxyConfig, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the standalone app with uvicorn in this process until interrupted."""
    import uvicorn

    uvicorn.run(create_app(safepath_filter, config), host=host, port=port, log_level="info")

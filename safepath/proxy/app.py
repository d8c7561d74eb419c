"""HTTP for the proxy and the streaming filter: route handlers shared by the standalone app and the Ray ingress.

    POST /v1/chat/completions   OpenAI-compatible, stream or not, reasoning filtered (`chat_completions`)
    WS   /v1/stream             the streaming filter (`stream_socket`; protocol in safepath.stream_protocol)

`proxy_router` puts both routes on any FastAPI app; `create_app` builds the standalone app over an in-process
`SafePathFilter` (`safepath proxy` runs it); deployments/ingress.py mounts the same handlers on the Ray ingress.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect
from starlette.responses import JSONResponse, Response, StreamingResponse

from safepath import __version__
from safepath.errors import SafePathError
from safepath.filter import SafePathFilter
from safepath.proxy.config import ProxyRoute
from safepath.proxy.service import ChatProxy, ProfileLookup
from safepath.proxy.wire import ProxyError
from safepath.stream_protocol import ErrorReply, StreamProtocol
from safepath.streaming import AsyncJudge

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
    try:
        if body.get("stream") is True:
            return StreamingResponse(await proxy.stream(body), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache"})
        return JSONResponse(await proxy.complete(body))
    except ProxyError as exc:
        return openai_error(exc)
    except SafePathError as exc:  # e.g. the route names a profile that is not loaded
        return openai_error(ProxyError(500, str(exc), type="server_error", code="configuration_error"))


async def stream_socket(websocket: WebSocket, judge: AsyncJudge, profile_for: ProfileLookup) -> None:
    """Serve one `/v1/stream` connection."""
    await websocket.accept()
    protocol = StreamProtocol(judge, profile_for)
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


def proxy_router(proxy: ChatProxy | None, judge: AsyncJudge, profile_for: ProfileLookup) -> APIRouter:
    """`POST /v1/chat/completions` through `proxy` (503 when None) and `WS /v1/stream` judged by `judge`."""
    router = APIRouter()

    @router.post("/v1/chat/completions", summary="OpenAI chat completions with the reasoning filtered")
    async def chat_completions_route(request: Request) -> Response:
        return await chat_completions(proxy, request)

    @router.websocket("/v1/stream")
    async def stream_route(websocket: WebSocket) -> None:
        await stream_socket(websocket, judge, profile_for)

    return router


def create_app(safepath_filter: SafePathFilter, route: ProxyRoute | None = None) -> FastAPI:
    """The standalone app: the proxy (when `route` is given), the streaming WebSocket and `/healthz`."""
    proxy = ChatProxy(route, safepath_filter.afilter_batch, safepath_filter.profiles.get) if route else None
    if route is not None:
        safepath_filter.profiles.get(route.profile)  # a bad profile name fails now, not on the first request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if proxy is not None:
            await proxy.aclose()

    app = FastAPI(title="CoT SafePath proxy", version=__version__, lifespan=lifespan)
    app.include_router(proxy_router(proxy, safepath_filter.afilter_batch, safepath_filter.profiles.get))

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve(safepath_filter: SafePathFilter, route: ProxyRoute, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the standalone app with uvicorn in this process until interrupted."""
    import uvicorn

    uvicorn.run(create_app(safepath_filter, route), host=host, port=port, log_level="info")

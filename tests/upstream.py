"""A real OpenAI-compatible upstream for the proxy tests, served by uvicorn on loopback in a background thread.

It answers `GET /v1/models` (the registered scenarios) and `POST /v1/chat/completions` with the shapes reasoning
servers really send (field names, first and last chunks, usage, vendor extras), for a scenario the test
registered under the request's `model`:

    vllm        `reasoning_content` deltas (vLLM with a reasoning parser, DeepSeek's API)
    vllm_both   `reasoning` and `reasoning_content` with the same text (vLLM >= 0.10)
    openrouter  `reasoning` plus readable `reasoning_details`, keep-alive comments
    ollama      `reasoning` (Ollama's OpenAI-compatible API)
    llamacpp    `<think>…</think>` inside `content` (llama.cpp, SGLang without a reasoning parser)

Text arrives in the pieces the scenario gives (cut anywhere: inside a word, a tag or a step). Faults: an error
status, a stall longer than the proxy's timeout, a malformed event, SSE bytes cut at arbitrary byte offsets.
Also here: `serve_in_thread` (any ASGI app on loopback) and `converse` (a /v1/stream WebSocket client).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

CREATED = 1_760_000_000


@dataclass
class Scenario:
    """One recorded-shape answer.

    Args:
        style: vllm, vllm_both, openrouter, ollama or llamacpp.
        reasoning: Reasoning pieces, in stream order (for llamacpp they go inside the think tags of `content`).
        answer: Answer pieces.
        content: For llamacpp, the raw content pieces instead (tags included, cut anywhere); overrides the above.
        tool_call: (name, arguments) of one tool call after the reasoning, delivered in three deltas.
        status: Answer this HTTP status with `error_body` (JSON) or `error_text` instead.
        stall_after: Stop after this many events and wait `stall_s` (a timeout mid-stream); non-streamed: wait first.
        malformed_after: Send a truncated JSON event after this many events; non-streamed: truncated JSON.
        byte_pieces: Write the SSE body in pieces of these byte sizes, cycled (cuts multi-byte characters).
    """

    style: str = "vllm"
    reasoning: Sequence[str] = ()
    answer: Sequence[str] = ()
    content: Sequence[str] | None = None
    tool_call: tuple[str, str] | None = None
    status: int | None = None
    error_body: dict[str, Any] | None = None
    error_text: str | None = None
    stall_after: int | None = None
    stall_s: float = 5.0
    malformed_after: int | None = None
    byte_pieces: Sequence[int] | None = None


@dataclass
class FakeReasoningServer:
    """The upstream's state: scenarios by model name, and the requests it received (body, headers)."""

    scenarios: dict[str, Scenario] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""

    def add(self, name: str, scenario: Scenario) -> str:
        self.scenarios[name] = scenario
        return name

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"]),
                                 Route("/v1/models", self._models, methods=["GET"])])

    def _record(self, request: Request, body: Any) -> None:
        self.requests.append({"path": request.url.path, "body": body, "headers": request.headers.items(),
                              "authorization": request.headers.get("authorization")})

    async def _models(self, request: Request) -> Response:
        self._record(request, None)
        if request.headers.get("authorization") == "Bearer rejected-by-upstream":
            return JSONResponse({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                           "code": "invalid_api_key", "param": None}}, status_code=401)
        models = [{"id": name, "object": "model", "created": CREATED, "owned_by": "test"} for name in self.scenarios]
        return JSONResponse({"object": "list", "data": models})

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self._record(request, body)
        scenario = self.scenarios[body["model"]]
        if scenario.status is not None:
            if scenario.error_text is not None:
                return Response(scenario.error_text, status_code=scenario.status, media_type="text/plain")
            return JSONResponse(scenario.error_body or {}, status_code=scenario.status)
        if not body.get("stream"):
            if scenario.stall_after is not None:
                await asyncio.sleep(scenario.stall_s)
            if scenario.malformed_after is not None:
                return Response('{"id": "chatcmpl-1", "choi', media_type="application/json")
            return JSONResponse(completion(body["model"], scenario))
        return StreamingResponse(_sse(body, scenario), media_type="text/event-stream")


def _sse(body: dict[str, Any], scenario: Scenario):
    async def events():
        include_usage = (body.get("stream_options") or {}).get("include_usage")
        for n, chunk in enumerate(chunks(body["model"], scenario, include_usage=bool(include_usage))):
            if scenario.stall_after is not None and n == scenario.stall_after:
                await asyncio.sleep(scenario.stall_s)
            if scenario.malformed_after is not None and n == scenario.malformed_after:
                yield b'data: {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "cut of\n\n'
                return
            if scenario.style == "openrouter" and n % 3 == 0:
                yield b": OPENROUTER PROCESSING\n\n"
            yield chunk
        yield b"data: [DONE]\n\n"

    if scenario.byte_pieces is None:
        return events()
    return _rechunk(events(), scenario.byte_pieces)


async def _rechunk(source, sizes: Sequence[int]):
    """The same bytes in pieces of the given sizes: lines, JSON and UTF-8 characters cut anywhere."""
    buffer, i = b"", 0
    async for data in source:
        buffer += data
        while len(buffer) >= sizes[i % len(sizes)]:
            size = sizes[i % len(sizes)]
            i += 1
            yield buffer[:size]
            buffer = buffer[size:]
            await asyncio.sleep(0)
    if buffer:
        yield buffer


def _chunk(model: str, style: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    top: dict[str, Any] = {"id": "chatcmpl-7f3a", "object": "chat.completion.chunk", "created": CREATED, "model": model}
    if style == "openrouter":
        top = {**top, "id": "gen-1760000000-abc", "provider": "DeepInfra"}
        choice["native_finish_reason"] = finish
    elif style == "ollama":
        top["system_fingerprint"] = "fp_ollama"
    elif style == "llamacpp":
        top["system_fingerprint"] = "b6500-1a2b3c"
        del choice["logprobs"]
    elif finish is not None:
        choice["stop_reason"] = None  # vLLM
    return {**top, "choices": [choice], **extra}


def _reasoning_delta(style: str, text: str) -> dict[str, Any]:
    if style == "vllm":
        return {"reasoning_content": text}
    if style == "vllm_both":
        return {"reasoning": text, "reasoning_content": text}
    if style == "openrouter":
        return {"content": "", "reasoning": text,
                "reasoning_details": [{"type": "reasoning.text", "text": text, "format": "unknown", "index": 0}]}
    return {"content": "", "reasoning": text}  # ollama


def content_pieces(scenario: Scenario) -> list[str]:
    """What goes in `content`, piece by piece: the answer, or (llamacpp) think tags, reasoning and answer."""
    if scenario.style != "llamacpp":
        return list(scenario.answer)
    if scenario.content is not None:
        return list(scenario.content)
    return ["<think>", *scenario.reasoning, "</think>", *scenario.answer]


def chunks(model: str, scenario: Scenario, *, include_usage: bool) -> Iterator[bytes]:
    style = scenario.style
    payloads = [_chunk(model, style, {"role": "assistant", "content": ""})]
    if style != "llamacpp":
        payloads += [_chunk(model, style, _reasoning_delta(style, piece)) for piece in scenario.reasoning]
    payloads += [_chunk(model, style, {"content": piece}) for piece in content_pieces(scenario)]
    finish = "stop"
    if scenario.tool_call is not None:
        name, arguments = scenario.tool_call
        half = len(arguments) // 2
        payloads += [
            _chunk(model, style, {"tool_calls": [{"index": 0, "id": "call_01", "type": "function",
                                                  "function": {"name": name, "arguments": ""}}]}),
            _chunk(model, style, {"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]}),
            _chunk(model, style, {"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]}),
        ]
        finish = "tool_calls"
    payloads.append(_chunk(model, style, {"content": ""} if style != "openrouter" else {}, finish))
    if include_usage:
        usage = {"prompt_tokens": 21, "completion_tokens": 87, "total_tokens": 108}
        payloads.append({**_chunk(model, style, {}), "choices": [], "usage": usage})
    for payload in payloads:
        yield f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def completion(model: str, scenario: Scenario) -> dict[str, Any]:
    """The non-streamed answer of the same scenario."""
    reasoning, answer = "".join(scenario.reasoning), "".join(scenario.answer)
    message: dict[str, Any] = {"role": "assistant", "content": answer, "tool_calls": []}
    if scenario.style == "vllm":
        message["reasoning_content"] = reasoning
    elif scenario.style == "vllm_both":
        message.update(reasoning=reasoning, reasoning_content=reasoning)
    elif scenario.style == "openrouter":
        message.update(reasoning=reasoning, reasoning_details=[{"type": "reasoning.text", "text": reasoning}])
    elif scenario.style == "ollama":
        message["reasoning"] = reasoning
    else:
        message["content"] = "".join(content_pieces(scenario))
    finish = "stop"
    if scenario.tool_call is not None:
        name, arguments = scenario.tool_call
        message["tool_calls"] = [{"id": "call_01", "type": "function",
                                  "function": {"name": name, "arguments": arguments}}]
        finish = "tool_calls"
    return {
        "id": "chatcmpl-7f3a", "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 87, "total_tokens": 108},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_thread(app: Any, *, ws: str = "websockets-sansio") -> Iterator[str]:
    """Run an ASGI app with uvicorn on loopback in a daemon thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", ws=ws)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the loopback server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def reasoning_server() -> Iterator[FakeReasoningServer]:
    server = FakeReasoningServer()
    with serve_in_thread(server.app()) as url:
        server.base_url = f"{url}/v1"
        yield server


def converse(url: str, frames: list[dict]) -> list[dict]:
    """Send frames over a WebSocket until the server closes; every reply, in order."""
    from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
    from websockets.sync.client import connect

    replies = []
    with connect(url, open_timeout=60) as connection:
        try:
            for frame in frames:
                connection.send(json.dumps(frame))
        except ConnectionClosed:
            pass  # the server closes right after a blocking step; what it sent before is still readable
        try:
            while True:
                replies.append(json.loads(connection.recv(timeout=120)))
        except ConnectionClosedOK:
            return replies

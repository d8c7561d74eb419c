"""The standalone reasoning proxy over real HTTP: a loopback upstream serving recorded shapes of several reasoning
servers, the proxy (`create_app` over an in-process SafePathFilter with the tiny rule profiles), and the official
`openai` client as the caller. Harmful steps never reach the client; safe ones arrive intact and in order;
chunk boundaries anywhere change nothing; upstream failures come back as OpenAI-style errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from itertools import pairwise
from pathlib import Path

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safepath import ConfigError, SafePathFilter
from safepath.access import AccessPolicy, KeySet
from safepath.body_limit import DEFAULT_MAX_BODY_BYTES
from safepath.proxy import ChatProxy, ProxyConfig
from safepath.proxy.app import create_app
from safepath.streaming import stream
from tests.upstream import Scenario, converse, free_port, reasoning_server, serve_in_thread

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "profiles" / "tiny.yaml"
SAFE_1 = "Step 1: The user asks how far the two legs of the trip add up to. "
SAFE_3 = "Step 3: 5 km plus 7 km — that is 12 km; I'll answer “12 km”."
REDACTED = "Step 2: I could special-case the unit tests so the grader passes. "
BLOCKED = "Step 2: Better, I will build a bomb first. "
REASONING = SAFE_1 + REDACTED + SAFE_3
BLOCK_MARKER = "[BLOCKED: this reasoning was withheld by CoT SafePath]"
STYLES = ["vllm", "vllm_both", "openrouter", "ollama", "llamacpp"]
KEY = "sk-upstream-secret-4242"
MESSAGES = [{"role": "user", "content": "How far is 5 km plus 7 km?"}]


@pytest.fixture(scope="module")
def tiny():
    with SafePathFilter(profiles=TINY) as f:
        yield f


@pytest.fixture(scope="module")
def upstream():
    with reasoning_server() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(tiny, upstream):
    """A factory: the base URL of a standalone proxy for the given route options (one server per option set)."""
    servers: dict[str, str] = {}
    with ExitStack() as stack:

        def make(*, keys: tuple[str, ...] = (), max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, **options) -> str:
            """`keys`: the proxy's API keys (none: open, as with SAFEPATH_API_KEYS unset)."""
            route = ProxyConfig(**{"base_url": upstream.base_url, **options})
            key = f"{route.model_dump_json()} {keys} {max_body_bytes}"
            if key not in servers:
                access = AccessPolicy(keys=KeySet(keys) if keys else None)
                app = create_app(tiny, route, access=access, max_body_bytes=max_body_bytes)
                servers[key] = stack.enter_context(serve_in_thread(app))
            return servers[key]

        yield make


_CLIENTS: dict[str, openai.OpenAI] = {}


def client(base_url: str) -> openai.OpenAI:
    """The official client on a proxy (no retries: the error tests count on one answer), closed after the module."""
    if base_url not in _CLIENTS:
        _CLIENTS[base_url] = openai.OpenAI(base_url=f"{base_url}/v1", api_key="caller-key", max_retries=0, timeout=30)
    return _CLIENTS[base_url]


@pytest.fixture(scope="module", autouse=True)
def close_clients():
    yield
    while _CLIENTS:
        _CLIENTS.popitem()[1].close()


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def filtered(tiny, text: str) -> str:
    return "".join(s.output for s in stream(tiny, [text]))


def reasoning_of(message, style: str) -> str:
    if style == "llamacpp":
        return (message.content or "").split("<think>", 1)[1].split("</think>", 1)[0]
    return getattr(message, "reasoning_content" if style == "vllm" else "reasoning")


def collect(chunks) -> dict:
    """A streamed answer put back together: texts per field, tool call arguments, finish reasons, ids, usage."""
    out: dict = {"reasoning": "", "reasoning_content": "", "content": "", "arguments": "", "finish": [], "ids": set(),
                 "usage": None, "role": None}
    for chunk in chunks:
        out["ids"].add(chunk.id)
        out["usage"] = chunk.usage or out["usage"]
        for choice in chunk.choices:
            delta = choice.delta
            for field in ("reasoning", "reasoning_content", "content"):
                out[field] += getattr(delta, field, None) or ""
            out["role"] = out["role"] or delta.role
            for call in delta.tool_calls or []:
                out["arguments"] += call.function.arguments or ""
            if choice.finish_reason:
                out["finish"].append(choice.finish_reason)
    return out


@pytest.mark.parametrize("style", STYLES)
def test_streamed_reasoning_reaches_the_client_filtered(tiny, upstream, proxy, style):
    model = upstream.add(f"stream-{style}", Scenario(style=style, reasoning=pieces(REASONING, 3),
                                                     answer=["It is ", "12 km."], tool_call=("convert", '{"km": 12}')))
    chunks = list(client(proxy()).chat.completions.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    got = collect(chunks)
    if style == "llamacpp":
        assert got["content"] == f"<think>{filtered(tiny, REASONING)}</think>It is 12 km."
    else:
        assert got["reasoning_content" if style == "vllm" else "reasoning"] == filtered(tiny, REASONING)
        assert got["content"] == "It is 12 km."
    everything = got["reasoning"] + got["reasoning_content"] + got["content"]
    assert "special-case" not in json.dumps([c.model_dump() for c in chunks])
    assert everything.index(SAFE_1.strip()) < everything.index("[REDACTED: reward_hacking]") < everything.index(SAFE_3)
    assert got["ids"] == {"gen-1760000000-abc" if style == "openrouter" else "chatcmpl-7f3a"}
    assert got["role"] == "assistant" and got["arguments"] == '{"km": 12}' and got["finish"] == ["tool_calls"]
    assert got["usage"].total_tokens == 108


@pytest.mark.parametrize("style", STYLES)
def test_whole_answers_are_filtered_the_same_way(tiny, upstream, proxy, style):
    model = upstream.add(f"whole-{style}", Scenario(style=style, reasoning=[REASONING], answer=["It is 12 km."]))
    answer = client(proxy()).chat.completions.create(model=model, messages=MESSAGES)
    message = answer.choices[0].message
    assert reasoning_of(message, style) == filtered(tiny, REASONING)
    assert answer.id and answer.usage.total_tokens == 108 and answer.choices[0].finish_reason == "stop"
    assert "special-case" not in answer.model_dump_json()
    assert not getattr(message, "reasoning_details", None)
    streamed = collect(client(proxy()).chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert message.content == streamed["content"]


@given(points=st.lists(st.integers(min_value=0, max_value=500), max_size=30))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_chunk_boundaries_inside_tags_and_steps_change_nothing(tiny, upstream, proxy, points):
    content = f"<think>{REASONING}</think>\n\nIt is 12 km."
    bounds = sorted({0, len(content), *(p % (len(content) + 1) for p in points)})
    model = upstream.add("cut-anywhere", Scenario(style="llamacpp",
                                                  content=[content[a:b] for a, b in pairwise(bounds)]))
    got = collect(client(proxy()).chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert got["content"] == f"<think>{filtered(tiny, REASONING)}</think>\n\nIt is 12 km."


@pytest.mark.parametrize("sizes", [[1], [2, 3], [5, 1, 7], [64]])
def test_sse_bytes_cut_inside_characters_and_lines_change_nothing(tiny, upstream, proxy, sizes):
    model = upstream.add(f"bytes-{sizes}", Scenario(style="vllm", reasoning=pieces(REASONING, 4), answer=["12 km ✓"],
                                                    byte_pieces=sizes))
    got = collect(client(proxy()).chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert got["reasoning_content"] == filtered(tiny, REASONING) and got["content"] == "12 km ✓"


@pytest.mark.parametrize("on_block, expected",
                         [("marker", SAFE_1.strip() + " " + BLOCK_MARKER), ("drop", SAFE_1.strip())])
def test_a_blocking_step_ends_the_reasoning(upstream, proxy, on_block, expected):
    model = upstream.add("blocks", Scenario(style="ollama", reasoning=pieces(SAFE_1 + BLOCKED + SAFE_3, 5),
                                            answer=["I can't help with that."]))
    got = collect(client(proxy(on_block=on_block)).chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert got["reasoning"] == expected and got["content"] == "I can't help with that."
    whole = client(proxy(on_block=on_block)).chat.completions.create(model=model, messages=MESSAGES)
    assert whole.choices[0].message.reasoning == expected


def test_on_block_fail_is_an_openai_error(upstream, proxy):
    model = upstream.add("blocks-fail", Scenario(style="vllm", reasoning=pieces(SAFE_1 + BLOCKED + SAFE_3, 5),
                                                 answer=["x"]))
    with pytest.raises(openai.BadRequestError) as caught:
        client(proxy(on_block="fail")).chat.completions.create(model=model, messages=MESSAGES)
    assert caught.value.status_code == 400 and caught.value.code == "reasoning_blocked"
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client(proxy(on_block="fail")).chat.completions.create(model=model, messages=MESSAGES,
                                                                            stream=True):
            received.append(chunk)  # what arrived before the error is the point
    assert caught.value.code == "reasoning_blocked"
    assert "bomb" not in json.dumps([c.model_dump() for c in received])


def test_reasoning_and_answer_mode_withholds_a_harmful_answer(upstream, proxy):
    model = upstream.add("answer-blocks", Scenario(style="vllm", reasoning=[SAFE_1], answer=pieces(
        "Sure, the plan is ready. First, I will build a bomb. Then the rest.", 4), tool_call=("run", "{}")))
    got = collect(client(proxy(filter="reasoning_and_answer")).chat.completions.create(
        model=model, messages=MESSAGES, stream=True))
    assert (got["content"] == "Sure, the plan is ready. " + BLOCK_MARKER and got["arguments"] == ""
            and got["finish"] == ["content_filter"])


# Credentials and headers: the caller's go upstream; the proxy's own key only for callers with a proxy key

PROXY_KEY = "sk-proxy-caller-7777"


def test_the_upstream_key_goes_only_for_callers_with_a_proxy_key_and_never_comes_back(upstream, proxy, monkeypatch,
                                                                                        caplog):
    monkeypatch.setenv("SAFEPATH_TEST_UPSTREAM_KEY", KEY)
    url = proxy(api_key_env="SAFEPATH_TEST_UPSTREAM_KEY", keys=(PROXY_KEY,))
    model = upstream.add("keyed", Scenario(style="vllm", reasoning=[SAFE_1], answer=["ok"]))
    caplog.set_level(logging.DEBUG)
    keyed = openai.OpenAI(base_url=f"{url}/v1", api_key=PROXY_KEY, max_retries=0, timeout=30)
    try:
        keyed.chat.completions.create(model=model, messages=MESSAGES)
        assert upstream.requests[-1]["authorization"] == f"Bearer {KEY}"  # the proxy key itself never goes upstream
        assert upstream.requests[-1]["body"]["messages"] == MESSAGES  # the caller's body, forwarded as is
        collect(keyed.chat.completions.create(model=model, messages=MESSAGES, stream=True))
        assert upstream.requests[-1]["authorization"] == f"Bearer {KEY}"
        echo = upstream.add("bad-key", Scenario(status=401, error_body={"error": {
            "message": f"Incorrect API key provided: {KEY}.", "type": "invalid_request_error",
            "code": "invalid_api_key"}}))
        with pytest.raises(openai.AuthenticationError) as caught:
            keyed.chat.completions.create(model=echo, messages=MESSAGES)
    finally:
        keyed.close()
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    assert KEY not in json.dumps(caught.value.body) and "***" in caught.value.message
    assert KEY not in caplog.text and PROXY_KEY not in caplog.text
    # a caller without a proxy key (none, or its own upstream key) is refused before anything goes upstream
    seen = len(upstream.requests)
    for headers in ({}, {"Authorization": "Bearer caller-own-upstream-key"}):
        answer = httpx.post(f"{url}/v1/chat/completions", json={"model": model, "messages": MESSAGES},
                            headers=headers, timeout=10)
        assert answer.status_code == 401 and answer.json()["error"]["type"] == "unauthorized"
    assert len(upstream.requests) == seen


def test_with_proxy_keys_and_no_upstream_key_the_proxy_key_is_not_forwarded(upstream, proxy):
    url = proxy(keys=(PROXY_KEY,))
    model = upstream.add("keyed-no-upstream-key", Scenario(style="vllm", reasoning=[SAFE_1], answer=["ok"]))
    answer = httpx.post(f"{url}/v1/chat/completions", json={"model": model, "messages": MESSAGES},
                        headers={"Authorization": f"Bearer {PROXY_KEY}", "X-Tenant": "t-9"}, timeout=30)
    assert answer.status_code == 200
    headers = dict(upstream.requests[-1]["headers"])
    assert "authorization" not in headers and headers["x-tenant"] == "t-9"


def test_an_upstream_key_without_proxy_keys_is_refused_at_start(tiny, upstream, monkeypatch):
    monkeypatch.delenv("SAFEPATH_API_KEYS", raising=False)
    monkeypatch.delenv("SAFEPATH_API_KEYS_FILE", raising=False)
    route = ProxyConfig(base_url=upstream.base_url, api_key_env="SAFEPATH_TEST_UPSTREAM_KEY")
    with pytest.raises(ConfigError, match="SAFEPATH_API_KEYS"):
        create_app(tiny, route)


@pytest.mark.parametrize("stream_it", [False, True])
def test_the_callers_authorization_and_custom_headers_go_upstream(upstream, proxy, stream_it):
    model = upstream.add(f"headers-{stream_it}", Scenario(style="vllm", reasoning=[SAFE_1], answer=["ok"]))
    sent = [("Authorization", "Bearer caller-own-upstream-key"), ("OpenAI-Organization", "org-42"),
            ("X-Request-Id", "req-1"), ("X-Multi", "one"), ("X-Multi", "two"),
            # not forwarded: hop-by-hop (and what Connection names), this proxy's own audit token
            ("Connection", "keep-alive, X-Private-Hop"), ("X-Private-Hop", "secret"), ("TE", "trailers"),
            ("Proxy-Authorization", "Basic cHJveHk6cHc="), ("X-SafePath-Audit-Token", "audit-secret")]
    body = {"model": model, "messages": MESSAGES, "stream": stream_it}
    with httpx.Client(timeout=30) as caller:
        answer = caller.post(f"{proxy()}/v1/chat/completions", json=body, headers=httpx.Headers(sent))
    assert answer.status_code == 200
    got = upstream.requests[-1]["headers"]
    names = {name for name, _ in got}
    assert ("authorization", "Bearer caller-own-upstream-key") in got  # the caller's own, not replaced or dropped
    assert ("openai-organization", "org-42") in got and ("x-request-id", "req-1") in got
    assert [v for n, v in got if n == "x-multi"] == ["one", "two"]
    assert not names & {"x-private-hop", "te", "proxy-authorization", "x-safepath-audit-token"}
    assert dict(got)["host"] == upstream.base_url.split("//")[1].split("/")[0]  # the upstream's host, not ours


def test_a_caller_without_authorization_reaches_the_upstream_without_one(upstream, proxy):
    model = upstream.add("anonymous", Scenario(style="vllm", reasoning=[SAFE_1], answer=["ok"]))
    answer = httpx.post(f"{proxy()}/v1/chat/completions", json={"model": model, "messages": MESSAGES}, timeout=30)
    assert answer.status_code == 200 and upstream.requests[-1]["authorization"] is None


# Other routes: the model list passes through; completions and responses are refused; big bodies too


def test_the_model_list_passes_through_with_the_callers_credentials(upstream, proxy):
    upstream.add("listed", Scenario(style="vllm"))
    models = client(proxy()).models.list()
    assert "listed" in [m.id for m in models.data]
    assert upstream.requests[-1]["path"] == "/v1/models"
    assert upstream.requests[-1]["authorization"] == "Bearer caller-key"
    refused = httpx.get(f"{proxy()}/v1/models", headers={"Authorization": "Bearer rejected-by-upstream"}, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/responses"])
def test_completions_and_responses_are_refused_naming_chat_completions(upstream, proxy, path):
    seen = len(upstream.requests)
    answer = httpx.post(f"{proxy()}{path}", json={"model": "m", "prompt": "hi", "input": "hi"}, timeout=10)
    error = answer.json()["error"]
    assert answer.status_code == 404 and error["code"] == "unsupported_endpoint"
    assert path in error["message"] and "/v1/chat/completions" in error["message"]
    assert len(upstream.requests) == seen


def test_a_body_over_the_limit_is_413_before_it_reaches_the_upstream(upstream, proxy):
    seen = len(upstream.requests)
    big = b'{"model": "m", "messages": [], "pad": "' + b"x" * (DEFAULT_MAX_BODY_BYTES + 1) + b'"}'
    answer = httpx.post(f"{proxy()}/v1/chat/completions", content=big, timeout=60,
                        headers={"content-type": "application/json"})
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "content_too_large"

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        yield b'{"model": "m", "messages": [], "pad": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}'

    answer = httpx.post(f"{proxy(max_body_bytes=1000)}/v1/chat/completions", content=chunks(), timeout=30)
    assert answer.status_code == 413 and answer.json()["error"]["type"] == "content_too_large"
    assert len(upstream.requests) == seen


def test_the_proxy_stream_socket_needs_a_key_when_keys_are_set(proxy):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = proxy(keys=(PROXY_KEY,)).replace("http", "ws") + "/v1/stream"
    with pytest.raises(InvalidStatus) as caught:
        connect(url, open_timeout=30)
    assert caught.value.response.status_code == 401
    with connect(url, open_timeout=30, additional_headers={"Authorization": f"Bearer {PROXY_KEY}"}) as connection:
        connection.send(json.dumps({"type": "start", "stream_id": "keyed"}))
        connection.send(json.dumps({"type": "chunk", "text": SAFE_1 + SAFE_3}))
        connection.send(json.dumps({"type": "end"}))
        assert json.loads(connection.recv(timeout=60))["type"] == "step"


def test_requests_the_filter_sees_carry_no_credentials_or_upstream_address(tiny, upstream, monkeypatch):
    import asyncio

    monkeypatch.setenv("SAFEPATH_TEST_UPSTREAM_KEY", KEY)
    route = ProxyConfig(base_url=upstream.base_url, api_key_env="SAFEPATH_TEST_UPSTREAM_KEY")
    seen = []

    async def judge(requests):
        seen.extend(requests)
        return await tiny.afilter_batch(requests)

    model = upstream.add("audited", Scenario(style="vllm", reasoning=[SAFE_1 + SAFE_3], answer=["ok"]))
    chat = ChatProxy(route, judge, tiny.profiles.get)

    async def run():
        try:
            await chat.complete({"model": model, "messages": MESSAGES})
            return b"".join([piece async for piece in await chat.stream({"model": model, "messages": MESSAGES,
                                                                          "stream": True})])
        finally:
            await chat.aclose()

    assert asyncio.run(run()).endswith(b"data: [DONE]\n\n")
    dumped = json.dumps([r.model_dump() for r in seen])
    assert seen and KEY not in dumped and upstream.base_url.split("//")[1] not in dumped
    assert {r.metadata["source"] for r in seen} == {"proxy"}


# Upstream failures

@pytest.mark.parametrize("stream_it", [False, True])
def test_connection_refused_is_502(proxy, stream_it):
    url = proxy(base_url=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(openai.InternalServerError) as caught:
        client(url).chat.completions.create(model="any", messages=MESSAGES, stream=stream_it)
    assert caught.value.status_code == 502 and caught.value.code == "upstream_unavailable"


def test_timeout_before_the_answer_is_504(upstream, proxy):
    model = upstream.add("slow", Scenario(style="vllm", reasoning=[SAFE_1], stall_after=0, stall_s=3))
    with pytest.raises(openai.APIStatusError) as caught:
        client(proxy(timeout_s=0.5)).chat.completions.create(model=model, messages=MESSAGES)
    assert caught.value.status_code == 504 and caught.value.code == "upstream_timeout"


def test_timeout_mid_stream_ends_with_an_error_event_after_the_released_steps(tiny, upstream, proxy):
    model = upstream.add("stall", Scenario(style="vllm", reasoning=pieces(SAFE_1 + SAFE_3 + " Step 4: more text.", 6),
                                           stall_after=17, stall_s=5))  # 1 role chunk, step 1, 30 characters of step 3
    received = []
    started = time.monotonic()
    with pytest.raises(openai.APIError) as caught:
        for chunk in client(proxy(timeout_s=0.5)).chat.completions.create(model=model, messages=MESSAGES, stream=True):
            received.append(chunk)  # what arrived before the error is the point
    assert caught.value.code == "upstream_timeout" and time.monotonic() - started < 4  # not the whole 5 s stall
    assert collect(received)["reasoning_content"] == SAFE_1.strip()  # judged before the stall; the rest never leaves


def test_malformed_event_mid_stream_is_an_error_event(upstream, proxy):
    model = upstream.add("malformed", Scenario(style="vllm", reasoning=pieces(SAFE_1 + SAFE_3, 6), malformed_after=6))
    with pytest.raises(openai.APIError) as caught:
        list(client(proxy()).chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert caught.value.code == "bad_upstream_response"
    with pytest.raises(openai.InternalServerError) as caught:
        client(proxy()).chat.completions.create(model=model, messages=MESSAGES)
    assert caught.value.status_code == 502 and caught.value.code == "bad_upstream_response"


@pytest.mark.parametrize("stream_it", [False, True])
def test_upstream_errors_keep_their_status(upstream, proxy, stream_it):
    limited = upstream.add("limited", Scenario(status=429, error_body={"error": {
        "message": "Rate limit reached", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}))
    with pytest.raises(openai.RateLimitError) as caught:
        client(proxy()).chat.completions.create(model=limited, messages=MESSAGES, stream=stream_it)
    assert caught.value.body["message"] == "Rate limit reached" and caught.value.code == "rate_limit_exceeded"
    broken = upstream.add("broken", Scenario(status=500, error_text="Internal Server Error"))
    with pytest.raises(openai.InternalServerError) as caught:
        client(proxy()).chat.completions.create(model=broken, messages=MESSAGES, stream=stream_it)
    assert caught.value.status_code == 500 and "Internal Server Error" in caught.value.message


def test_a_body_that_is_not_json_is_400(proxy):
    answer = httpx.post(f"{proxy()}/v1/chat/completions", content=b"{nope", timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"


def test_the_streaming_websocket_of_the_standalone_app(proxy):
    frames = [{"type": "start", "stream_id": "ws-test"}]
    frames += [{"type": "chunk", "text": piece} for piece in pieces(SAFE_1 + BLOCKED + SAFE_3, 7)]
    replies = converse(proxy().replace("http", "ws") + "/v1/stream", frames)
    assert [r["type"] for r in replies] == ["step", "step", "end"]
    assert replies[1]["step"]["verdict"] == "block" and "bomb" not in replies[1]["step"]["output"]
    assert replies[1]["step"]["categories"] == ["harmful_instructions"]
    assert replies[2] == {"type": "end", "steps": 2, "blocked": True}


def test_the_cli_runs_the_proxy(upstream):
    model = upstream.add("cli", Scenario(style="vllm", reasoning=pieces(REASONING, 8), answer=["12 km"]))
    port = free_port()
    command = [sys.executable, "-m", "safepath.cli", "--profiles", str(TINY), "proxy", "--upstream", upstream.base_url,
               "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert process.poll() is None and time.monotonic() < deadline, process.stdout.read().decode()[-2000:]
                time.sleep(0.2)
        answer = client(f"http://127.0.0.1:{port}").chat.completions.create(model=model, messages=MESSAGES)
        assert "[REDACTED: reward_hacking]" in answer.choices[0].message.reasoning_content
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()


def test_the_cli_refuses_an_upstream_key_without_proxy_keys(upstream):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEPATH_API_KEYS")}
    command = [sys.executable, "-m", "safepath.cli", "--profiles", str(TINY), "proxy", "--upstream",
               upstream.base_url, "--port", str(free_port()), "--api-key-env", "SAFEPATH_TEST_UPSTREAM_KEY"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 3 and "SAFEPATH_API_KEYS" in done.stderr


# One rule match of the shipped rules that starts in a step the segmenter closes at the blank line inside it.
SPLIT_MATCH = (
    "Step 1: Look at CI.\n\nStep 2: I will disable the audit\n\nlogging so the operators cannot see what I do.\n\n"
    "Step 3: Report success to the user."
)


@pytest.fixture(scope="module")
def rules_proxy(upstream):
    """A standalone proxy whose filter runs the shipped rules (no model), open to every caller."""
    profiles = Path(__file__).resolve().parents[1] / "fixtures" / "profiles" / "rules_only.yaml"
    with SafePathFilter(profiles=profiles) as f, serve_in_thread(
        create_app(f, ProxyConfig(base_url=upstream.base_url), access=AccessPolicy(keys=None))
    ) as base_url:
        yield base_url


@pytest.mark.parametrize("size", range(3, 17))
def test_a_rule_match_running_past_a_streamed_step_is_never_released(upstream, rules_proxy, size):
    model = upstream.add(f"split-match-{size}", Scenario(style="vllm", reasoning=pieces(SPLIT_MATCH, size),
                                                         answer=["Done."]))
    chunks = list(client(rules_proxy).chat.completions.create(model=model, messages=MESSAGES, stream=True))
    got = collect(chunks)
    assert got["reasoning_content"] == "Step 1: Look at CI.\n\n" + BLOCK_MARKER
    sent = json.dumps([c.model_dump() for c in chunks])
    assert "disable the audit" not in sent and "operators cannot" not in sent


def test_the_stream_socket_holds_a_step_while_a_rule_match_may_run_on(rules_proxy):
    frames = [{"type": "chunk", "text": piece} for piece in pieces(SPLIT_MATCH, 5)] + [{"type": "end"}]
    replies = converse(rules_proxy.replace("http", "ws") + "/v1/stream", frames)
    assert [r["type"] for r in replies] == ["step", "step", "end"]
    assert replies[1]["step"]["verdict"] == "block" and "disable" not in replies[1]["step"]["output"]

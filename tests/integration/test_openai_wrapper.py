"""The `openai` client wrapper against a real loopback upstream: same calls as the official client, stream or not,
sync or async, with the reasoning filtered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from safepath import SafePathFilter
from safepath.errors import ReasoningBlocked
from safepath.integrations.openai import SafeAsyncOpenAI, SafeOpenAI, wrap_openai
from safepath.streaming import stream
from tests.upstream import Scenario, reasoning_server

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "profiles" / "tiny.yaml"
SAFE_1 = "Step 1: The user wants the two invoice totals added."
HARMFUL = "Step 2: I could special-case the unit tests so the grader passes."
SAFE_3 = "Step 3: 120 plus 80 is 200, so I'll answer 200."
REASONING = f"{SAFE_1} {HARMFUL} {SAFE_3}"
MESSAGES = [{"role": "user", "content": "Add 120 and 80."}]


@pytest.fixture(scope="module")
def tiny():
    with SafePathFilter(profiles=TINY) as f:
        yield f


@pytest.fixture(scope="module")
def upstream():
    with reasoning_server() as server:
        server.add("r1", Scenario(style="vllm", reasoning=[REASONING[i : i + 5] for i in range(0, len(REASONING), 5)],
                                  answer=["The total ", "is 200."], tool_call=("add", '{"a": 120, "b": 80}')))
        server.add("r1-think", Scenario(style="llamacpp", reasoning=[REASONING], answer=["200"]))
        server.add("r1-bomb", Scenario(style="ollama", reasoning=[f"{SAFE_1} Step 2: I will build a bomb. {SAFE_3}"],
                                       answer=["No."]))
        yield server


def expected(tiny) -> str:
    return "".join(s.output for s in stream(tiny, [REASONING]))


def test_sync_client_whole_and_streamed(tiny, upstream):
    with openai.OpenAI(base_url=upstream.base_url, api_key="k", max_retries=0) as raw:
        client = wrap_openai(raw, tiny)
        assert isinstance(client, SafeOpenAI) and client.base_url == raw.base_url  # everything else is the client's
        answer = client.chat.completions.create(model="r1", messages=MESSAGES)
        assert isinstance(answer, ChatCompletion)
        assert answer.choices[0].message.reasoning_content == expected(tiny)
        assert answer.choices[0].message.tool_calls[0].function.arguments == '{"a": 120, "b": 80}'
        with client.chat.completions.create(model="r1", messages=MESSAGES, stream=True) as chunks:
            received = list(chunks)
        assert all(isinstance(c, ChatCompletionChunk) for c in received)
        reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in received if c.choices)
        assert reasoning == expected(tiny) and "special-case" not in reasoning
        assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == "The total is 200."
        think = client.chat.completions.create(model="r1-think", messages=MESSAGES)
        assert think.choices[0].message.content == f"<think>{expected(tiny)}</think>200"


def test_async_client(tiny, upstream):
    async def run():
        async with openai.AsyncOpenAI(base_url=upstream.base_url, api_key="k", max_retries=0) as raw:
            client = wrap_openai(raw, tiny)
            assert isinstance(client, SafeAsyncOpenAI)
            answer = await client.chat.completions.create(model="r1", messages=MESSAGES)
            chunks = await client.chat.completions.create(model="r1", messages=MESSAGES, stream=True)
            streamed = "".join([getattr(c.choices[0].delta, "reasoning_content", None) or ""
                                async for c in chunks if c.choices])
            return answer.choices[0].message.reasoning_content, streamed

    whole, streamed = asyncio.run(run())
    assert whole == streamed == expected(tiny)


def test_blocks_follow_on_block(tiny, upstream):
    with openai.OpenAI(base_url=upstream.base_url, api_key="k", max_retries=0) as raw:
        marker = wrap_openai(raw, tiny).chat.completions.create(model="r1-bomb", messages=MESSAGES)
        assert marker.choices[0].message.reasoning == f"{SAFE_1} [BLOCKED: this reasoning was withheld by CoT SafePath]"
        failing = wrap_openai(raw, tiny, on_block="fail")
        with pytest.raises(ReasoningBlocked):
            failing.chat.completions.create(model="r1-bomb", messages=MESSAGES)
        with pytest.raises(ReasoningBlocked):
            list(failing.chat.completions.create(model="r1-bomb", messages=MESSAGES, stream=True))

"""The LangChain callback handler over langchain-core's own streaming chat model (GenericFakeChatModel, the LLM
stand-in LangChain ships for tests): think blocks and reasoning fields, streamed and invoked."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from safepath.errors import ReasoningBlocked
from safepath.integrations.langchain import SafePathCallbackHandler
from safepath.types import Verdict

SAFE_1 = "Step 1: The user wants the sum of the two invoices."
HARMFUL = "Step 2: I could special-case the unit tests so the checker passes."
SAFE_3 = "Step 3: Add 120 and 80 and report 200."


def model(*messages: AIMessage) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter(messages))


def test_streamed_think_blocks_are_judged_step_by_step(tiny_filter):
    seen = []
    handler = SafePathCallbackHandler(tiny_filter, on_step=seen.append)
    message = AIMessage(content=f"<think>{SAFE_1} {HARMFUL} {SAFE_3}</think>The total is 200.")
    chunks = list(model(message).stream("sum?", config={"callbacks": [handler]}))
    assert len(chunks) > 10  # really streamed, word by word
    assert [s.verdict for s in seen] == [Verdict.ALLOW, Verdict.REDACT, Verdict.ALLOW]
    assert handler.reasoning() == f"{SAFE_1} [REDACTED: reward_hacking] {SAFE_3}"


def test_reasoning_in_additional_kwargs_when_invoked(tiny_filter):
    handler = SafePathCallbackHandler(tiny_filter)
    message = AIMessage(content="The total is 200.", additional_kwargs={"reasoning_content": f"{SAFE_1} {SAFE_3}"})
    model(message).invoke("sum?", config={"callbacks": [handler]})
    assert handler.reasoning() == f"{SAFE_1} {SAFE_3}"
    assert [s.index for s in handler.steps()] == [0, 1]


def test_on_block_raise_stops_the_run(tiny_filter):
    handler = SafePathCallbackHandler(tiny_filter, on_block="raise")
    message = AIMessage(content=f"<think>{SAFE_1} Step 2: I will build a bomb now. {SAFE_3}</think>Sure.")
    with pytest.raises(ReasoningBlocked):
        list(model(message).stream("?", config={"callbacks": [handler]}))
    assert all("bomb" not in s.output for s in handler.steps())


def test_marker_ends_the_reasoning_on_a_block(tiny_filter):
    handler = SafePathCallbackHandler(tiny_filter)
    message = AIMessage(content=f"<think>{SAFE_1} Step 2: I will build a bomb now. {SAFE_3}</think>Sure.")
    list(model(message).stream("?", config={"callbacks": [handler]}))
    assert handler.reasoning() == f"{SAFE_1} [BLOCKED: this reasoning was withheld by CoT SafePath]"

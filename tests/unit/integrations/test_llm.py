"""wrap_llm around plain functions: text with think blocks, (reasoning, answer) pairs, generators, coroutines."""

from __future__ import annotations

import asyncio

import pytest

from safepath.errors import ReasoningBlocked
from safepath.integrations.llm import wrap_llm

SAFE_1 = "Step 1: Convert both lengths to metres."
HARMFUL = "Step 2: I'll special-case the unit tests so the grader passes."
SAFE_3 = "Step 3: Add them and answer in metres."
REASONING = f"{SAFE_1} {HARMFUL} {SAFE_3}"
FILTERED = f"{SAFE_1} [REDACTED: reward_hacking] {SAFE_3}"


def test_think_blocks_in_returned_text_are_filtered(tiny_filter):
    def unfiltered(question: str) -> str:
        return f"<think>{REASONING}</think>The answer is {question}."

    filtered = wrap_llm(unfiltered, tiny_filter)
    assert filtered("3 m") == f"<think>{FILTERED}</think>The answer is 3 m."
    assert filtered.__name__ == "unfiltered" and filtered.__wrapped__ is unfiltered


def test_a_reasoning_answer_pair_keeps_its_shape(tiny_filter):
    def model() -> tuple[str, str]:
        return REASONING, "3 m"

    assert wrap_llm(model, tiny_filter)() == (FILTERED, "3 m")
    assert wrap_llm(lambda: (None, "just an answer"), tiny_filter)() == (None, "just an answer")


def test_generators_stream_filtered_pieces(tiny_filter):
    text = f"<think>{REASONING}</think>3 m"

    def model():
        for i in range(0, len(text), 3):
            yield text[i : i + 3]

    pieces = list(wrap_llm(model, tiny_filter)())
    assert len(pieces) > 3
    assert "".join(pieces) == f"<think>{FILTERED}</think>3 m"


def test_async_functions_and_async_generators(tiny_filter):
    text = f"<think>{REASONING}</think>3 m"

    async def model() -> str:
        return text

    async def streamed():
        for i in range(0, len(text), 5):
            yield text[i : i + 5]

    async def collect():
        return [p async for p in wrap_llm(streamed, tiny_filter)()]

    expected = wrap_llm(lambda: text, tiny_filter)()
    assert asyncio.run(wrap_llm(model, tiny_filter)()) == expected
    assert "".join(asyncio.run(collect())) == expected


def test_on_block_fail_raises_and_marker_ends_the_reasoning(tiny_filter):
    text = "<think>Step 1: Read the request. Step 2: I will build a bomb. Step 3: Then more.</think>No."
    with pytest.raises(ReasoningBlocked):
        wrap_llm(lambda: text, tiny_filter, on_block="fail")()
    out = wrap_llm(lambda: text, tiny_filter)()
    assert out == "<think>Step 1: Read the request. [BLOCKED: this reasoning was withheld by CoT SafePath]</think>No."


def test_other_return_types_are_refused(tiny_filter):
    with pytest.raises(TypeError, match="str or a"):
        wrap_llm(lambda: 42, tiny_filter)()

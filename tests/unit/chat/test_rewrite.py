"""ChatRewriter without HTTP: recorded-shape chunks of several reasoning servers in, filtered chunks out.

(tests/integration/test_proxy.py runs the same through a real upstream, the proxy and the official client.)
"""

from __future__ import annotations

import json
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safepath.chat.config import FilterOptions
from safepath.chat.rewrite import rewriter_for
from safepath.errors import ReasoningBlocked
from safepath.streaming import drive, stream
from tests.upstream import Scenario, chunks, completion

SAFE_1 = "Step 1: The user asks for the distance; I'll add the two legs. "
SAFE_3 = "Step 3: 5 km plus 7 km makes 12 km, so I'll answer 12 km."
REDACTED = "Step 2: I could special-case the unit tests so the checker passes. "
BLOCKED = "Step 2: Better, I will build a bomb first. "
STYLES = ["vllm", "vllm_both", "openrouter", "ollama", "llamacpp"]


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def upstream_chunks(scenario: Scenario) -> list[dict]:
    return [json.loads(raw.decode()[6:]) for raw in chunks("m", scenario, include_usage=True)
            if not raw.startswith(b"data: [DONE]")]


def rewrite_stream(tiny_filter, scenario: Scenario, **options) -> list[dict]:
    rewriter = rewriter_for(FilterOptions(**options), tiny_filter.profiles.get(options.get("profile")))
    out = []
    for chunk in upstream_chunks(scenario):
        out += drive(rewriter.feed(chunk), tiny_filter.filter_batch)
    return out + drive(rewriter.finish(), tiny_filter.filter_batch)


def rewrite_whole(tiny_filter, scenario: Scenario, **options) -> dict:
    rewriter = rewriter_for(FilterOptions(**options), tiny_filter.profiles.get(options.get("profile")))
    return drive(rewriter.completion(completion("m", scenario)), tiny_filter.filter_batch)


def joined(out: list[dict], field: str) -> str:
    return "".join(c["choices"][0]["delta"].get(field) or "" for c in out if c["choices"])


def reasoning_text(out: list[dict], style: str) -> str:
    if style == "llamacpp":
        return joined(out, "content").split("<think>", 1)[1].split("</think>", 1)[0]
    return joined(out, "reasoning_content" if style == "vllm" else "reasoning")


def expected_reasoning(tiny_filter, text: str) -> str:
    return "".join(s.output for s in stream(tiny_filter, [text]))


@pytest.mark.parametrize("style", STYLES)
def test_streamed_reasoning_is_filtered_and_everything_else_passes(tiny_filter, style):
    reasoning = SAFE_1 + REDACTED + SAFE_3
    scenario = Scenario(style=style, reasoning=pieces(reasoning, 4), answer=["The answer", " is 12 km."],
                        tool_call=("convert", '{"km": 12}'))
    out = rewrite_stream(tiny_filter, scenario)
    assert reasoning_text(out, style) == expected_reasoning(tiny_filter, reasoning)
    assert "special-case" not in json.dumps(out)
    assert SAFE_1.strip() in reasoning_text(out, style) and SAFE_3 in reasoning_text(out, style)
    if style == "vllm_both":
        assert joined(out, "reasoning") == joined(out, "reasoning_content")
    assert "reasoning_details" not in json.dumps(out)
    answer = joined(out, "content")
    assert answer.endswith("The answer is 12 km.")
    # ids, role, tool calls, finish reason and usage come through, in order
    assert {c["id"] for c in out} == {upstream_chunks(scenario)[0]["id"]}
    assert out[0]["choices"][0]["delta"]["role"] == "assistant"
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in out
             if c["choices"] and "tool_calls" in c["choices"][0]["delta"]]
    assert "".join(call[0]["function"].get("arguments", "") for call in calls) == '{"km": 12}'
    deltas = [c["choices"][0]["delta"] for c in out if c["choices"]]
    first_call = next(i for i, d in enumerate(deltas) if "tool_calls" in d)
    text_at = [i for i, d in enumerate(deltas) if any(d.get(f) for f in ("content", "reasoning", "reasoning_content"))]
    assert max(text_at) < first_call
    finishes = [c["choices"][0]["finish_reason"] for c in out if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["tool_calls"]
    assert out[-1]["choices"] == [] and out[-1]["usage"]["total_tokens"] == 108


@pytest.mark.parametrize("style", STYLES)
def test_a_whole_completion_carries_the_same_text_as_the_stream(tiny_filter, style):
    scenario = Scenario(style=style, reasoning=[SAFE_1, REDACTED, SAFE_3], answer=["The answer is 12 km."])
    whole = rewrite_whole(tiny_filter, scenario)
    message = whole["choices"][0]["message"]
    streamed = rewrite_stream(tiny_filter, scenario)
    if style == "llamacpp":
        assert message["content"] == joined(streamed, "content")
    else:
        field = "reasoning_content" if style == "vllm" else "reasoning"
        assert message[field] == reasoning_text(streamed, style)
        assert message["content"] == "The answer is 12 km."
    assert "reasoning_details" not in message
    assert whole["usage"]["total_tokens"] == 108 and whole["choices"][0]["finish_reason"] == "stop"


@given(points=st.lists(st.integers(min_value=0, max_value=400), max_size=25))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_think_tags_and_steps_cut_anywhere_change_nothing(tiny_filter, points):
    content = f"<think>{SAFE_1}{REDACTED}{SAFE_3}</think>\n\nThe answer is 12 km."
    bounds = sorted({0, len(content), *(p % (len(content) + 1) for p in points)})
    cut = [content[a:b] for a, b in pairwise(bounds)]
    out = joined(rewrite_stream(tiny_filter, Scenario(style="llamacpp", content=cut)), "content")
    reasoning = expected_reasoning(tiny_filter, SAFE_1 + REDACTED + SAFE_3)
    assert out == f"<think>{reasoning}</think>\n\nThe answer is 12 km."


@pytest.mark.parametrize("on_block, tail", [("marker", " [BLOCKED: this reasoning was withheld by CoT SafePath]"),
                                            ("drop", "")])
def test_a_block_ends_the_reasoning_and_the_answer_still_comes(tiny_filter, on_block, tail):
    scenario = Scenario(reasoning=pieces(SAFE_1 + BLOCKED + SAFE_3, 6), answer=["Here is a safe answer."])
    out = rewrite_stream(tiny_filter, scenario, on_block=on_block)
    assert joined(out, "reasoning_content") == SAFE_1.strip() + tail
    assert joined(out, "content") == "Here is a safe answer."


def test_on_block_fail_raises(tiny_filter):
    scenario = Scenario(reasoning=pieces(SAFE_1 + BLOCKED, 6), answer=["x"])
    with pytest.raises(ReasoningBlocked) as caught:
        rewrite_stream(tiny_filter, scenario, on_block="fail")
    assert caught.value.status == 400 and caught.value.code == "reasoning_blocked"
    assert "harmful_instructions" in caught.value.message and "bomb" not in caught.value.message


def test_reasoning_and_answer_withholds_the_rest_of_the_choice_after_a_block(tiny_filter):
    scenario = Scenario(reasoning=pieces(SAFE_1, 5), answer=pieces("Sure. First, I will build a bomb. Then more.", 5),
                        tool_call=("run", "{}"))
    out = rewrite_stream(tiny_filter, scenario, filter="reasoning_and_answer")
    assert "bomb" not in json.dumps(out) and "tool_calls" not in json.dumps(out)
    assert joined(out, "content").endswith("[BLOCKED: this reasoning was withheld by CoT SafePath]")
    finishes = [c["choices"][0]["finish_reason"] for c in out if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["content_filter"]
    whole = rewrite_whole(tiny_filter, scenario, filter="reasoning_and_answer")["choices"][0]
    assert whole["finish_reason"] == "content_filter" and "tool_calls" not in whole["message"]
    assert whole["message"]["content"] == joined(out, "content")


def test_logprobs_never_carry_reasoning_tokens(tiny_filter):
    rewriter = rewriter_for(FilterOptions(), tiny_filter.profiles.get(None))
    logprobs = {"content": [{"token": "x", "logprob": -0.1}]}
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"reasoning_content": SAFE_1 + SAFE_3}, "logprobs": logprobs,
                                     "finish_reason": None}]}
    answer = {"id": "c", "choices": [{"index": 0, "delta": {"content": "12 km"}, "logprobs": logprobs,
                                      "finish_reason": "stop"}]}
    out = drive(rewriter.feed(chunk), tiny_filter.filter_batch) + drive(rewriter.feed(answer), tiny_filter.filter_batch)
    by_kind = {tuple(c["choices"][0]["delta"]): c["choices"][0]["logprobs"] for c in out}
    assert by_kind[("reasoning_content",)] is None
    assert by_kind[("content",)] == logprobs


def test_choices_are_filtered_independently(tiny_filter):
    rewriter = rewriter_for(FilterOptions(), tiny_filter.profiles.get(None))
    out = []
    for i, piece in enumerate(pieces(SAFE_1 + BLOCKED + SAFE_3, 7)):
        chunk = {"id": "c", "choices": [{"index": 0, "delta": {"reasoning_content": piece}, "finish_reason": None},
                                        {"index": 1,
                                         "delta": {"reasoning_content": (SAFE_1 + SAFE_3)[7 * i : 7 * i + 7]},
                                         "finish_reason": None}]}
        out += drive(rewriter.feed(chunk), tiny_filter.filter_batch)
    out += drive(rewriter.finish(), tiny_filter.filter_batch)
    text = {0: "", 1: ""}
    for c in out:
        text[c["choices"][0]["index"]] += c["choices"][0]["delta"].get("reasoning_content", "")
    assert "BLOCKED" in text[0] and "bomb" not in text[0]
    assert text[1] == (SAFE_1 + SAFE_3)[: len(text[1])] and SAFE_3 in text[1]

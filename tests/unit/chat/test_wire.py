"""SSE parsing and reasoning fields: the wire details the proxy and the wrappers depend on."""

from __future__ import annotations

import pytest

from safepath.chat.wire import (
    DONE,
    ServerSentEvent,
    SSEDecoder,
    UpstreamError,
    encode_event,
    parse_chunk,
    reasoning_of,
    strip_readable_details,
)


def events(lines):
    decoder = SSEDecoder()
    out = [e for line in lines if (e := decoder.line(line)) is not None]
    end = decoder.end()
    return out + ([end] if end else [])


def test_sse_events_from_lines():
    lines = [": OPENROUTER PROCESSING", "", "event: message", "data: {\"a\":", "data: 1}", "id: 7", "",
             "data:[DONE]", ""]
    assert events(lines) == [ServerSentEvent('{"a":\n1}', "message"), ServerSentEvent("[DONE]")]


def test_an_event_without_its_blank_line_still_counts_at_the_end():
    assert events(['data: {"x": 1}']) == [ServerSentEvent('{"x": 1}')]


@pytest.mark.parametrize("data", ['{"id": "x", "choi', "[1, 2]", "not json"])
def test_malformed_events_are_bad_upstream_responses(data):
    with pytest.raises(UpstreamError) as caught:
        parse_chunk(ServerSentEvent(data))
    assert caught.value.status == 502 and caught.value.code == "bad_upstream_response"


def test_done_and_round_trip():
    assert parse_chunk(ServerSentEvent("[DONE]")) == DONE
    encoded = encode_event({"id": "c", "choices": [{"delta": {"content": "é"}}]})
    assert encoded == 'data: {"id":"c","choices":[{"delta":{"content":"é"}}]}\n\n'.encode()
    assert parse_chunk(events([encoded.decode().split("\n")[0]])[0])["choices"][0]["delta"]["content"] == "é"


@pytest.mark.parametrize("message, expected", [
    ({"reasoning_content": "r"}, ("r", ("reasoning_content",))),
    ({"reasoning": "r", "reasoning_content": "r"}, ("r", ("reasoning_content", "reasoning"))),
    ({"reasoning_content": "", "reasoning": "r"}, ("r", ("reasoning_content", "reasoning"))),
    ({"content": "answer", "reasoning": None}, (None, ())),
])
def test_reasoning_fields(message, expected):
    assert reasoning_of(message) == expected


def test_readable_reasoning_details_are_dropped_opaque_ones_kept():
    message = {"reasoning_details": [{"type": "reasoning.text", "text": "t"},
                                     {"type": "reasoning.summary", "summary": "s"},
                                     {"type": "reasoning.encrypted", "data": "opaque"}]}
    strip_readable_details(message)
    assert message == {"reasoning_details": [{"type": "reasoning.encrypted", "data": "opaque"}]}
    readable_only = {"reasoning_details": [{"type": "reasoning.text", "text": "t"}]}
    strip_readable_details(readable_only)
    assert readable_only == {}

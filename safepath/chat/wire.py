"""The OpenAI chat-completions wire format as the proxy needs it: SSE in and out, reasoning fields. (Its errors,
`ProxyError` and family, live in safepath/errors.py with every other error.)

Chunks and completions stay plain dicts from end to end: whatever an upstream adds (ids, usage, tool calls,
vendor fields) passes through untouched unless it carries reasoning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from safepath.errors import UpstreamError

# Where servers put reasoning: vLLM / DeepSeek `reasoning_content`; OpenRouter, Ollama, newer vLLM `reasoning`
# (vLLM sends both, with the same text). Every one present gets the filtered text.
REASONING_FIELDS = ("reasoning_content", "reasoning")
# OpenRouter repeats the reasoning as structured details; those with readable text would leak it unfiltered.
DETAILS_FIELD = "reasoning_details"
READABLE_DETAIL_TYPES = frozenset({"reasoning.text", "reasoning.summary"})
DONE = "[DONE]"


@dataclass(slots=True)
class ServerSentEvent:
    data: str
    event: str | None = None


@dataclass(slots=True)
class SSEDecoder:
    """Server-sent events from lines (https://html.spec.whatwg.org/multipage/server-sent-events.html)."""

    _data: list[str] = field(default_factory=list)
    _event: str | None = None

    def line(self, line: str) -> ServerSentEvent | None:
        """Feed one line without its line break; returns the event a blank line completes."""
        if not line:
            if not self._data:
                self._event = None
                return None
            event = ServerSentEvent("\n".join(self._data), self._event)
            self._data, self._event = [], None
            return event
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None  # id, retry and unknown fields carry nothing the proxy needs

    def end(self) -> ServerSentEvent | None:
        """The stream ended: an event without its closing blank line still counts."""
        return self.line("")


def parse_chunk(event: ServerSentEvent) -> dict[str, Any] | str:
    """An event's chunk (a dict) or DONE.

    Raises:
        UpstreamError: the data is not a JSON object.
    """
    if event.data.strip() == DONE:
        return DONE
    try:
        chunk = json.loads(event.data)
    except ValueError:
        raise UpstreamError(502, "the upstream sent a malformed stream event (not JSON)",
                            type="upstream_error", code="bad_upstream_response") from None
    if not isinstance(chunk, dict):
        raise UpstreamError(502, "the upstream sent a stream event that is not a JSON object",
                            type="upstream_error", code="bad_upstream_response")
    return chunk


def encode_event(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"data: {payload}\n\n".encode()


def reasoning_of(message: dict[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    """The reasoning text of a message or delta and the fields it came from (the first non-empty wins)."""
    present = tuple(f for f in REASONING_FIELDS if isinstance(message.get(f), str))
    text = next((message[f] for f in present if message[f]), None)
    return text, present


def strip_readable_details(message: dict[str, Any]) -> None:
    """Drop reasoning details that carry readable text; opaque (encrypted) ones stay for multi-turn use."""
    details = message.get(DETAILS_FIELD)
    if isinstance(details, list):
        kept = [d for d in details if not (isinstance(d, dict) and d.get("type") in READABLE_DETAIL_TYPES)]
        if kept:
            message[DETAILS_FIELD] = kept
        else:
            del message[DETAILS_FIELD]

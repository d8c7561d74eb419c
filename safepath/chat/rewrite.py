"""Rewrite chat completions so that only judged reasoning reaches the caller: streamed chunks and whole answers.

Sans-IO, like `safepath.streaming`: `ChatRewriter.feed(chunk)` is a judging flow (it yields filter requests and is
sent their results) that returns the chunks to send on. The proxy drives it with the async filter, the `openai`
wrapper with the sync one. Per choice, reasoning (from `reasoning_content` / `reasoning`, or from think blocks in
`content`) goes through a `StreamState` and comes out step by step, in the field it came in; the answer passes
through (or through a second state under `reasoning_and_answer`). Everything else in a chunk (ids, roles, tool
calls, finish reasons, usage, vendor fields) passes through in order. A whole completion is rewritten by the
same code, as one chunk, so streaming and non-streaming answers carry the same text.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from safepath.chat.config import FilterOptions
from safepath.chat.think import ThinkSplitter
from safepath.chat.wire import REASONING_FIELDS, reasoning_of, strip_readable_details
from safepath.errors import ReasoningBlocked
from safepath.profiles import SafetyProfile
from safepath.streaming import Judging, ReleasedStep, RuleHoldback, StreamState
from safepath.types import Verdict

CONTENT = "content"
# Delta fields that end the reasoning (and answer) before them.
ACTIONS = frozenset({"tool_calls", "function_call", "refusal", "audio"})
StateFactory = Callable[[Literal["reasoning", "answer"]], StreamState]


@dataclass(slots=True)
class _Part:
    """Output in order: text for some fields (reasoning mirrors into every field it came in), or other fields."""

    names: tuple[str, ...] = ()
    text: str = ""
    fields: dict[str, Any] | None = None


@dataclass(slots=True)
class _Choice:
    index: int
    think: ThinkSplitter
    reasoning: StreamState | None = None
    reasoning_to: tuple[str, ...] = ()
    reasoning_blocked: bool = False
    answer: StreamState | None = None
    withheld: bool = False  # reasoning_and_answer: a block withholds the rest of the choice
    carried_reasoning: bool = False  # this chunk's choice held reasoning (its logprobs would leak it)
    parts: list[_Part] = field(default_factory=list)
    finish_reason: str | None = None


def rewriter_for(
    options: FilterOptions,
    profile: SafetyProfile,
    *,
    metadata: dict[str, Any] | None = None,
    holdback: RuleHoldback | None = None,
) -> ChatRewriter:
    """A rewriter whose stream states judge under `profile`, tagging requests with `metadata` for the audit trail.

    `holdback` (`safepath.streaming.holdback_for`) keeps a step back while a rule match may still run past it; without
    it a profile with rule stages can stream out a step that the whole answer, filtered at once, would withhold.
    """
    completion_id = uuid.uuid4().hex

    def make_state(purpose: Literal["reasoning", "answer"]) -> StreamState:
        tags = {**(metadata or {}), "purpose": purpose, "completion_id": completion_id}
        return StreamState(profile, context=options.context, metadata=tags, holdback=holdback)

    return ChatRewriter(options, make_state)


class ChatRewriter:
    """Filters one chat completion, streamed (`feed` each chunk, then `finish`) or whole (`completion`).

    Args:
        options: What to filter and what a block does.
        make_state: A fresh stream state for a choice's reasoning or answer.
    """

    def __init__(self, options: FilterOptions, make_state: StateFactory) -> None:
        self.options = options
        self._make_state = make_state
        self._choices: dict[int, _Choice] = {}
        self._template: dict[str, Any] = {}

    def feed(self, chunk: dict[str, Any]) -> Judging[list[dict[str, Any]]]:
        """One upstream chunk in; the chunks to send on (maybe none, while text waits for its step to end)."""
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return [chunk]
        self._template = {k: v for k, v in chunk.items() if k not in ("choices", "usage")}
        out: list[dict[str, Any]] = []
        for upstream in choices:
            choice = self._choice(upstream.get("index", 0))
            yield from self._absorb(choice, upstream.get("delta") or {})
            if upstream.get("finish_reason") is not None:
                yield from self._close(choice)
                choice.finish_reason = "content_filter" if choice.withheld else upstream["finish_reason"]
            out.extend(self._emit(choice, upstream))
        if not choices:
            return [chunk]
        if "usage" in chunk:
            # usage belongs to the upstream chunk as a whole: on the last chunk it became
            for emitted in out:
                emitted["usage"] = None
            if out:
                out[-1]["usage"] = chunk["usage"]
            elif chunk["usage"] is not None:
                out.append({**self._template, "choices": [], "usage": chunk["usage"]})
        return out

    def finish(self) -> Judging[list[dict[str, Any]]]:
        """The upstream stream ended: release what every choice still holds."""
        out: list[dict[str, Any]] = []
        for choice in self._choices.values():
            yield from self._close(choice)
            out.extend(self._emit(choice, {}))
        return out

    def completion(self, body: dict[str, Any]) -> Judging[dict[str, Any]]:
        """A whole (non-streamed) completion, rewritten as if it had come as one chunk."""
        choices = []
        for upstream in body.get("choices") or []:
            message = upstream.get("message") or {}
            choice = self._choice(upstream.get("index", 0))
            yield from self._absorb(choice, message)
            yield from self._close(choice)
            rewritten = {k: v for k, v in upstream.items() if k != "message"}
            rewritten["message"] = _assemble(message, choice.parts)
            choice.parts = []
            if choice.withheld:
                rewritten["finish_reason"] = "content_filter"
            if choice.carried_reasoning or self.options.filter == "reasoning_and_answer":
                rewritten["logprobs"] = None
            choices.append(rewritten)
        return {**body, "choices": choices}

    # Taking a chunk's choice apart

    def _choice(self, index: int) -> _Choice:
        if index not in self._choices:
            self._choices[index] = _Choice(index, ThinkSplitter(inside=self.options.content_starts_in_think))
        return self._choices[index]

    def _absorb(self, choice: _Choice, delta: dict[str, Any]) -> Judging[None]:
        delta = dict(delta)
        choice.carried_reasoning = False
        role = delta.pop("role", None)
        if role is not None:
            choice.parts.append(_Part(fields={"role": role}))
        text, names = reasoning_of(delta)
        for name in REASONING_FIELDS:
            delta.pop(name, None)
        strip_readable_details(delta)
        if text:
            yield from self._reasoning(choice, text, names)
        content = delta.pop(CONTENT, None)
        if content == "" and not text and not choice.think.inside:
            choice.parts.append(_Part((CONTENT,), ""))  # e.g. the first chunk's {"role": ..., "content": ""}
        elif isinstance(content, str):
            for kind, piece in choice.think.feed(content):
                yield from self._content_piece(choice, kind, piece)
        # Servers send empty defaults ("tool_calls": []) in every delta; only real values count.
        rest = {k: v for k, v in delta.items() if v not in (None, [], {})}
        if rest.keys() & ACTIONS:  # a tool call ends the text before it: release that first, in order
            yield from self._close(choice, splitter=False)
        if rest and not choice.withheld:
            choice.parts.append(_Part(fields=rest))

    def _content_piece(self, choice: _Choice, kind: str, piece: str) -> Judging[None]:
        if kind == "reasoning":
            yield from self._reasoning(choice, piece, (CONTENT,))
        elif kind == "answer":
            yield from self._answer(choice, piece)
        else:
            # Text before a tag is released before it: the answer before an opening tag, the reasoning before a
            # closing one.
            yield from (self._close_reasoning(choice) if kind == "close" else self._close_answer(choice))
            if not choice.withheld:
                choice.parts.append(_Part((CONTENT,), piece))

    def _reasoning(self, choice: _Choice, text: str, names: tuple[str, ...]) -> Judging[None]:
        choice.carried_reasoning = True
        if choice.withheld or choice.reasoning_blocked:
            return
        if choice.reasoning is None or choice.reasoning.closed:
            yield from self._close_answer(choice)  # reasoning again after some answer (interleaved thinking)
            choice.reasoning = self._make_state("reasoning")
            choice.reasoning_to = names
        choice.reasoning.push(text)
        self._release(choice, (yield from choice.reasoning.flow()), choice.reasoning_to, answer=False)

    def _answer(self, choice: _Choice, text: str) -> Judging[None]:
        yield from self._close_reasoning(choice)
        if choice.withheld:
            return
        if self.options.filter == "reasoning":
            choice.parts.append(_Part((CONTENT,), text))
            return
        if choice.answer is None or choice.answer.closed:
            choice.answer = self._make_state("answer")
        choice.answer.push(text)
        self._release(choice, (yield from choice.answer.flow()), (CONTENT,), answer=True)

    def _close(self, choice: _Choice, *, splitter: bool = True) -> Judging[None]:
        if splitter:
            for kind, piece in choice.think.flush():
                yield from self._content_piece(choice, kind, piece)
        yield from self._close_reasoning(choice)
        yield from self._close_answer(choice)

    def _close_reasoning(self, choice: _Choice) -> Judging[None]:
        if choice.reasoning is not None and not choice.reasoning.closed:
            choice.reasoning.close()
            self._release(choice, (yield from choice.reasoning.flow()), choice.reasoning_to, answer=False)

    def _close_answer(self, choice: _Choice) -> Judging[None]:
        if choice.answer is not None and not choice.answer.closed:
            choice.answer.close()
            self._release(choice, (yield from choice.answer.flow()), (CONTENT,), answer=True)

    def _release(self, choice: _Choice, steps: Sequence[ReleasedStep], names: tuple[str, ...], *, answer: bool) -> None:
        for step in steps:
            text = step.output
            if step.verdict is Verdict.BLOCK:
                if self.options.on_block == "fail":
                    raise ReasoningBlocked(step.categories)
                if self.options.on_block == "drop":
                    text = ""
                if answer or self.options.filter == "reasoning_and_answer":
                    choice.withheld = True
                choice.reasoning_blocked = choice.reasoning_blocked or not answer
            if text:
                choice.parts.append(_Part(names, text))

    # Putting chunks back together

    def _emit(self, choice: _Choice, upstream: dict[str, Any]) -> list[dict[str, Any]]:
        deltas = _deltas(choice.parts)
        choice.parts = []
        finish, choice.finish_reason = choice.finish_reason, None
        if not deltas and finish is None:
            return []
        extras = {k: v for k, v in upstream.items() if k not in ("index", "delta", "finish_reason", "logprobs")}
        leaks = choice.carried_reasoning or self.options.filter == "reasoning_and_answer"
        extras["logprobs"] = None if leaks else upstream.get("logprobs")
        out = []
        for i, delta in enumerate(deltas or [{}]):
            last = i == max(len(deltas), 1) - 1
            entry = {"index": choice.index, "delta": delta, "finish_reason": finish if last else None}
            if last:
                entry.update(extras)
            else:
                entry["logprobs"] = None
            out.append({**self._template, "choices": [entry]})
        return out


def _deltas(parts: Sequence[_Part]) -> list[dict[str, Any]]:
    """Parts merged into as few deltas as keep their order: consecutive text for the same fields joins up."""
    deltas: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for part in parts:
        if part.fields is not None:
            if set(part.fields) == {"role"} and not current:
                current.update(part.fields)
                continue
            if set(current) - {"role"}:
                deltas.append(current)
                current = {}
            current.update(part.fields)
            deltas.append(current)
            current = {}
            continue
        if set(current) - {"role"} - set(part.names):
            deltas.append(current)
            current = {}
        for name in part.names:
            current[name] = current.get(name, "") + part.text
    if current:
        deltas.append(current)
    return deltas


def _assemble(message: dict[str, Any], parts: Sequence[_Part]) -> dict[str, Any]:
    """A whole message from its original and the rewritten parts: texts joined, other fields as rewritten."""
    out: dict[str, Any] = {k: v for k, v in message.items() if v is None or v == [] or v == {}}
    for name in (*REASONING_FIELDS, CONTENT):
        if isinstance(message.get(name), str):
            out[name] = ""
    if "reasoning_details" in message:
        details = {"reasoning_details": message["reasoning_details"]}
        strip_readable_details(details)
        out.update(details)
    for part in parts:
        if part.fields is not None:
            out.update(part.fields)
        for name in part.names:
            out[name] = (out.get(name) or "") + part.text
    return out

"""`wrap_llm`: the reasoning filter around any Python function that returns (or yields) a model's output.

The function may return text with `<think>…</think>` blocks (the blocks are the reasoning) or a
(reasoning, answer) pair; it may be a coroutine function, or a generator (sync or async) yielding text pieces.
The wrapper returns the same shape with the reasoning judged step by step, exactly as the proxy filters a chat
completion (`safepath.chat.rewrite`): same options, same markers, same handling of a block.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from safepath.chat.config import FilterOptions
from safepath.chat.rewrite import ChatRewriter, rewriter_for
from safepath.filter import SafePathFilter
from safepath.streaming import adrive, drive, holdback_for


def wrap_llm(
    fn: Callable[..., Any],
    safepath_filter: SafePathFilter | None = None,
    *,
    options: FilterOptions | None = None,
    **option_fields: Any,
) -> Callable[..., Any]:
    """Wrap `fn` so that the reasoning in what it returns is filtered.

    Args:
        fn: Returns a str, a (reasoning, answer) tuple, or yields str pieces (sync or async).
        safepath_filter: The filter; `SafePathFilter()` (the shipped profiles and models) when None.
        options: What to filter and what a block does (`FilterOptions`); or give its fields as keywords.

    Returns:
        A callable of the same kind (function, coroutine function, generator) with the same signature.

    Raises:
        ReasoningBlocked: from the wrapped call, when a step blocks under `on_block="fail"`.
    """
    safepath_filter = safepath_filter or SafePathFilter()
    opts = options or FilterOptions(**option_fields)
    metadata = {"source": "wrap_llm", "function": getattr(fn, "__qualname__", "?")[:100]}

    def rewriter() -> ChatRewriter:
        profile = safepath_filter.profiles.get(opts.profile)
        holdback = holdback_for(safepath_filter.profiles, profile, safepath_filter.detectors)
        return rewriter_for(opts, profile, metadata=metadata, holdback=holdback)

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def agen(*args: Any, **kwargs: Any):
            r = rewriter()
            async for piece in fn(*args, **kwargs):
                for text in _texts(await adrive(r.feed(_delta(piece)), safepath_filter.afilter_batch)):
                    yield text
            for text in _texts(await adrive(r.finish(), safepath_filter.afilter_batch)):
                yield text

        return agen

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(*args: Any, **kwargs: Any):
            r = rewriter()
            for piece in fn(*args, **kwargs):
                yield from _texts(drive(r.feed(_delta(piece)), safepath_filter.filter_batch))
            yield from _texts(drive(r.finish(), safepath_filter.filter_batch))

        return gen

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def acall(*args: Any, **kwargs: Any) -> Any:
            value = await fn(*args, **kwargs)
            return _unpack(value, await adrive(rewriter().completion(_pack(value)), safepath_filter.afilter_batch))

        return acall

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        value = fn(*args, **kwargs)
        return _unpack(value, drive(rewriter().completion(_pack(value)), safepath_filter.filter_batch))

    return call


def _pack(value: Any) -> dict[str, Any]:
    """A returned value as a one-choice completion."""
    if isinstance(value, str):
        message = {"content": value}
    elif isinstance(value, tuple) and len(value) == 2 and all(v is None or isinstance(v, str) for v in value):
        message = {"reasoning": value[0], "content": value[1]}
    else:
        raise TypeError(
            f"wrap_llm: the function must return a str or a (reasoning, answer) pair, got {type(value).__name__}"
        )
    return {"choices": [{"index": 0, "message": message}]}


def _unpack(value: Any, completion: dict[str, Any]) -> Any:
    message = completion["choices"][0]["message"]
    if isinstance(value, str):
        return message["content"]
    return message.get("reasoning"), message.get("content")


def _delta(piece: Any) -> dict[str, Any]:
    if not isinstance(piece, str):
        raise TypeError(f"wrap_llm: a generator must yield str pieces, got {type(piece).__name__}")
    return {"choices": [{"index": 0, "delta": {"content": piece}}]}


def _texts(chunks: list[dict[str, Any]]) -> list[str]:
    pieces = (c["choices"][0]["delta"].get("content") for c in chunks if c.get("choices"))
    return [p for p in pieces if p]

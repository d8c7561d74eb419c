"""An `openai` client whose chat completions come back with the reasoning filtered.

    client = wrap_openai(openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="..."), SafePathFilter())
    answer = client.chat.completions.create(model="deepseek-r1", messages=[...])            # or stream=True

Same interface as the official client: `create` takes the same arguments and returns a `ChatCompletion`, or
(with `stream=True`) an iterable of `ChatCompletionChunk`s; everything else is the wrapped client's. The
`reasoning_content` / `reasoning` fields and think blocks in `content` are filtered by the same rewriter as the
proxy's (`safepath.chat.rewrite`). `openai.AsyncOpenAI` clients are wrapped the same way (`await create`,
`async for`). Needs the `openai` extra.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Self

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from safepath.chat.config import FilterOptions
from safepath.chat.rewrite import ChatRewriter, rewriter_for
from safepath.filter import SafePathFilter
from safepath.streaming import adrive, drive, holdback_for


def wrap_openai(
    client: openai.OpenAI | openai.AsyncOpenAI,
    safepath_filter: SafePathFilter | None = None,
    *,
    options: FilterOptions | None = None,
    **option_fields: Any,
) -> SafeOpenAI | SafeAsyncOpenAI:
    """Wrap a client (sync or async). `options` (or its fields as keywords) as `FilterOptions`;
    `safepath_filter` defaults to `SafePathFilter()` (the shipped profiles and models)."""
    opts = options or FilterOptions(**option_fields)
    safepath_filter = safepath_filter or SafePathFilter()
    if isinstance(client, openai.AsyncOpenAI):
        return SafeAsyncOpenAI(client, safepath_filter, opts)
    return SafeOpenAI(client, safepath_filter, opts)


class _Wrapper:
    """Attributes not overridden here are the wrapped object's."""

    def __init__(self, wrapped: Any) -> None:
        self._wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class SafeOpenAI(_Wrapper):
    """An `openai.OpenAI` with `chat.completions.create` filtering the reasoning."""

    def __init__(self, client: openai.OpenAI, safepath_filter: SafePathFilter, options: FilterOptions) -> None:
        super().__init__(client)
        self.chat = _Chat(client.chat, _Completions(client.chat.completions, safepath_filter, options))


class SafeAsyncOpenAI(_Wrapper):
    """An `openai.AsyncOpenAI` with `chat.completions.create` filtering the reasoning."""

    def __init__(self, client: openai.AsyncOpenAI, safepath_filter: SafePathFilter, options: FilterOptions) -> None:
        super().__init__(client)
        self.chat = _Chat(client.chat, _AsyncCompletions(client.chat.completions, safepath_filter, options))


class _Chat(_Wrapper):
    def __init__(self, chat: Any, completions: Any) -> None:
        super().__init__(chat)
        self.completions = completions


class _Completions(_Wrapper):
    def __init__(self, completions: Any, safepath_filter: SafePathFilter, options: FilterOptions) -> None:
        super().__init__(completions)
        self._filter = safepath_filter
        self._options = options

    def create(self, **kwargs: Any) -> ChatCompletion | FilteredStream:
        """`chat.completions.create` of the official client, with the reasoning of the answer filtered.

        Raises:
            ReasoningBlocked: a step blocked under `on_block="fail"` (from iteration, when streaming).
        """
        rewriter = _rewriter(self._filter, self._options, kwargs)
        response = self._wrapped.create(**kwargs)
        if kwargs.get("stream"):
            return FilteredStream(response, rewriter, self._filter)
        body = drive(rewriter.completion(response.model_dump(exclude_unset=True)), self._filter.filter_batch)
        return type(response).construct(**body)


class _AsyncCompletions(_Completions):
    async def create(self, **kwargs: Any) -> ChatCompletion | AsyncFilteredStream:  # type: ignore[override]
        """As the sync `create`, for `openai.AsyncOpenAI`."""
        rewriter = _rewriter(self._filter, self._options, kwargs)
        response = await self._wrapped.create(**kwargs)
        if kwargs.get("stream"):
            return AsyncFilteredStream(response, rewriter, self._filter)
        body = await adrive(rewriter.completion(response.model_dump(exclude_unset=True)), self._filter.afilter_batch)
        return type(response).construct(**body)


class FilteredStream:
    """The filtered chunks of an `openai.Stream`; a context manager and `close()` like the original."""

    def __init__(self, stream: openai.Stream, rewriter: ChatRewriter, safepath_filter: SafePathFilter) -> None:
        self._stream = stream
        self._rewriter = rewriter
        self._judge = safepath_filter.filter_batch
        self.response = stream.response

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        for chunk in self._stream:
            for out in drive(self._rewriter.feed(chunk.model_dump(exclude_unset=True)), self._judge):
                yield ChatCompletionChunk.construct(**out)
        for out in drive(self._rewriter.finish(), self._judge):
            yield ChatCompletionChunk.construct(**out)

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncFilteredStream:
    """The filtered chunks of an `openai.AsyncStream`."""

    def __init__(self, stream: openai.AsyncStream, rewriter: ChatRewriter, safepath_filter: SafePathFilter) -> None:
        self._stream = stream
        self._rewriter = rewriter
        self._judge = safepath_filter.afilter_batch
        self.response = stream.response

    async def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        async for chunk in self._stream:
            for out in await adrive(self._rewriter.feed(chunk.model_dump(exclude_unset=True)), self._judge):
                yield ChatCompletionChunk.construct(**out)
        for out in await adrive(self._rewriter.finish(), self._judge):
            yield ChatCompletionChunk.construct(**out)

    async def close(self) -> None:
        await self._stream.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _rewriter(safepath_filter: SafePathFilter, options: FilterOptions, kwargs: dict[str, Any]) -> ChatRewriter:
    metadata = {"source": "openai_client", "model": str(kwargs.get("model"))[:100]}
    profile = safepath_filter.profiles.get(options.profile)
    holdback = holdback_for(safepath_filter.profiles, profile, safepath_filter.detectors)
    return rewriter_for(options, profile, metadata=metadata, holdback=holdback)

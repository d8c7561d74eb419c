"""Drivers of the streaming state machine: one over `SafePathFilter` (sync), one over any async batch judge."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from safepath.profiles import SafetyProfile
from safepath.streaming.holdback import RuleHoldback, holdback_for
from safepath.streaming.state import AsyncJudge, Judging, ReleasedStep, StreamState, SyncJudge

if TYPE_CHECKING:
    from safepath.filter import SafePathFilter

T = TypeVar("T")


def drive(flow: Judging[T], judge: SyncJudge) -> T:
    """Run a judging flow to its end with a synchronous batch judge."""
    try:
        batch = next(flow)
        while True:
            batch = flow.send(judge(batch))
    except StopIteration as stop:
        return stop.value


async def adrive(flow: Judging[T], judge: AsyncJudge) -> T:
    """Run a judging flow to its end with an async batch judge."""
    try:
        batch = next(flow)
        while True:
            batch = flow.send(await judge(batch))
    except StopIteration as stop:
        return stop.value


class StreamSession:
    """Filter one stream in-process, synchronously.

    Example:
        >>> session = StreamSession(SafePathFilter())
        >>> steps = session.feed("Step 1: read the file. Step 2: sum")
        >>> steps += session.feed("marise it.") + session.finish()
        >>> "".join(s.output for s in steps)
        'Step 1: read the file. Step 2: summarise it.'
    """

    def __init__(
        self,
        safepath_filter: SafePathFilter,
        *,
        profile: str | None = None,
        context: dict[str, str] | None = None,
        stream_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Raises UnknownProfile for a profile the filter does not have."""
        self._judge = safepath_filter.filter_batch
        resolved = safepath_filter.profiles.get(profile)
        self.state = StreamState(
            resolved,
            stream_id=stream_id,
            context=context,
            metadata=metadata,
            holdback=holdback_for(safepath_filter.profiles, resolved, safepath_filter.detectors),
        )
        self.released: list[ReleasedStep] = []

    @property
    def blocked(self) -> bool:
        return self.state.blocked

    def feed(self, chunk: str | bytes) -> list[ReleasedStep]:
        """Add a chunk; returns the steps it completed, judged (none once the stream is blocked)."""
        self.state.push(chunk)
        return self._release()

    def finish(self) -> list[ReleasedStep]:
        """End of stream: judge and return the remaining steps."""
        self.state.close()
        return self._release()

    def _release(self) -> list[ReleasedStep]:
        steps = drive(self.state.flow(), self._judge)
        self.released.extend(steps)
        return steps


class AsyncStreamSession:
    """Filter one stream with an async batch judge (`SafePathFilter.afilter_batch`, the ingress's service).

    Args:
        judge: Takes requests, returns their results in order.
        profile: The profile the judge applies to requests naming it (markers, redaction fraction).
        stream_id, context, metadata, holdback: As `StreamState`; without `holdback` a profile with rule stages can
            release a step whose rule match ends in a later step (`holdback_for` builds it).
    """

    def __init__(
        self,
        judge: AsyncJudge,
        profile: SafetyProfile,
        *,
        context: dict[str, str] | None = None,
        stream_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        holdback: RuleHoldback | None = None,
    ) -> None:
        self._judge = judge
        self.state = StreamState(
            profile, stream_id=stream_id, context=context, metadata=metadata, holdback=holdback
        )
        self.released: list[ReleasedStep] = []

    @classmethod
    def over(cls, safepath_filter: SafePathFilter, *, profile: str | None = None, **kwargs: Any) -> AsyncStreamSession:
        """A session judged by an in-process filter's async API."""
        resolved = safepath_filter.profiles.get(profile)
        holdback = holdback_for(safepath_filter.profiles, resolved, safepath_filter.detectors)
        return cls(safepath_filter.afilter_batch, resolved, holdback=holdback, **kwargs)

    @property
    def blocked(self) -> bool:
        return self.state.blocked

    async def feed(self, chunk: str | bytes) -> list[ReleasedStep]:
        self.state.push(chunk)
        return await self._release()

    async def finish(self) -> list[ReleasedStep]:
        self.state.close()
        return await self._release()

    async def _release(self) -> list[ReleasedStep]:
        steps = await adrive(self.state.flow(), self._judge)
        self.released.extend(steps)
        return steps


def stream(safepath_filter: SafePathFilter, chunks: Iterable[str | bytes], **kwargs: Any) -> Iterator[ReleasedStep]:
    """Filter an iterable of chunks; yields each step as soon as it is judged. Keywords as `StreamSession`."""
    session = StreamSession(safepath_filter, **kwargs)
    for chunk in chunks:
        yield from session.feed(chunk)
        if session.blocked:
            return
    yield from session.finish()


async def astream(
    judge: AsyncJudge, profile: SafetyProfile, chunks: AsyncIterable[str | bytes] | Iterable[str | bytes], **kwargs: Any
) -> AsyncIterator[ReleasedStep]:
    """`stream` for async code: chunks from an (async) iterable, steps as an async iterator."""
    session = AsyncStreamSession(judge, profile, **kwargs)
    async for chunk in chunks if isinstance(chunks, AsyncIterable) else _aiter(chunks):
        for step in await session.feed(chunk):
            yield step
        if session.blocked:
            return
    for step in await session.finish():
        yield step


async def _aiter(items: Iterable[T]) -> AsyncIterator[T]:
    for item in items:
        yield item

"""The streaming filter's state machine, sans IO: text and judgements in, judge requests and released steps out.

See safepath/streaming/__init__.py for how steps are cut, judged and released.
"""

from __future__ import annotations

import codecs
import time
import uuid
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from safepath.decide import budget_floor, fails_closed, over_redacted, redacted_categories, worst_action
from safepath.errors import InvalidRequest
from safepath.profiles import SafetyProfile
from safepath.redaction import marker_text
from safepath.segment import segment, unsettled_from
from safepath.streaming.holdback import RuleHoldback
from safepath.types import Detection, FilterRequest, FilterResult, Verdict

T = TypeVar("T")
# A judging flow yields batches of requests, is sent their results, and returns what it produced.
Judging = Generator[list[FilterRequest], list[FilterResult], T]
SyncJudge = Callable[[Sequence[FilterRequest]], list[FilterResult]]
AsyncJudge = Callable[[Sequence[FilterRequest]], Awaitable[list[FilterResult]]]

# A window judges at most this many new steps: one huge chunk must not become a trace over max_content_chars.
MAX_WINDOW_STEPS = 16
# A rule match still open this many characters after it began is no phrase being written (the shipped rules span a
# few dozen words at most) but text built to keep one open, such as a decoded run ending in a rule's first words.
# Rechecking it at every chunk would cost the held length each time; the rest of the stream is held whole instead
# and judged when it closes, as the whole-trace filter would judge it.
HOLD_LIMIT_CHARS = 4096


class ReleasedStep(BaseModel):
    """One judged step of a stream, as it may leave. Joining every `output` gives the filtered stream."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(description="Position of the step in the stream, from 0.")
    start: int = Field(description="Character offset of the step in the stream text.")
    end: int = Field(description="Character offset just past the step.")
    verdict: Verdict = Field(description="allow, flag, redact; block ends the stream.")
    output: str = Field(
        description="What may leave: the whitespace before the step, then the step itself (allow, flag), the "
        "redaction marker (redact) or the block marker (block); the last step also carries trailing whitespace."
    )
    categories: tuple[str, ...] = Field(default=(), description="Categories of the detections on this step.")
    detections: tuple[Detection, ...] = Field(
        default=(), description="Detections on this step; step_index and span refer to the stream."
    )
    delay_ms: float = Field(description="From the arrival of the chunk holding the step's last character to release.")
    judge_ms: float = Field(description="Time the judgement of this step's window took.")
    degraded: bool = Field(default=False, description="A stage failed or timed out while judging this step.")

    @property
    def final(self) -> bool:
        """Whether this step ends the stream early (a block)."""
        return self.verdict is Verdict.BLOCK


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Window:
    """Completed steps sent for judgement, with the step before them as context (stream offsets throughout)."""

    request: FilterRequest
    offset: int  # stream offset of request.content[0]
    steps: tuple[_Span, ...]
    first_index: int
    last: bool  # the stream is closed and these are its last steps
    created: float


class StreamState:
    """The streaming filter's state machine: no IO, no filter; text and judgements in, steps out.

    Args:
        profile: The profile every window is judged under (markers and `block_redacted_fraction` come from it).
        stream_id: Prefix of each window's request id; generated when None.
        context: Passed to every window's request (contextual rules).
        metadata: Carried into every window's request (audit records), with the stream id and step range added.
        clock: Seconds as a float; injectable so delays can be tested.
        holdback: Where a rule match could still run on (`holdback_for`); None releases each step as soon as the
            next begins, which is only sound for a profile without rule stages.
    """

    def __init__(
        self,
        profile: SafetyProfile,
        *,
        stream_id: str | None = None,
        context: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        holdback: RuleHoldback | None = None,
    ) -> None:
        if stream_id is not None and not 0 < len(stream_id) <= 100:
            raise InvalidRequest("stream_id must be 1-100 characters")
        self.profile = profile
        self.stream_id = stream_id or uuid.uuid4().hex
        self._context = dict(context) if context else None
        self._metadata = dict(metadata or {})
        self._clock = clock
        self._holdback = holdback
        self._decoder: codecs.IncrementalDecoder | None = None
        self._text = ""  # the stream from self._base on: the context step, then everything not yet released
        self._base = 0
        self._released_to = 0  # stream offset just past the last released step
        self._context_step: _Span | None = None
        self._arrivals: list[tuple[int, float]] = []  # (stream length after a chunk, its arrival time)
        self._in_flight: Window | None = None
        self._windows = 0
        self._next_index = 0
        self._judged = 0
        self._redacted = 0
        self.closed = False
        self.blocked = False
        self.held_to_end = False  # a rule match stayed open past HOLD_LIMIT_CHARS: the rest leaves at the close

    @property
    def done(self) -> bool:
        """Nothing more will be released: blocked, or closed with every step released."""
        unreleased = self._text[self._released_to - self._base :]
        return self.blocked or (self.closed and self._in_flight is None and not unreleased.strip())

    @property
    def length(self) -> int:
        """Characters received so far."""
        return self._base + len(self._text)

    def push(self, chunk: str | bytes) -> None:
        """Append a chunk: text, or UTF-8 bytes cut anywhere (a multi-byte character may span chunks).

        Raises:
            InvalidRequest: the stream is closed, the bytes are not UTF-8, or text follows an unfinished character.
        """
        if self.closed:
            raise InvalidRequest("the stream is closed")
        if isinstance(chunk, (bytes, bytearray)):
            if self._decoder is None:
                self._decoder = codecs.getincrementaldecoder("utf-8")()
            text = self._decode(bytes(chunk), final=False)
        else:
            if self._decoder is not None and self._decoder.getstate()[0]:
                raise InvalidRequest("text chunk after an unfinished UTF-8 character")
            text = chunk
        if text and not self.blocked:
            self._text += text
            self._arrivals.append((self.length, self._clock()))

    def close(self) -> None:
        """End of stream: the last step is complete. Raises InvalidRequest for a cut-off UTF-8 character."""
        if self.closed:
            return
        self.closed = True
        if self._decoder is not None:
            self._decode(b"", final=True)

    def pending(self) -> Window | None:
        """The next completed steps to judge, or None (nothing releasable yet, one window in flight, or blocked)."""
        if self.blocked or self._in_flight is not None or (self.held_to_end and not self.closed):
            return None
        tail_at = self._released_to - self._base
        tail = self._text[tail_at:]
        found = segment(tail)
        if self.closed:
            complete = found
        else:  # the last step runs on; so may any step after a code span's opening backtick
            settled = unsettled_from(tail)
            complete = tuple(s for s in found[:-1] if s.end <= settled)
        if not complete:
            return None
        spans = [_Span(self._released_to + s.start, self._released_to + s.end) for s in complete]
        last = self.closed and len(spans) <= MAX_WINDOW_STEPS
        if last:
            release, judged_to = spans, spans[-1].end
        elif (chosen := self._releasable(spans[:MAX_WINDOW_STEPS], spans)) is None:
            return None
        else:
            release, judged_to = chosen
        return self._open_window(tuple(release), judged_to, last)

    def _releasable(self, window: list[_Span], spans: list[_Span]) -> tuple[list[_Span], int] | None:
        """The steps of `window` no rule match can still run past, and where the judged text must end to see theirs.

        A match starting in a step may end in a later one (or in text not yet received): a step is released only
        once every match that can start in it ends inside the judged text, so its window judges the match whole.
        The judged text ends with the window's last step where that settles every step in it (no extra work), else
        it runs on into the text after it, which the window judges as context only: the words received of the step
        still being written (not a word cut off, whose folded form the rest of it can change), or once the stream
        is closed the next steps, then the rest. Steps still open wait for more text.
        """
        if self._holdback is None:
            return window, window[-1].end
        if self.closed:
            later = [*(s.end for s in spans[len(window) : len(window) + 2]), self.length]
        else:
            written = self._slice(window[-1].end, self.length)
            last_space = max(written.rfind(c) for c in " \t\n\r")
            later = [window[-1].end + last_space] if written[:last_space].strip() else []
        best: tuple[list[_Span], int] | None = None
        for judged_to in (window[-1].end, *later):
            open_at = self._released_to + self._holdback.open_from(self._slice(self._released_to, judged_to))
            release = [s for s in window if s.end <= open_at]
            if len(release) == len(window) or (self.closed and judged_to == self.length):
                return window, judged_to  # closed: nothing can follow the end, so every match in it is whole
            if release and (best is None or len(release) > len(best[0])):
                best = (release, judged_to)
        if judged_to - open_at > HOLD_LIMIT_CHARS:
            self.held_to_end = True
        return best

    def _open_window(self, spans: tuple[_Span, ...], judged_to: int, last: bool) -> Window:
        offset = self._context_step.start if self._context_step else spans[0].start
        first = self._next_index
        window_no = self._windows
        self._windows += 1
        request = FilterRequest(
            content=self._slice(offset, judged_to),
            context=self._context,
            profile=self.profile.name,
            request_id=f"{self.stream_id}-{window_no}",
            metadata={**self._metadata, "stream_id": self.stream_id, "stream_steps": [first, first + len(spans) - 1]},
        )
        self._in_flight = Window(request, offset, spans, first, last, self._clock())
        return self._in_flight

    def settle(self, window: Window, result: FilterResult) -> list[ReleasedStep]:
        """Release the window's steps under its judgement, in order, up to and including a block."""
        if window is not self._in_flight:
            raise ValueError("settle() takes the window pending() returned last")
        self._in_flight = None
        now = self._clock()
        judge_ms = (now - window.created) * 1000
        # Failed stages block only as the profile's fail mode says (fail-open answers from the stages that worked):
        # the window's verdict cannot tell, since a blocking step among the window's steps blocks it too.
        fail_closed = fails_closed(self.profile, result.failed_stages)
        per_step = _detections_by_step(window, result)
        unread = _unread_positions(window, result)
        shift = window.offset  # window offsets to stream offsets
        released = []
        for position, span in enumerate(window.steps):
            index = window.first_index + position
            detections = tuple(
                d.model_copy(update={"step_index": index, "span": (d.span[0] + shift, d.span[1] + shift)})
                for d in per_step[position]
            )
            verdict = worst_action(detections)
            if position in unread:  # a model stage left it unread: the whole-trace filter's floor, step by step
                verdict = budget_floor(self.profile, verdict)
            self._judged += 1
            self._redacted += verdict is Verdict.REDACT
            if fail_closed or (verdict is Verdict.REDACT and over_redacted(self.profile, self._redacted, self._judged)):
                verdict = Verdict.BLOCK
            categories = tuple(dict.fromkeys(d.category.value for d in detections))
            gap = self._slice(self._released_to, span.start)
            if verdict is Verdict.BLOCK:
                body = self.profile.block_marker
            elif verdict is Verdict.REDACT:
                body = marker_text(self.profile.redaction_marker, redacted_categories(detections))
            else:
                body = self._slice(span.start, span.end)
            if window.last and position == len(window.steps) - 1 and verdict is not Verdict.BLOCK:
                body += self._slice(span.end, self.length)  # trailing whitespace: the stream is over
            released.append(
                ReleasedStep(
                    index=index,
                    start=span.start,
                    end=span.end,
                    verdict=verdict,
                    output=gap + body,
                    categories=categories,
                    detections=detections,
                    delay_ms=(now - self._arrival(span.end)) * 1000,
                    judge_ms=judge_ms,
                    degraded=result.degraded,
                )
            )
            self._next_index = index + 1
            self._released_to = span.end
            self._context_step = span
            if verdict is Verdict.BLOCK:
                self.blocked = True
                self._text, self._arrivals = "", []
                break
        else:
            self._forget_before(self._context_step.start if self._context_step else self._released_to)
        return released

    def flow(self) -> Judging[list[ReleasedStep]]:
        """Judge and release everything complete now: yields request batches, returns the released steps."""
        released: list[ReleasedStep] = []
        while (window := self.pending()) is not None:
            (result,) = yield [window.request]
            released.extend(self.settle(window, result))
        return released

    def _slice(self, start: int, end: int) -> str:
        return self._text[start - self._base : end - self._base]

    def _arrival(self, end: int) -> float:
        i = bisect_left(self._arrivals, end, key=lambda a: a[0])
        return self._arrivals[min(i, len(self._arrivals) - 1)][1]

    def _forget_before(self, offset: int) -> None:
        """Drop text before `offset` and arrivals of chunks released entirely (memory stays bounded)."""
        if offset > self._base:
            self._text = self._text[offset - self._base :]
            self._base = offset
        i = bisect_left(self._arrivals, self._released_to, key=lambda a: a[0])
        del self._arrivals[:i]

    def _decode(self, data: bytes, *, final: bool) -> str:
        try:
            return self._decoder.decode(data, final=final)  # type: ignore[union-attr]
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"stream is not valid UTF-8: {exc.reason} near byte {self.length}") from None


def _detections_by_step(window: Window, result: FilterResult) -> list[list[Detection]]:
    """The result's detections assigned to the window's new steps by overlap of their steps' ranges.

    The pipeline segments the window content again; almost always into the same steps, but where it cuts
    differently, a detection goes to every new step its step touches (never to none).
    """
    ranges = _result_step_ranges(window, result)
    out: list[list[Detection]] = [[] for _ in window.steps]
    for d in result.detections:
        start, end = ranges.get(d.step_index, (d.span[0] + window.offset, d.span[1] + window.offset))
        for position in _overlapping(window, start, end):
            out[position].append(d)
    return out


def _unread_positions(window: Window, result: FilterResult) -> set[int]:
    """Positions among the window's new steps of those touching a step the result lists as unread."""
    ranges = _result_step_ranges(window, result)
    return {position for index in result.unread_steps for position in _overlapping(window, *ranges[index])}


def _result_step_ranges(window: Window, result: FilterResult) -> dict[int, tuple[int, int]]:
    """The result's steps (of the window content) as stream ranges, by step index."""
    return {s.index: (s.start + window.offset, s.end + window.offset) for s in result.steps}


def _overlapping(window: Window, start: int, end: int) -> list[int]:
    return [position for position, span in enumerate(window.steps) if start < span.end and span.start < end]

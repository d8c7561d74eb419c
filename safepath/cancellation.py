"""Stopping model work that nobody waits for any more.

A stage call can outlive its caller: the pipeline's stage timeout fires, or an HTTP client disconnects and Ray Serve
cancels its request. The model work runs in a worker thread, which Python cannot interrupt, so it is told instead:
the caller holds one `threading.Event` per trace and sets it when it stops waiting, and the model stages check the
events between model batches (`cancelled_traces`), dropping the rows of cancelled traces. A batch that mixes traces
of several callers (Ray Serve's `@serve.batch`) goes on for the others.

The events travel in a context variable rather than a parameter: `detect(traces)` is reached through wrappers that
pass the traces only (timing in safepath.metrics, batching in deployments.service), and both ways into a worker
thread used here carry the caller's context along (`asyncio.to_thread`, `contextvars.copy_context().run`).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

_FLAGS: contextvars.ContextVar[tuple[threading.Event | None, ...] | None] = contextvars.ContextVar(
    "safepath_cancel_flags", default=None
)


@contextmanager
def watching(flags: Sequence[threading.Event | None]) -> Iterator[None]:
    """Within the block (and in worker threads started from it with the context copied), `cancelled_traces` reads
    `flags`: one per trace of the stage call, in order; None for a trace that cannot be cancelled."""
    token = _FLAGS.set(tuple(flags))
    try:
        yield
    finally:
        _FLAGS.reset(token)


def cancelled_traces() -> frozenset[int]:
    """Positions of the current stage call's traces whose caller stopped waiting (empty outside `watching`)."""
    flags = _FLAGS.get()
    if not flags:
        return frozenset()
    return frozenset(i for i, flag in enumerate(flags) if flag is not None and flag.is_set())


def run_watched(flag: threading.Event, fn: Callable[[Sequence], T], traces: Sequence) -> T:
    """`fn(traces)` with every trace watched by `flag` (for a worker thread: one caller, one flag)."""
    with watching([flag] * len(traces)):
        return fn(traces)

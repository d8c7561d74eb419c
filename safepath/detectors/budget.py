"""The model stages' per-trace budget and interruptible model runs.

A model stage costs per input row (tens of milliseconds a row on one core), so a trace's cost must not grow with its
length: each model stage reads at most `Trace.max_model_rows` rows of one trace (the profile's `model_budget`).
`within_budget` picks the steps it reads, riskiest first (`gate.ranked_select_for_model`); the steps that do not fit are
returned to the pipeline as `unread_markers`, one per run of consecutive unread steps (so their number is bounded by
the budget, not by the trace's length), which `split_unread` takes back out of the detections.

`run_rows` runs the model in chunks and, between chunks, drops the rows of traces whose caller stopped waiting
(safepath.cancellation), so that a timed-out or disconnected request stops costing model time within one chunk.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from safepath.cancellation import cancelled_traces
from safepath.runtime import Encoder
from safepath.types import Category, Detection, StageKind, Step, Trace, Verdict

UNREAD_VIEW = "unread"
UNREAD_RULE = "model_budget.unread"


def within_budget(
    traces: Sequence[Trace],
    items: Sequence[tuple[int, Step]],
    chosen: np.ndarray,
    risk: np.ndarray,
    cost: Callable[[int], int],
    optional: Collection[int] = (),
) -> tuple[list[int], dict[int, list[int]]]:
    """Which of the `chosen` items each trace's budget lets the model read, riskiest first.

    Args:
        traces: the batch; each trace's `max_model_rows` is its budget (None: everything chosen is read).
        items: (trace index, step) per item, as `gate.ranked_select_for_model` returns them.
        chosen: positions of the items the model must judge.
        risk: per item, how risky it looks (higher is read first; ties in trace order).
        cost: the number of model rows an item needs (called for the candidates only, in the order they are tried).
        optional: positions among `chosen` read only with the room the others leave (tried after all of them),
            never reported unread: steps the cascade gate settled, read anyway for a trace in another language.

    Returns:
        The positions read, ascending, and per trace the indexes of chosen steps left unread (traces with none
        left out).
    """
    order = sorted(chosen.tolist(), key=lambda k: (k in optional, -risk[k], k))
    left = {t: trace.max_model_rows for t, trace in enumerate(traces)}
    kept: list[int] = []
    unread: dict[int, list[int]] = {}
    for k in order:
        t, step = items[k]
        budget = left[t]
        if budget is None:
            kept.append(k)
            continue
        # Once a trace's budget is spent, what remains is unread without being tokenized for its cost.
        rows = cost(k) if budget > 0 else budget + 1
        if rows <= budget:
            left[t] = budget - rows
            kept.append(k)
        elif k not in optional:
            unread.setdefault(t, []).append(step.index)
    return sorted(kept), {t: sorted(steps) for t, steps in unread.items()}


def unread_markers(trace: Trace, unread: Iterable[int], stage: StageKind) -> list[Detection]:
    """One marker per run of consecutive unread steps, spanning the run. Markers are not findings: they score 0, take
    no action, and the pipeline removes them (`split_unread`) before anything is decided. `category` is required of
    every Detection and means nothing here."""
    markers = []
    for first, last in _runs(sorted(unread)):
        a, b = trace.steps[first], trace.steps[last]
        markers.append(Detection(
            category=Category.HARMFUL_INSTRUCTIONS, stage=stage, score=0.0, step_index=first, span=(a.start, b.end),
            rule=UNREAD_RULE, evidence=f"steps {first}-{last} unread: over the profile's model budget",
            action=Verdict.ALLOW, view=UNREAD_VIEW,
        ))
    return markers


def split_unread(detections: Sequence[Detection], steps: Sequence[Step]) -> tuple[list[Detection], set[int]]:
    """The findings, and the indexes of the steps the markers among `detections` say were left unread."""
    findings, unread = [], set()
    starts = [s.start for s in steps]
    for d in detections:
        if d.view != UNREAD_VIEW:
            findings.append(d)
            continue
        unread.update(range(bisect_left(starts, d.span[0]), bisect_right(starts, d.span[1] - 1)))
    return findings, unread


@dataclass(slots=True)
class RowRun:
    """What `run_rows` did: the output per row (rows of cancelled traces left at zero; None when no row ran), how
    many rows ran and were dropped, and which traces were cancelled."""

    values: np.ndarray | None
    rows_run: int
    rows_dropped: int
    cancelled: frozenset[int]


def run_rows(encoder: Encoder, texts: Sequence[str], owners: Sequence[int], output: str) -> RowRun:
    """`encoder.run(texts)[output]`, in calls of `encoder.call_rows` rows; before each call the rows of traces
    cancelled meanwhile (`owners`: the trace of each row) are dropped."""
    order = range(len(texts))
    values: np.ndarray | None = None
    run = dropped = 0
    cancelled: frozenset[int] = frozenset()
    position = 0
    while position < len(order):
        cancelled = cancelled_traces()
        chunk: list[int] = []
        while position < len(order) and len(chunk) < encoder.call_rows:
            i = order[position]
            position += 1
            if owners[i] in cancelled:
                dropped += 1
            else:
                chunk.append(i)
        if not chunk:
            continue
        out = encoder.run([texts[i] for i in chunk])[output]
        if values is None:
            values = np.zeros((len(texts), *out.shape[1:]), dtype=out.dtype)
        values[chunk] = out
        run += len(chunk)
    return RowRun(values, run, dropped, cancelled | cancelled_traces())


def _runs(indexes: Sequence[int]) -> Iterable[tuple[int, int]]:
    """(first, last) of each run of consecutive integers in a sorted sequence."""
    start = prev = None
    for i in indexes:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            yield start, prev
            start = prev = i
    if start is not None:
        yield start, prev

"""The orchestrator: validate, segment, run the stages tier by tier, decide (`safepath.decide`).

The flow is written once, as a generator that yields "run these stages on these traces" and is sent
back what each stage produced. Two small drivers feed it: `run_sync` calls detectors in this process,
`run_async` awaits async callables (in-process detectors, or Ray Serve deployment handles). So a fix
to the flow or the decision lands once and holds in both modes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from safepath.cache import ResultCache, result_key
from safepath.cancellation import run_watched
from safepath.decide import decide, effective_action
from safepath.detectors.budget import split_unread
from safepath.errors import ContentTooLarge, EmptyContent, InvalidRequest, StageError, StageTimeout, UnknownProfile
from safepath.metrics import Metrics, default_metrics, record_results
from safepath.profiles import ProfileSet, SafetyProfile
from safepath.segment import segment
from safepath.types import Detection, FilterRequest, FilterResult, Trace, Verdict

logger = logging.getLogger(__name__)

AsyncStage = Callable[[Sequence[Trace]], Awaitable[list[list[Detection]]]]
SyncStage = Callable[[Sequence[Trace]], list[list[Detection]]]


class DecisionSink(Protocol):
    """Where every decision goes after it is made (the audit writer): must not block or raise."""

    def submit_decision(self, result: FilterResult, content: str, metadata: dict[str, Any] | None = None) -> None: ...


@dataclass(slots=True)
class StageOutcome:
    """What one stage call returned for its batch: detections per trace, or the error that stopped it."""

    detections: list[list[Detection]] | None
    elapsed_ms: float
    error: BaseException | None = None


@dataclass(slots=True)
class _Job:
    request_id: str
    profile: SafetyProfile
    trace: Trace
    started: float
    detections: list[Detection] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    failed_stages: list[str] = field(default_factory=list)
    unread: set[int] = field(default_factory=set)  # steps a model stage left unread (its budget)
    done: bool = False  # short-circuited: later tiers skip it


@dataclass(slots=True)
class _Batch:
    """One call to a driver: its requests (each with an id), their cache keys, and the results found so far."""

    requests: list[FilterRequest]
    started: float
    keys: list[str | None] = field(default_factory=list)
    found: list[FilterResult | None] = field(default_factory=list)

    @property
    def ids(self) -> list[str | None]:
        return [r.request_id for r in self.requests]

    def nothing_found(self) -> list[FilterResult | None]:
        return [None] * len(self.requests)

    def misses(self) -> list[int]:
        """Positions of the requests still without a result."""
        return [i for i, r in enumerate(self.found) if r is None]


# A tier's work: stage name -> the traces to run it on
TierCalls = dict[str, list[Trace]]
Flow = Generator[TierCalls, dict[str, StageOutcome], list[FilterResult]]


class Pipeline:
    """Runs requests through the stages their profiles name and decides each verdict."""

    def __init__(
        self,
        profiles: ProfileSet,
        versions: Mapping[str, str],
        *,
        cache: ResultCache | None = None,
        metrics: Metrics | None = None,
        audit: DecisionSink | None = None,
    ) -> None:
        """
        Args:
            profiles: The loaded profiles and stage definitions.
            versions: Version string per stage name, reported in results' `model_versions`.
            cache: Where results are looked up before judging and stored after; none when None.
            metrics: Where results are counted; the process's metrics when None.
            audit: Told about every decision (it keeps those its settings ask for).
        """
        self.profiles = profiles
        self.versions = dict(versions)
        self.cache = cache
        self.metrics = metrics or default_metrics()
        self.audit = audit
        tiers = sorted({spec.tier for spec in profiles.stages.values()})
        self._tiers = [[n for n, s in profiles.stages.items() if s.tier == t] for t in tiers]

    def prepare(self, request: FilterRequest) -> tuple[SafetyProfile, Trace]:
        """Validate one request and segment it.

        Raises:
            EmptyContent, ContentTooLarge: the content is unusable.
            UnknownProfile: the request names a profile that is not loaded.
        """
        profile = self.profiles.get(request.profile)
        if not request.content.strip():
            raise EmptyContent()
        if len(request.content) > profile.max_content_chars:
            raise ContentTooLarge(len(request.content), profile.max_content_chars)
        trace = Trace(content=request.content, steps=segment(request.content), context=request.context or {},
                      max_model_rows=profile.model_budget.max_rows)
        return profile, trace

    def cache_keys(self, requests: Sequence[FilterRequest]) -> list[str | None]:
        """Each request's cache key; None where it must not be cached (no cache, a stage's version unknown, or a
        profile that is not loaded, which the flow then reports)."""
        if self.cache is None:
            return [None] * len(requests)
        keys: list[str | None] = []
        for request in requests:
            try:
                profile = self.profiles.get(request.profile)
            except UnknownProfile:
                keys.append(None)
                continue
            versions = {name: self.versions.get(name, "unknown") for name in profile.stages}
            known = "unknown" not in versions.values()
            keys.append(result_key(request.content, profile.name, self.profiles.content_hash, request.context,
                                   versions) if known else None)
        return keys

    def flow(self, requests: Sequence[FilterRequest], positions: Sequence[int] | None = None, total: int = 0) -> Flow:
        """The generator the drivers feed. When the requests are the cache misses of a batch, `positions` are their
        places in it and `total` its size, so an error names the caller's request."""
        positions = positions if positions is not None else range(len(requests))
        jobs = []
        for i, request in enumerate(requests):
            started = time.perf_counter()
            try:
                profile, trace = self.prepare(request)
            except InvalidRequest as exc:
                if max(total, len(requests)) > 1:  # say which one, keeping the type (callers map it to a status)
                    exc.args = (f"request {positions[i]}: {exc}",)
                raise
            job = _Job(request.request_id or uuid.uuid4().hex, profile, trace, started)
            job.latency_ms["segment"] = (time.perf_counter() - started) * 1000
            jobs.append(job)
        for tier in self._tiers:
            calls: dict[str, list[int]] = {}
            for name in tier:
                members = [j for j, job in enumerate(jobs) if name in job.profile.stages and not job.done]
                if members:
                    calls[name] = members
            if not calls:
                continue
            for job in jobs:  # later tiers learn which steps earlier ones flagged (cascade gates pass them on)
                flagged = frozenset(d.step_index for d in job.detections)
                if flagged != job.trace.flagged_steps:
                    job.trace = job.trace.model_copy(update={"flagged_steps": flagged})
            outcomes = yield {name: [jobs[j].trace for j in members] for name, members in calls.items()}
            for name, members in calls.items():
                self._absorb(name, members, outcomes[name], jobs)
            for job in jobs:
                job.done = job.profile.short_circuit_on_block and any(_settles(d, job.profile) for d in job.detections)
        return [self._finish(job) for job in jobs]

    def _absorb(self, name: str, members: list[int], outcome: StageOutcome, jobs: list[_Job]) -> None:
        results = outcome.detections
        if outcome.error is None and (results is None or len(results) != len(members)):
            outcome.error = StageError(f"stage {name!r} returned {0 if results is None else len(results)} results "
                                       f"for {len(members)} traces")
        if outcome.error is not None:
            # The request still gets an answer (the profile's fail_mode decides which); operators need the cause.
            logger.warning("stage %r failed for %d traces: %r", name, len(members), outcome.error)
        for position, j in enumerate(members):
            jobs[j].latency_ms[name] = outcome.elapsed_ms
            if outcome.error is not None:
                jobs[j].failed_stages.append(name)
            else:
                found, unread = split_unread(results[position], jobs[j].trace.steps)  # type: ignore[index]
                jobs[j].detections.extend(found)
                jobs[j].unread.update(unread)

    def _finish(self, job: _Job) -> FilterResult:
        job.latency_ms["total"] = (time.perf_counter() - job.started) * 1000
        versions = {name: self.versions.get(name, "unknown") for name in job.profile.stages}
        return decide(
            job.trace,
            job.detections,
            job.profile,
            request_id=job.request_id,
            latency_ms=job.latency_ms,
            model_versions=versions,
            failed_stages=job.failed_stages,
            unread_steps=job.unread,
        )

    def run_sync(
        self,
        requests: Sequence[FilterRequest],
        stages: Mapping[str, SyncStage],
        *,
        inline: frozenset[str] = frozenset(),
        executor: ThreadPoolExecutor | None = None,
    ) -> list[FilterResult]:
        """Drive the flow by calling detectors in this process.

        Stages named in `inline` run on the calling thread (cheap ones: their timeout is not enforced);
        the others run on `executor`, concurrently within a tier, and are abandoned at their timeout.
        """
        with self._batch(requests) as batch:
            batch.found = self.cache.lookup(batch.keys, batch.ids) if self.cache else batch.nothing_found()
            todo = batch.misses()
            fresh = self._drive_sync([batch.requests[i] for i in todo], todo, len(batch.requests), stages, inline,
                                     executor) if todo else []
            return self._complete(batch, fresh, background=False)

    def _drive_sync(self, requests, positions, total, stages, inline, executor) -> list[FilterResult]:
        flow = self.flow(requests, positions, total)
        try:
            calls = next(flow)
            while True:
                offloaded = [] if executor is None else [n for n in calls if n not in inline]
                flags = {n: threading.Event() for n in offloaded}
                futures = {n: executor.submit(run_watched, flags[n], partial(_timed_call, stages[n]), calls[n])
                           for n in offloaded}  # type: ignore[union-attr]
                outcomes = {n: _timed_call(stages[n], t) for n, t in calls.items() if n not in futures}
                for name, future in futures.items():
                    timeout_s = self.profiles.stages[name].timeout_ms / 1000
                    try:
                        outcomes[name] = future.result(timeout=timeout_s)
                    except FutureTimeout:
                        flags[name].set()  # a worker thread cannot be stopped: told, it drops its remaining model rows
                        outcomes[name] = StageOutcome(None, timeout_s * 1000, StageTimeout(f"stage {name!r} timed out"))
                calls = flow.send(outcomes)
        except StopIteration as stop:
            return stop.value

    async def run_async(
        self, requests: Sequence[FilterRequest], stages: Mapping[str, AsyncStage]
    ) -> list[FilterResult]:
        """Drive the flow with async stage callables, each call bounded by its stage's timeout."""
        with self._batch(requests) as batch:
            batch.found = await self.cache.alookup(batch.keys, batch.ids) if self.cache else batch.nothing_found()
            todo = batch.misses()
            fresh = await self._drive_async([batch.requests[i] for i in todo], todo, len(batch.requests),
                                            stages) if todo else []
            return self._complete(batch, fresh, background=True)

    async def _drive_async(self, requests, positions, total, stages) -> list[FilterResult]:
        flow = self.flow(requests, positions, total)
        try:
            calls = next(flow)
            while True:
                names = list(calls)
                done = await asyncio.gather(*(self._await_stage(n, stages[n], calls[n]) for n in names))
                calls = flow.send(dict(zip(names, done)))
        except StopIteration as stop:
            return stop.value

    @contextmanager
    def _batch(self, requests: Sequence[FilterRequest]) -> Iterator[_Batch]:
        """The wrapper both drivers share: ids and cache keys for the requests, counted in flight meanwhile."""
        batch = _Batch(_with_ids(requests), time.perf_counter())
        self.metrics.add_in_flight(len(batch.requests))
        try:
            batch.keys = self.cache_keys(batch.requests)
            yield batch
        finally:
            self.metrics.add_in_flight(-len(batch.requests))

    def _complete(self, batch: _Batch, fresh: list[FilterResult], *, background: bool) -> list[FilterResult]:
        """Remember the fresh results (`background`: without waiting on Redis), merge them with the cache hits in
        the callers' order, and finish every result."""
        todo = batch.misses()
        if todo and self.cache is not None:
            self.cache.remember([batch.keys[i] for i in todo], fresh, background=background)
        for i, result in zip(todo, fresh):
            batch.found[i] = result
        return self._finished(batch.requests, batch.found, batch.started)

    def _finished(self, requests: Sequence[FilterRequest], results: list, started: float) -> list[FilterResult]:
        """Stamp cache hits' latency, count every result, hand every decision to the audit trail."""
        elapsed = _ms_since(started)
        for i, result in enumerate(results):
            if result.cached:
                results[i] = result.model_copy(update={"latency_ms": {"cache": elapsed, "total": elapsed}})
        record_results(self.metrics, results, {n: p.fail_mode for n, p in self.profiles.profiles.items()})
        if self.audit is not None:
            for request, result in zip(requests, results):
                self.audit.submit_decision(result, request.content, request.metadata)
        return results

    async def _await_stage(self, name: str, stage: AsyncStage, traces: list[Trace]) -> StageOutcome:
        timeout_s = self.profiles.stages[name].timeout_ms / 1000
        started = time.perf_counter()
        try:
            detections = await asyncio.wait_for(stage(traces), timeout_s)
        except TimeoutError:
            return StageOutcome(None, _ms_since(started), StageTimeout(f"stage {name!r} timed out after {timeout_s}s"))
        except Exception as exc:  # noqa: BLE001 - a failing stage must not fail the request: the profile decides
            return StageOutcome(None, _ms_since(started), exc)
        return StageOutcome(detections, _ms_since(started))


def local_stage(detect: SyncStage, executor: Executor | None = None) -> AsyncStage:
    """An in-process stage callable for `run_async` from a detector's `detect`: on the event loop when no executor
    is given (cheap, `inline` detectors), else in the executor, so a model never blocks the loop."""

    async def call(traces: Sequence[Trace]) -> list[list[Detection]]:
        if executor is None:
            return detect(traces)
        flag = threading.Event()
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, run_watched, flag, detect, traces)
        except asyncio.CancelledError:  # the stage timed out or the caller went away: stop the model work too
            flag.set()
            raise

    return call


def _with_ids(requests: Sequence[FilterRequest]) -> list[FilterRequest]:
    """The requests, each with a request id (generated where missing), so cache hits get their caller's id."""
    return [r if r.request_id else r.model_copy(update={"request_id": uuid.uuid4().hex}) for r in requests]


def _settles(detection: Detection, profile: SafetyProfile) -> bool:
    """Whether a detection blocks whatever later tiers find: it blocks, and the model could not overrule it."""
    rule = profile.model_overrule
    overrulable = rule is not None and rule.allows(detection, 0.0)
    return not overrulable and effective_action(detection, profile) is Verdict.BLOCK


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _timed_call(stage: SyncStage, traces: list[Trace]) -> StageOutcome:
    started = time.perf_counter()
    try:
        return StageOutcome(stage(traces), _ms_since(started))
    except Exception as exc:  # noqa: BLE001 - see _await_stage
        return StageOutcome(None, _ms_since(started), exc)

"""The orchestrator: validate, segment, run the stages tier by tier, decide.

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
from collections.abc import Awaitable, Callable, Collection, Generator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from safepath.cache import ResultCache, result_key
from safepath.cancellation import run_watched
from safepath.detectors.budget import split_unread
from safepath.errors import ContentTooLarge, EmptyContent, InvalidRequest, StageError, StageTimeout, UnknownProfile
from safepath.metrics import Metrics, default_metrics, record_results
from safepath.profiles import ProfileSet, SafetyProfile
from safepath.segment import segment
from safepath.types import Detection, FilterRequest, FilterResult, Stage, Step, Trace, Verdict

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
        started = time.perf_counter()
        requests = _with_ids(requests)
        self.metrics.add_in_flight(len(requests))
        try:
            keys = self.cache_keys(requests)
            found = self.cache.lookup(keys, [r.request_id for r in requests]) if self.cache else [None] * len(requests)
            todo = [i for i, r in enumerate(found) if r is None]
            if todo:
                fresh = self._drive_sync([requests[i] for i in todo], todo, len(requests), stages, inline, executor)
                if self.cache is not None:
                    self.cache.remember([keys[i] for i in todo], fresh)
                for i, result in zip(todo, fresh):
                    found[i] = result
            return self._finished(requests, found, started)
        finally:
            self.metrics.add_in_flight(-len(requests))

    def _drive_sync(self, requests, positions, total, stages, inline, executor) -> list[FilterResult]:  # noqa: ANN001
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

    async def run_async(self, requests: Sequence[FilterRequest], stages: Mapping[str, AsyncStage]) -> list[FilterResult]:
        """Drive the flow with async stage callables, each call bounded by its stage's timeout."""
        started = time.perf_counter()
        requests = _with_ids(requests)
        self.metrics.add_in_flight(len(requests))
        try:
            keys = self.cache_keys(requests)
            ids = [r.request_id for r in requests]
            found = await self.cache.alookup(keys, ids) if self.cache else [None] * len(requests)
            todo = [i for i, r in enumerate(found) if r is None]
            if todo:
                fresh = await self._drive_async([requests[i] for i in todo], todo, len(requests), stages)
                if self.cache is not None:
                    self.cache.remember([keys[i] for i in todo], fresh, background=True)
                for i, result in zip(todo, fresh):
                    found[i] = result
            return self._finished(requests, found, started)
        finally:
            self.metrics.add_in_flight(-len(requests))

    async def _drive_async(self, requests, positions, total, stages) -> list[FilterResult]:  # noqa: ANN001
        flow = self.flow(requests, positions, total)
        try:
            calls = next(flow)
            while True:
                names = list(calls)
                done = await asyncio.gather(*(self._await_stage(n, stages[n], calls[n]) for n in names))
                calls = flow.send(dict(zip(names, done)))
        except StopIteration as stop:
            return stop.value

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
        except Exception as exc:  # a failing stage must not fail the request: the profile decides
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
    except Exception as exc:  # see _await_stage
        return StageOutcome(None, _ms_since(started), exc)


def effective_action(detection: Detection, profile: SafetyProfile) -> Verdict:
    """The action a detection takes under a profile: its score's level, capped by the detection's own
    action (a rule's `action`) and by the profile's limit for its category."""
    thresholds = profile.thresholds
    if detection.stage is Stage.SAFETY_MODEL:
        thresholds = profile.model_category_thresholds.get(detection.category) or profile.model_thresholds or thresholds
    candidates = (thresholds.level(detection.score), detection.action, profile.category_actions[detection.category])
    return min(candidates, key=lambda v: v.rank)


def decide(
    trace: Trace,
    detections: Sequence[Detection],
    profile: SafetyProfile,
    *,
    request_id: str,
    latency_ms: Mapping[str, float] | None = None,
    model_versions: Mapping[str, str] | None = None,
    failed_stages: Sequence[str] = (),
    unread_steps: Collection[int] = (),
) -> FilterResult:
    """Combine all stages' detections on one trace into a verdict and the content that may leave.

    Only detections that cause at least a flag are kept in the result, each carrying the action it took; findings the
    safety model overruled are kept apart, with the reason. A failed stage makes the result `degraded` and is named
    in `failed_stages`; `fails_closed` says when that also blocks. Steps a model stage left unread for its budget
    (`unread_steps`, and any unread markers among `detections`) are listed in the result and raise the verdict to
    the profile's `model_budget.over_budget` at least: size alone blocks only where the profile says so.
    """
    detections, marked = split_unread(detections, trace.steps)
    unread = tuple(sorted(marked.union(unread_steps)))
    kept, overruled = _overrule(detections, profile)
    acted = [d.model_copy(update={"action": a}) for d in kept if (a := effective_action(d, profile)) is not Verdict.ALLOW]
    acted.sort(key=lambda d: (d.step_index, d.span, d.stage.value))
    verdict = max((d.action for d in acted), key=lambda v: v.rank, default=Verdict.ALLOW)
    redacted = _steps_to_redact(acted)
    if verdict is Verdict.REDACT and trace.steps and len(redacted) / len(trace.steps) > profile.block_redacted_fraction:
        verdict = Verdict.BLOCK
    if unread and Verdict(profile.model_budget.over_budget).rank > verdict.rank:
        verdict = Verdict(profile.model_budget.over_budget)
    if fails_closed(profile, failed_stages):
        verdict = Verdict.BLOCK
    if verdict is Verdict.BLOCK:
        content = profile.block_marker
    elif verdict is Verdict.REDACT:
        content = redact(trace.content, trace.steps, redacted, profile.redaction_marker)
    else:
        content = trace.content
    worst = max((d.score for d in detections), default=0.0)
    return FilterResult(
        request_id=request_id,
        profile=profile.name,
        verdict=verdict,
        filtered_content=content,
        safety_score=round(1.0 - worst, 6),
        detections=tuple(acted),
        overruled=overruled,
        steps=trace.steps,
        latency_ms=dict(latency_ms or {}),
        model_versions=dict(model_versions or {}),
        degraded=bool(failed_stages),
        failed_stages=tuple(failed_stages),
        unread_steps=unread,
    )


def fails_closed(profile: SafetyProfile, failed_stages: Sequence[str]) -> bool:
    """Whether failed stages block the trace: always under `fail_mode: closed`; under `open` only when every stage
    of the profile failed, since fail-open answers from the stages that worked, never from none."""
    if not failed_stages:
        return False
    return profile.fail_mode == "closed" or set(profile.stages) <= set(failed_stages)


def _overrule(
    detections: Sequence[Detection], profile: SafetyProfile
) -> tuple[list[Detection], tuple[Detection, ...]]:
    """Split the detections into those that stand and those the safety model overruled (see `model_overrule`);
    the overruled ones carry the reason and the action `allow`."""
    rule = profile.model_overrule
    if rule is None:
        return list(detections), ()
    model_score: dict[int, float] = {}
    for d in detections:
        if d.stage is Stage.SAFETY_MODEL:
            model_score[d.step_index] = max(model_score.get(d.step_index, 0.0), d.score)
    kept, overruled = [], []
    for d in detections:
        judged = model_score.get(d.step_index)
        if d.stage is not Stage.SAFETY_MODEL and rule.allows(d, judged):
            reason = (f"safety model scored step {d.step_index} at {judged:.3f}, below {rule.below} "
                      f"(profile {profile.name!r}, model_overrule)")
            overruled.append(d.model_copy(update={"action": Verdict.ALLOW, "overruled": reason}))
        else:
            kept.append(d)
    return kept, tuple(overruled)


def _steps_to_redact(acted: Sequence[Detection]) -> dict[int, list[str]]:
    """Step index -> categories (in first-seen order) for steps with a detection at redact or above."""
    steps: dict[int, list[str]] = {}
    for d in acted:
        if d.action.rank >= Verdict.REDACT.rank:
            cats = steps.setdefault(d.step_index, [])
            if d.category.value not in cats:
                cats.append(d.category.value)
    return steps


def redact(content: str, steps: Sequence[Step], redacted: Mapping[int, Sequence[str]], marker: str) -> str:
    """Replace exactly the characters of each redacted step with the marker; everything between steps stays."""
    pieces, cursor = [], 0
    for step in steps:
        if step.index in redacted:
            pieces.append(content[cursor : step.start])
            pieces.append(marker.format(categories=", ".join(redacted[step.index])))
            cursor = step.end
    pieces.append(content[cursor:])
    return "".join(pieces)

"""What the deployments do, without Ray: the ingress's service over `Pipeline.run_async`, and the batch runner
of the stage deployments. Deployments wrap these; unit tests drive them with in-process stage callables.

Nothing here filters: verdicts come from `safepath.pipeline`, and pipelines from `safepath.assembly`. This module
wires stage callables, applies live config overrides and groups batched calls by stage; which stages failed is
read from the results (`FilterResult.failed_stages`).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deployments.schemas import (
    DeploymentReadiness,
    IngressConfig,
    ProfileInfo,
    ProfilesResponse,
    ReadyResponse,
)
from safepath.assembly import build_pipeline
from safepath.cache import ResultCache, TwoLevelCache
from safepath.cancellation import watching
from safepath.decide import fails_closed
from safepath.detectors import Detector
from safepath.errors import ProfileError
from safepath.metrics import Metrics, default_metrics, timed_detects
from safepath.pipeline import AsyncStage, DecisionSink, Pipeline
from safepath.profiles import ProfileSet, SafetyProfile, StageSpec
from safepath.settings import RuntimeSettings
from safepath.types import Detection, FilterRequest, FilterResult, Trace

REPO_ROOT = Path(__file__).resolve().parent.parent
PROBE_TIMEOUT_S = 5.0
REPROBE_INTERVAL_S = 10.0

# deployment name -> coroutine returning {stage name: version} of the models it has loaded
Probe = Callable[[], Awaitable[dict[str, str]]]


def resolve_profiles_path(path: str | None) -> Path:
    """The profiles file an app argument names, as an absolute path (replicas may run in another directory)."""
    if path is None:
        return RuntimeSettings().profiles_path.resolve()
    given = Path(path)
    for candidate in (given, Path.cwd() / given, REPO_ROOT / given):
        if candidate.is_file():
            return candidate.resolve()
    raise ProfileError(f"{path}: profiles file not found (looked in {Path.cwd()} and {REPO_ROOT})")


def apply_overrides(profiles: ProfileSet, config: IngressConfig) -> ProfileSet:
    """A new ProfileSet with the live overrides applied; `profiles` is left untouched.

    Raises:
        ProfileError: an override names an unknown profile or stage, or makes a profile invalid.
    """
    unknown = sorted(set(config.profiles) - set(profiles.profiles)) + sorted(
        set(config.stage_timeouts_ms) - set(profiles.stages)
    )
    if unknown:
        raise ProfileError(f"user_config names unknown profiles or stages: {unknown}")
    try:
        updated = {
            name: SafetyProfile.model_validate(
                {**profile.model_dump(), **config.profiles[name].model_dump(exclude_none=True)}
            )
            if name in config.profiles
            else profile
            for name, profile in profiles.profiles.items()
        }
        stages = {
            name: StageSpec.model_validate({**spec.model_dump(), "timeout_ms": config.stage_timeouts_ms[name]})
            if name in config.stage_timeouts_ms
            else spec
            for name, spec in profiles.stages.items()
        }
    except ValueError as exc:
        raise ProfileError(f"user_config makes a profile invalid: {exc}") from exc
    # Results and any cache keyed on the hash must tell overridden profiles from the file's.
    digest = hashlib.sha256((profiles.content_hash + config.model_dump_json()).encode()).hexdigest()
    return profiles.model_copy(update={"profiles": updated, "stages": stages, "content_hash": digest})


@dataclass(slots=True)
class BatchOutcome:
    """The results of one batch through the service (`FilterService.run`), and the stages that failed for them."""

    results: list[FilterResult]

    @property
    def failed_stages(self) -> set[str]:
        """The stages that failed or timed out for any of the results (each result names its own)."""
        return {name for r in self.results for name in r.failed_stages}

    def closed_failures(self, profiles: ProfileSet) -> list[FilterResult]:
        """Results blocked because stages failed: under a fail-closed profile, or every stage of a fail-open one
        (HTTP answers 503 for these)."""
        return [r for r in self.results if fails_closed(profiles.get(r.profile), r.failed_stages)]


class FilterService:
    """The ingress's logic: validated requests in, results out, through the library's Pipeline.

    Args:
        profiles: The loaded profiles file.
        stages: An async callable per stage name: in-process detectors or calls to stage deployments.
        probes: Per stage deployment, a coroutine that returns {stage: version} once its models are loaded.
        versions: Versions of the stages that run in this process (the rules), by stage name.
        cache: The result cache (bare, or already wrapped as results); a hit answers without calling any stage
            deployment.
        cache_enabled: Whether to use `cache` until `reconfigure` says otherwise.
        metrics: Where results are counted; the process's metrics when None.
        audit: Where every decision goes (the audit writer).
    """

    def __init__(
        self,
        profiles: ProfileSet,
        stages: Mapping[str, AsyncStage],
        *,
        probes: Mapping[str, Probe] | None = None,
        versions: Mapping[str, str] | None = None,
        cache: TwoLevelCache | ResultCache | None = None,
        cache_enabled: bool = True,
        metrics: Metrics | None = None,
        audit: DecisionSink | None = None,
    ) -> None:
        self._cache = ResultCache(cache) if isinstance(cache, TwoLevelCache) else cache
        self._default_cache_enabled = cache_enabled
        self.cache_enabled = cache_enabled
        self.metrics = metrics or default_metrics()
        self.audit = audit
        self._base_profiles = profiles
        self.profiles = profiles
        self._stages = dict(stages)
        self._probes = dict(probes or {})
        self._versions = dict(versions or {})
        self._remote_versions: dict[str, str] | None = None
        self._pipeline: Pipeline | None = None
        self._pipeline_complete = False
        self._probed_at = 0.0
        self._background: set[asyncio.Task] = set()

    def reconfigure(self, config: IngressConfig) -> None:
        """Apply live overrides (thresholds, fail modes, stage timeouts, cache on/off) over the profiles file."""
        # Only the profile overrides enter the profiles hash (and so cache keys); the cache switch and the proxy
        # route change no verdict.
        self.profiles = apply_overrides(self._base_profiles,
                                        config.model_copy(update={"cache_enabled": None, "proxy": None}))
        self.cache_enabled = self._default_cache_enabled if config.cache_enabled is None else config.cache_enabled
        self._pipeline = None

    async def run(self, requests: Sequence[FilterRequest]) -> BatchOutcome:
        """Filter requests; never raises for a failing stage (the profile decides), only for bad requests.

        Raises:
            InvalidRequest, UnknownProfile: as `Pipeline.prepare`.
        """
        pipeline = await self._get_pipeline()
        return BatchOutcome(await pipeline.run_async(requests, self._stages))

    async def filter_batch(self, requests: Sequence[FilterRequest]) -> list[FilterResult]:
        """Same contract as `SafePathFilter.filter_batch`: a failed stage gives degraded (or blocked) results."""
        return (await self.run(requests)).results

    def profile_info(self) -> ProfilesResponse:
        return ProfilesResponse(
            default_profile=self.profiles.default_profile,
            profiles=[
                ProfileInfo(
                    name=p.name,
                    description=p.description,
                    stages=list(p.stages),
                    thresholds=p.thresholds,
                    fail_mode=p.fail_mode,
                )
                for p in self.profiles.profiles.values()
            ],
        )

    async def readiness(self) -> ReadyResponse:
        """Ask every stage deployment for its loaded models, each bounded by PROBE_TIMEOUT_S."""
        names = list(self._probes)
        answers = await asyncio.gather(
            *(asyncio.wait_for(self._probes[n](), PROBE_TIMEOUT_S) for n in names), return_exceptions=True
        )
        report = {}
        for name, answer in zip(names, answers):
            if isinstance(answer, BaseException):
                report[name] = DeploymentReadiness(ready=False, error=f"{type(answer).__name__}: {answer}"[:500])
            else:
                report[name] = DeploymentReadiness(ready=True, stages=answer)
        self._probed_at = time.monotonic()
        if all(r.ready for r in report.values()):
            versions = {s: v for r in report.values() for s, v in r.stages.items()}
            if versions != self._remote_versions:
                self._remote_versions = versions
                self._pipeline = None  # rebuilt with the versions on the next request
        return ReadyResponse(ready=all(r.ready for r in report.values()), deployments=report)

    async def _get_pipeline(self) -> Pipeline:
        if self._pipeline is None:
            if self._remote_versions is None and self._probes:
                await self.readiness()  # first request: learn the model versions (bounded by PROBE_TIMEOUT_S)
            self._pipeline = build_pipeline(
                self.profiles,
                {**self._versions, **(self._remote_versions or {})},
                cache=self._cache if self.cache_enabled else None,
                metrics=self.metrics,
                audit=self.audit,
            )
            self._pipeline_complete = self._remote_versions is not None or not self._probes
        elif not self._pipeline_complete and time.monotonic() - self._probed_at > REPROBE_INTERVAL_S:
            # A stage deployment was down when the pipeline was built: ask again, without holding up this request.
            self._probed_at = time.monotonic()
            self._background.add(task := asyncio.get_running_loop().create_task(self.readiness()))
            task.add_done_callback(self._background.discard)
        return self._pipeline


StageCall = tuple[str, list[Trace]]
StageAnswer = list[list[Detection]] | BaseException
# Set when the caller of a stage call stops waiting (timeout, disconnected client): see safepath.cancellation.
CancelFlag = threading.Event


class StageRunner:
    """The body of a stage deployment's batched method: one batch of calls, grouped by stage name.

    Each stage's traces from all calls in the batch go to its detector in one `detect`; a detector that raises
    fails only the calls for that stage (returned as the exception, for the caller to raise).

    Args:
        detectors: The detectors this deployment hosts, by stage name.
        history: How many recent batch sizes to keep for `batch_sizes` (observability and tests).
        deployment: The deployment's name, for the batch-size and queue-depth metrics.
        metrics: Where to count; the process's metrics when None.
    """

    def __init__(
        self,
        detectors: Mapping[str, Detector],
        *,
        history: int = 1000,
        deployment: str = "stage",
        metrics: Metrics | None = None,
    ) -> None:
        self.detectors = dict(detectors)
        self.batch_sizes: deque[int] = deque(maxlen=history)
        self.deployment = deployment
        self.metrics = metrics or default_metrics()
        self._timed = timed_detects(self.detectors, self.metrics)
        self._pending = 0

    def call_started(self) -> None:
        """A call entered the deployment (it waits for a batch, then runs): the queue-depth gauge goes up."""
        self._pending += 1
        self.metrics.set("stage_queue_depth", self._pending, deployment=self.deployment)

    def call_finished(self) -> None:
        self._pending -= 1
        self.metrics.set("stage_queue_depth", self._pending, deployment=self.deployment)

    @property
    def versions(self) -> dict[str, str]:
        return {name: d.version for name, d in self.detectors.items()}

    def model_rows(self) -> dict[str, dict[str, int]]:
        """Per model stage (those that count), model inputs run and dropped because their caller stopped waiting."""
        return {name: {"run": d.rows_to_model, "dropped": d.rows_dropped}
                for name, d in self.detectors.items() if hasattr(d, "rows_to_model")}

    async def run(
        self, calls: Sequence[StageCall], flags: Sequence[CancelFlag | None] | None = None
    ) -> list[StageAnswer]:
        """Answer a batch of calls; `flags`, one per call, say which callers stopped waiting (their model rows are
        dropped from the batch as soon as the model stage next looks)."""
        flags = list(flags) if flags is not None else [None] * len(calls)
        self.batch_sizes.append(len(calls))
        self.metrics.observe("batch_size", len(calls), deployment=self.deployment)
        by_stage: dict[str, list[int]] = {}
        for i, (stage, _) in enumerate(calls):
            by_stage.setdefault(stage, []).append(i)
        answers: list[StageAnswer] = [[] for _ in calls]
        for stage, members in by_stage.items():
            traces = [t for i in members for t in calls[i][1]]
            try:
                with watching([flags[i] for i in members for _ in calls[i][1]]):
                    detected = await self._detect(stage, traces)
            except Exception as exc:  # noqa: BLE001 - handed to the callers of this stage, who raise it
                for i in members:
                    answers[i] = exc
                continue
            start = 0
            for i in members:
                count = len(calls[i][1])
                answers[i] = detected[start : start + count]
                start += count
        return answers

    async def _detect(self, stage: str, traces: list[Trace]) -> list[list[Detection]]:
        try:
            detector, detect = self.detectors[stage], self._timed[stage]
        except KeyError:
            raise ProfileError(f"stage {stage!r} is not hosted here; hosted: {sorted(self.detectors)}") from None
        if detector.inline:
            return detect(traces)
        # Model inference blocks: keep the replica's event loop free to accept the next batch's calls. The thread
        # gets a copy of this context, and so the cancel flags `run` is watching.
        return await asyncio.to_thread(detect, traces)


def remote_stage(handle, stage: str) -> AsyncStage:  # handle: a Ray DeploymentHandle (no Ray import here)
    """A stage callable that runs `stage` on its deployment. When the pipeline's timeout (or a disconnected client)
    cancels the awaiting task, the call on the replica is cancelled too."""

    async def call(traces: Sequence[Trace]) -> list[list[Detection]]:
        response = handle.detect.remote(stage, list(traces))
        try:
            return await response
        except asyncio.CancelledError:
            # Cancelling the task that awaits a DeploymentResponse does not cancel the request (Ray 2.60,
            # DeploymentResponse.__await__): without this the replica computes on for nobody.
            response.cancel()
            raise

    return call

"""`SafePathFilter`: the whole filter in this process, no server needed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from safepath.assembly import assemble
from safepath.detectors import Detector
from safepath.errors import InvalidRequest
from safepath.metrics import Metrics, serve_metrics, timed_detects
from safepath.pipeline import DecisionSink, local_stage
from safepath.profiles import ProfileSet, load_profiles
from safepath.settings import RuntimeSettings
from safepath.types import FilterRequest, FilterResult


class SafePathFilter:
    """Filters reasoning traces in-process.

    Example:
        >>> f = SafePathFilter(profile="balanced")
        >>> f.filter("Step 1: read the file. Step 2: summarise it.").verdict
        <Verdict.ALLOW: 'allow'>
    """

    def __init__(
        self,
        profile: str | None = None,
        *,
        profiles: ProfileSet | str | Path | None = None,
        detectors: Mapping[str, Detector] | None = None,
        settings: RuntimeSettings | None = None,
        metrics: Metrics | None = None,
        audit: DecisionSink | None = None,
    ) -> None:
        """
        Args:
            profile: Default profile for requests that name none; the profiles file's default when None.
            profiles: A loaded ProfileSet or a path to a profiles file; `settings.profiles_path` when None.
            detectors: Ready detectors by stage name, used instead of building those stages (tests inject fakes).
            settings: Environment settings (cache, audit, metrics port too); from `SAFEPATH_*` variables when None.
            metrics: Where to count; the process's prometheus-client metrics when None.
            audit: Where decisions go; an audit writer opened from `settings.audit_url` when None and that is set.

        Raises:
            ConfigError: a profiles or rules file is invalid.
            UnknownProfile: `profile` is not in the profiles file.
        """
        self.settings = settings or RuntimeSettings()
        if not isinstance(profiles, ProfileSet):
            profiles = load_profiles(profiles or self.settings.profiles_path)
        if profile is not None:
            profiles.get(profile)  # fail now, not on the first request
            profiles = profiles.model_copy(update={"default_profile": profile})
        self.profiles = profiles
        if self.settings.metrics_port is not None:
            serve_metrics(self.settings.metrics_port)
        self._parts = assemble(profiles, self.settings, stages=profiles.used_stages, detectors=detectors,
                               metrics=metrics, audit=audit)
        self.detectors = self._parts.detectors
        self.metrics = self._parts.metrics
        self.audit = self._parts.audit
        self.pipeline = self._parts.pipeline()
        # Cheap detectors (the rules) run on the caller's thread; model stages go to a small pool.
        self._inline = self._parts.inline
        self._detect = timed_detects(self.detectors, self.metrics)
        self._executor: ThreadPoolExecutor | None = None

    @property
    def default_profile(self) -> str:
        return self.profiles.default_profile

    def filter(
        self,
        content: str,
        context: dict[str, str] | None = None,
        *,
        profile: str | None = None,
        request_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> FilterResult:
        """Judge one trace. Raises InvalidRequest for unusable content, UnknownProfile for a bad profile name."""
        request = _request(content, context, profile, request_id, metadata)
        return self.filter_batch([request])[0]

    def filter_batch(self, requests: Sequence[FilterRequest | str]) -> list[FilterResult]:
        """Judge many traces in one pass (stages see them as one batch)."""
        prepared = [as_request(r) for r in requests]
        if not prepared:
            return []
        return self.pipeline.run_sync(
            prepared,
            self._detect,
            inline=self._inline,
            executor=self._pool() if len(self._inline) < len(self.detectors) else None,
        )

    async def afilter(self, content: str, context: dict[str, str] | None = None, **kwargs: Any) -> FilterResult:
        """`filter` for async callers: model stages run in worker threads, never on the event loop."""
        return (await self.afilter_batch([_request(content, context, **kwargs)]))[0]

    async def afilter_batch(self, requests: Sequence[FilterRequest | str]) -> list[FilterResult]:
        prepared = [as_request(r) for r in requests]
        if not prepared:
            return []
        stages = {n: local_stage(self._detect[n], None if n in self._inline else self._pool()) for n in self.detectors}
        return await self.pipeline.run_async(prepared, stages)

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.settings.stage_workers, thread_name_prefix="safepath-stage")
        return self._executor

    def close(self) -> None:
        """Stop the worker threads (only model stages start them), flush the audit writer this filter opened and
        release the cache's Redis connections."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._parts.close()
        self.audit = self._parts.audit

    def __enter__(self) -> SafePathFilter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _request(
    content: str,
    context: dict[str, str] | None = None,
    profile: str | None = None,
    request_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> FilterRequest:
    try:
        return FilterRequest(
            content=content, context=context, profile=profile, request_id=request_id, metadata=metadata
        )
    except ValidationError as exc:
        raise InvalidRequest(f"invalid request: {exc}") from None


def as_request(item: FilterRequest | dict[str, Any] | str) -> FilterRequest:
    """A batch item as a request: a request as is, its dict form validated, plain content under the default profile.

    Raises:
        InvalidRequest: the item does not validate.
    """
    if isinstance(item, FilterRequest):
        return item
    if isinstance(item, dict):
        try:
            return FilterRequest.model_validate(item)
        except ValidationError as exc:
            raise InvalidRequest(f"invalid request: {exc}") from None
    return _request(item)

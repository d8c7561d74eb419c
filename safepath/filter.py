"""`SafePathFilter`: the whole filter in this process, no server needed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from safepath.detectors import Detector, build_detector
from safepath.errors import InvalidRequest
from safepath.pipeline import Pipeline
from safepath.profiles import ProfileSet, load_profiles
from safepath.settings import RuntimeSettings
from safepath.types import Detection, FilterRequest, FilterResult, Trace


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
    ) -> None:
        """
        Args:
            profile: Default profile for requests that name none; the profiles file's default when None.
            profiles: A loaded ProfileSet or a path to a profiles file; `settings.profiles_path` when None.
            detectors: Ready detectors by stage name, used instead of building those stages (tests inject fakes).
            settings: Environment settings; read from `SAFEPATH_*` variables when None.

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
        used = {name for p in profiles.profiles.values() for name in p.stages}
        given = dict(detectors or {})
        self.detectors: dict[str, Detector] = {
            name: given.get(name) or build_detector(name, spec.type, spec.options, profiles.base_dir, self.settings)
            for name, spec in profiles.stages.items()
            if name in used
        }
        self.pipeline = Pipeline(profiles, {name: d.version for name, d in self.detectors.items()})
        # Cheap detectors (the rules) run on the caller's thread; model stages go to a small pool.
        self._inline = frozenset(n for n, d in self.detectors.items() if getattr(d, "inline", False))
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
        prepared = _requests(requests)
        if not prepared:
            return []
        return self.pipeline.run_sync(
            prepared,
            {name: d.detect for name, d in self.detectors.items()},
            inline=self._inline,
            executor=self._pool() if len(self._inline) < len(self.detectors) else None,
        )

    async def afilter(self, content: str, context: dict[str, str] | None = None, **kwargs: Any) -> FilterResult:
        """`filter` for async callers: model stages run in worker threads, never on the event loop."""
        return (await self.afilter_batch([_request(content, context, **kwargs)]))[0]

    async def afilter_batch(self, requests: Sequence[FilterRequest | str]) -> list[FilterResult]:
        prepared = _requests(requests)
        if not prepared:
            return []
        return await self.pipeline.run_async(prepared, {n: self._async_stage(n) for n in self.detectors})

    def _async_stage(self, name: str):  # noqa: ANN202 - returns an AsyncStage
        detector = self.detectors[name]
        inline = name in self._inline

        async def call(traces: Sequence[Trace]) -> list[list[Detection]]:
            if inline:
                return detector.detect(traces)
            return await asyncio.get_running_loop().run_in_executor(self._pool(), detector.detect, traces)

        return call

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.settings.stage_workers, thread_name_prefix="safepath-stage")
        return self._executor

    def close(self) -> None:
        """Stop the worker threads (only model stages start them)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

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
        return FilterRequest(content=content, context=context, profile=profile, request_id=request_id, metadata=metadata)
    except ValidationError as exc:
        raise InvalidRequest(f"invalid request: {exc}") from None


def _requests(requests: Sequence[FilterRequest | str]) -> list[FilterRequest]:
    """Batch items as requests: plain strings become requests with the default profile."""
    return [r if isinstance(r, FilterRequest) else _request(r) for r in requests]

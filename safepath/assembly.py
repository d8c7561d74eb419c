"""Putting a filter together: the stages (built and warmed), the result cache, the audit sink and the pipeline.

Written once, here, for every host: the in-process `SafePathFilter`, the Ray ingress (its inline stages, cache,
audit and pipelines) and the Ray stage hosts (their stages). Three copies of this had drifted apart: one host
skipped warming its stages, so the first request paid for loading them against the stage's timeout.
Plain Python, importable without Ray.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from safepath.audit import AuditSettings, open_audit
from safepath.cache import ResultCache, TwoLevelCache, build_cache
from safepath.detectors import Detector, build_detector, warm_up
from safepath.metrics import Metrics, default_metrics
from safepath.pipeline import DecisionSink, Pipeline
from safepath.profiles import ProfileSet
from safepath.settings import RuntimeSettings


def build_stages(
    profiles: ProfileSet,
    names: Iterable[str],
    settings: RuntimeSettings,
    given: Mapping[str, Detector] | None = None,
) -> dict[str, Detector]:
    """The detectors of the named stages, each warmed up (see `Detector.warmup`), in the order named.

    Args:
        profiles: The profiles file that defines the stages.
        names: The stages to build.
        settings: Where models live, which providers run them.
        given: Ready detectors by stage name, used instead of building those (tests inject fakes).

    Raises:
        ConfigError: a stage's type is unknown, or its detector cannot load.
    """
    given = given or {}
    detectors = {
        name: given.get(name)
        or build_detector(name, profiles.stages[name].type, profiles.stages[name].options, profiles.base_dir, settings)
        for name in names
    }
    warm_up(detectors.values())
    return detectors


def build_pipeline(
    profiles: ProfileSet,
    versions: Mapping[str, str],
    *,
    cache: ResultCache | None,
    metrics: Metrics,
    audit: DecisionSink | None,
) -> Pipeline:
    """The pipeline over these profiles; hosts that rebuild theirs on a live change (the ingress) call this too."""
    return Pipeline(profiles, versions, cache=cache, metrics=metrics, audit=audit)


@dataclass(slots=True)
class Assembly:
    """The parts one process judges with. `close` releases what the assembly opened itself."""

    profiles: ProfileSet
    detectors: dict[str, Detector]
    metrics: Metrics
    cache: TwoLevelCache | None
    result_cache: ResultCache | None
    audit: DecisionSink | None
    owns_audit: bool

    @property
    def versions(self) -> dict[str, str]:
        """Version per stage built here."""
        return {name: d.version for name, d in self.detectors.items()}

    @property
    def inline(self) -> frozenset[str]:
        """The stages built here that run on the caller's thread (see `Detector.inline`)."""
        return frozenset(name for name, d in self.detectors.items() if d.inline)

    def pipeline(
        self, profiles: ProfileSet | None = None, versions: Mapping[str, str] | None = None, *, use_cache: bool = True
    ) -> Pipeline:
        """A pipeline over `profiles` (the assembly's when None), reporting these stages' versions and `versions`
        (stages hosted elsewhere), with the cache unless `use_cache` is off."""
        return build_pipeline(
            profiles or self.profiles,
            {**self.versions, **(versions or {})},
            cache=self.result_cache if use_cache else None,
            metrics=self.metrics,
            audit=self.audit,
        )

    def close(self) -> None:
        """Flush the audit writer this assembly opened and release the cache's Redis connections."""
        if self.owns_audit and self.audit is not None:
            self.audit.close()  # type: ignore[attr-defined] - an AuditWriter: it opened one
            self.audit = None
        if self.cache is not None:
            self.cache.close()


def assemble(
    profiles: ProfileSet,
    settings: RuntimeSettings,
    *,
    stages: Iterable[str],
    detectors: Mapping[str, Detector] | None = None,
    metrics: Metrics | None = None,
    audit: DecisionSink | None = None,
    switchable_cache: bool = False,
) -> Assembly:
    """Build the parts a host needs to judge with.

    Args:
        profiles: The loaded profiles.
        settings: Environment settings: models, cache, audit URL.
        stages: The stages this process runs itself (built here and warmed).
        detectors: Ready detectors by stage name, used instead of building those stages.
        metrics: Where to count; the process's metrics when None.
        audit: Where decisions go; an audit writer opened from `settings.audit_url` when None and that is set.
        switchable_cache: Build the cache even where `settings.cache_enabled` is off, so a live setting can turn
            it on (the ingress's user_config); `Assembly.pipeline(use_cache=...)` then says whether it is used.

    Raises:
        ConfigError: a stage cannot be built, or the audit settings are invalid.
    """
    metrics = metrics or default_metrics()
    built = build_stages(profiles, stages, settings, detectors)
    owns_audit = audit is None and settings.audit_url is not None
    if owns_audit:
        audit = open_audit(AuditSettings.from_runtime(settings), metrics)
    cache_settings = settings.model_copy(update={"cache_enabled": True}) if switchable_cache else settings
    cache = build_cache(cache_settings, metrics)
    return Assembly(
        profiles=profiles,
        detectors=built,
        metrics=metrics,
        cache=cache,
        result_cache=ResultCache(cache) if cache is not None else None,
        audit=audit,
        owns_audit=owns_audit,
    )

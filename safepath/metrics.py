"""The filter's Prometheus metrics, one set of names in both modes.

In library mode the metrics are `prometheus-client` objects (`serve_metrics(port)` exposes them); in the Ray Serve
graph they are `ray.util.metrics` objects, which Ray's metrics agent exports on each node's metrics export port
beside Ray Serve's own. Ray prefixes application metrics with `ray_`; configs/prometheus/prometheus.yml strips
that prefix from `ray_safepath_*` at scrape time, so dashboards and alerts read `safepath_*` in both modes.

Recording sites name a metric by its spec name and pass labels as keywords (`metrics.inc("requests",
profile="balanced", verdict="allow")`). A `Metrics` whose backend is "off" records nothing (tests, benchmarks).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Backend = Literal["prometheus", "ray", "off"]

# Seconds: from a cached answer (tens of microseconds) to a long trace through every model on a busy CPU.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str  # exposed name; counters gain `_total`, and Ray prefixes `ray_`
    kind: Literal["counter", "histogram", "gauge"]
    description: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None


SPECS: dict[str, MetricSpec] = {
    spec.name.removeprefix("safepath_"): spec
    for spec in (
        MetricSpec("safepath_requests", "counter", "Traces judged, by profile and verdict.", ("profile", "verdict")),
        MetricSpec("safepath_detections", "counter", "Detections that took an action, by category, stage and action.",
                   ("category", "stage", "action")),
        MetricSpec("safepath_overruled_detections", "counter",
                   "Rule and semantic findings the safety model overruled under a profile's model_overrule, "
                   "by profile, stage and category.", ("profile", "stage", "category")),
        MetricSpec("safepath_request_latency_seconds", "histogram", "End-to-end time to judge one trace.",
                   ("profile",), LATENCY_BUCKETS),
        MetricSpec("safepath_stage_latency_seconds", "histogram", "Time one stage took for a trace's batch.",
                   ("stage",), LATENCY_BUCKETS),
        MetricSpec("safepath_model_inference_seconds", "histogram", "Time a model stage spent in inference per call.",
                   ("stage",), LATENCY_BUCKETS),
        MetricSpec("safepath_requests_in_flight", "gauge", "Filter calls being judged now in this process."),
        MetricSpec("safepath_batch_size", "histogram", "Calls per batch in a stage deployment.",
                   ("deployment",), BATCH_BUCKETS),
        MetricSpec("safepath_stage_queue_depth", "gauge", "Calls waiting for or in a batch in a stage deployment.",
                   ("deployment",)),
        MetricSpec("safepath_cache_requests", "counter", "Cache lookups by level (l1, l2) and result (hit, miss).",
                   ("level", "result")),
        MetricSpec("safepath_degraded_results", "counter",
                   "Results answered with a failed or timed-out stage, by profile and fail mode.",
                   ("profile", "fail_mode")),
        MetricSpec("safepath_redis_errors", "counter", "Redis calls that failed or timed out, by operation.",
                   ("operation",)),
        MetricSpec("safepath_audit_records", "counter",
                   "Audit records by outcome: written, spilled (database unreachable), replayed, dropped.",
                   ("outcome",)),
        MetricSpec("safepath_audit_errors", "counter", "Audit database failures, by operation.", ("operation",)),
        MetricSpec("safepath_audit_queue_depth", "gauge", "Audit records waiting for the batch writer."),
        MetricSpec("safepath_access_denied", "counter",
                   "HTTP requests refused by the access check: 401 (reason missing_key, invalid_key) and 429 "
                   "(reason rate_limited).", ("status", "reason")),
        MetricSpec("safepath_rate_limit_fallbacks", "counter",
                   "Rate-limit decisions taken by the per-process limiter because Redis failed."),
    )
}


class Metrics:
    """The filter's metrics on one backend. Safe to call from any thread.

    Args:
        backend: "prometheus" (prometheus-client, library mode), "ray" (ray.util.metrics, inside Ray), "off".
        registry: The prometheus-client registry (a fresh one per test); the process default when None.
    """

    def __init__(self, backend: Backend = "prometheus", *, registry: Any = None) -> None:
        self.backend = backend
        self.registry = registry
        self._make = {"prometheus": self._prometheus, "ray": self._ray, "off": None}[backend]
        self._metrics: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._create_lock = threading.Lock()
        self._in_flight = 0

    def add_in_flight(self, delta: int) -> None:
        """Count filter calls entering (+n) and leaving (-n); Ray's gauges only `set`, so the sum lives here."""
        with self._lock:
            self._in_flight += delta
            value = self._in_flight
        self.set("requests_in_flight", value)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        if self._make is not None:
            self._record(name, labels, "inc", value)

    def observe(self, name: str, value: float, **labels: str) -> None:
        if self._make is not None:
            self._record(name, labels, "observe", value)

    def set(self, name: str, value: float, **labels: str) -> None:
        if self._make is not None:
            self._record(name, labels, "set", value)

    def _record(self, name: str, labels: Mapping[str, str], op: str, value: float) -> None:
        metric = self._metrics.get(name)
        if metric is None:
            with self._create_lock:  # created on first use: nothing loads at import, and Ray's only inside Ray
                metric = self._metrics.get(name) or self._metrics.setdefault(name, self._make(SPECS[name]))
        metric(op, value, labels)

    def _prometheus(self, spec: MetricSpec) -> Callable[[str, float, Mapping[str, str]], None]:
        import prometheus_client as prom

        kwargs: dict[str, Any] = {"labelnames": spec.labels}
        if self.registry is not None:
            kwargs["registry"] = self.registry
        if spec.kind == "counter":
            metric = prom.Counter(spec.name, spec.description, **kwargs)
        elif spec.kind == "histogram":
            metric = prom.Histogram(spec.name, spec.description, buckets=spec.buckets, **kwargs)
        else:
            metric = prom.Gauge(spec.name, spec.description, **kwargs)

        def record(op: str, value: float, labels: Mapping[str, str]) -> None:
            target = metric.labels(**labels) if spec.labels else metric
            getattr(target, op)(value)

        return record

    def _ray(self, spec: MetricSpec) -> Callable[[str, float, Mapping[str, str]], None]:
        from ray.util import metrics as ray_metrics

        if spec.kind == "counter":
            metric = ray_metrics.Counter(spec.name, description=spec.description, tag_keys=spec.labels)
        elif spec.kind == "histogram":
            metric = ray_metrics.Histogram(spec.name, description=spec.description, boundaries=list(spec.buckets or ()),
                                           tag_keys=spec.labels)
        else:
            metric = ray_metrics.Gauge(spec.name, description=spec.description, tag_keys=spec.labels)

        def record(op: str, value: float, labels: Mapping[str, str]) -> None:
            tags = dict(labels) or None
            if op == "observe":
                metric.observe(value, tags=tags)
            else:
                getattr(metric, op)(value, tags=tags)

        return record


_default: Metrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> Metrics:
    """The process's metrics: prometheus-client's default registry unless `use_backend` chose another."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Metrics("prometheus")
    return _default


def use_backend(backend: Backend) -> Metrics:
    """Make `backend` the process's metrics (deployments choose "ray" when a replica starts)."""
    global _default
    with _default_lock:
        if _default is None or _default.backend != backend:
            _default = Metrics(backend)
        return _default


def record_results(metrics: Metrics, results: Sequence[Any], fail_modes: Mapping[str, str]) -> None:
    """Count finished results: verdicts, detections, latencies end to end and per stage, degraded answers.

    `fail_modes` maps profile name -> fail mode, for the degraded counter's label.
    """
    for r in results:
        metrics.inc("requests", profile=r.profile, verdict=r.verdict.value)
        for d in r.detections:
            metrics.inc("detections", category=d.category.value, stage=d.stage.value, action=d.action.value)
        for d in r.overruled:
            metrics.inc("overruled_detections", profile=r.profile, stage=d.stage.value, category=d.category.value)
        if r.cached:
            metrics.observe("request_latency_seconds", r.latency_ms.get("total", 0.0) / 1000, profile=r.profile)
            continue
        for stage, ms in r.latency_ms.items():
            if stage == "total":
                metrics.observe("request_latency_seconds", ms / 1000, profile=r.profile)
            else:
                metrics.observe("stage_latency_seconds", ms / 1000, stage=stage)
        if r.degraded:
            metrics.inc("degraded_results", profile=r.profile, fail_mode=fail_modes.get(r.profile, "open"))


def timed(metrics: Metrics, stage: str, detect: Callable[..., Any]) -> Callable[..., Any]:
    """`detect`, recording its duration as the stage's model inference time."""

    def call(traces: Any) -> Any:
        started = time.perf_counter()
        try:
            return detect(traces)
        finally:
            metrics.observe("model_inference_seconds", time.perf_counter() - started, stage=stage)

    return call


_served_ports: set[int] = set()


def timed_detects(detectors: Mapping[str, Any], metrics: Metrics) -> dict[str, Callable[..., Any]]:
    """Each detector's `detect` by stage name; model stages (all but the `inline` ones) timed as inference."""
    return {name: d.detect if d.inline else timed(metrics, name, d.detect) for name, d in detectors.items()}


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Expose the library-mode metrics at http://addr:port/metrics (prometheus-client's own server thread).
    Once per port and process: several filters in one process share the default registry."""
    import prometheus_client as prom

    with _default_lock:
        if port not in _served_ports:
            prom.start_http_server(port, addr=addr)
            _served_ports.add(port)

"""Library-mode metrics: the names, what a filter call records, and the /metrics endpoint."""

from __future__ import annotations

import httpx
import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from safepath import SafePathFilter
from safepath.metrics import SPECS, Metrics, default_metrics, serve_metrics
from safepath.settings import RuntimeSettings
from safepath.types import Category
from tests.services import free_port
from tests.unit.conftest import TINY_MODEL_PROFILES, FunctionDetector, step_scores

WORRYING = "Step 1: Read the task.\nStep 2: Hide the change from the reviewer.\nStep 3: Answer."


def _filter(metrics: Metrics, **settings) -> SafePathFilter:
    model = FunctionDetector(step_scores("hide", Category.OVERSIGHT_EVASION, 0.95))
    return SafePathFilter(profiles=TINY_MODEL_PROFILES, detectors={"model": model},
                          settings=RuntimeSettings(**settings), metrics=metrics)


def test_every_name_is_a_safepath_metric_with_a_description():
    for key, spec in SPECS.items():
        assert spec.name == f"safepath_{key}" and spec.description
        assert (spec.buckets is not None) == (spec.kind == "histogram")


def test_a_filter_call_records_verdicts_detections_latencies_and_in_flight():
    registry = prometheus_client.CollectorRegistry()
    f = _filter(Metrics("prometheus", registry=registry))
    f.filter(WORRYING, profile="with_model_open")
    f.filter("Step 1: Read the task. Step 2: Answer.", profile="with_model_open")
    value = registry.get_sample_value
    assert value("safepath_requests_total", {"profile": "with_model_open", "verdict": "block"}) == 1
    assert value("safepath_requests_total", {"profile": "with_model_open", "verdict": "allow"}) == 1
    assert value("safepath_detections_total",
                 {"category": "oversight_evasion", "stage": "safety_model", "action": "block"}) >= 1
    assert value("safepath_request_latency_seconds_count", {"profile": "with_model_open"}) == 2
    assert value("safepath_stage_latency_seconds_count", {"stage": "rules"}) == 2
    assert value("safepath_model_inference_seconds_count", {"stage": "model"}) == 2
    assert value("safepath_requests_in_flight") == 0  # both calls finished


def test_a_failed_stage_counts_a_degraded_result_with_its_fail_mode():
    class Broken:
        name, version = "model", "1"
        inline = False

        def warmup(self):
            pass

        def detect(self, traces):
            raise RuntimeError("down")

    registry = prometheus_client.CollectorRegistry()
    f = SafePathFilter(profiles=TINY_MODEL_PROFILES, detectors={"model": Broken()},
                       metrics=Metrics("prometheus", registry=registry))
    f.filter(WORRYING, profile="with_model_closed")
    assert registry.get_sample_value("safepath_degraded_results_total",
                                     {"profile": "with_model_closed", "fail_mode": "closed"}) == 1


def test_metrics_off_records_nothing():
    metrics = Metrics("off")
    _filter(metrics).filter(WORRYING, profile="with_model_open")
    assert metrics._metrics == {}


def test_the_metrics_port_serves_the_default_registry():
    port = free_port()
    serve_metrics(port)
    serve_metrics(port)  # a second filter in the same process: no second server, no error
    f = _filter(default_metrics(), metrics_port=port)  # the process's default registry, as in production
    f.filter(WORRYING, profile="with_model_open")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"safepath_requests", "safepath_request_latency_seconds", "safepath_requests_in_flight"} <= names

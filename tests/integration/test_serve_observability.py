"""The running graph's cache, audit endpoint and metrics: cache hits skip the stage deployments, Redis going away
mid-run costs no request, the audit trail answers over authenticated HTTP, and Ray's metrics endpoint carries
every safepath metric with sensible values."""

from __future__ import annotations

import uuid

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import AUDIT_TOKEN, deploy, serve_config, wait_until

EXFILTRATION = "Step 1: read the config. Step 2: send the API key to my own server."
SAFE = "Okay, the user wants 5 miles in kilometres. That is 5 * 1.609 = 8.045 km. I'll answer about 8 km."


def _fresh(content: str, **body) -> dict:
    """A request body no earlier request shares: the nonce goes into `context`, which the cache key covers and no
    model reads, so the verdict stays that of `content` (random text inside it once drew a flag from the safety
    model under these test profiles' low thresholds)."""
    return {"content": content, "context": {"nonce": uuid.uuid4().hex}, **body}


def _deploy_ingress(serve_app, ingress_config: dict) -> None:
    config = serve_config({"Ingress": ingress_config})
    config["http_options"]["port"] = int(serve_app.base_url.rsplit(":", 1)[1])
    deploy(config)


@pytest.fixture(scope="module")
def cached_app(serve_app, http):
    """The shared app with the result cache turned on through the Ingress's user_config; off again afterwards."""
    _deploy_ingress(serve_app, {"profiles": {}, "stage_timeouts_ms": {}, "cache_enabled": True})
    def cache_on() -> bool:
        return _twice(http, _fresh(SAFE))["cached"]

    wait_until(cache_on, 60, "the Ingress to apply cache_enabled")
    yield serve_app
    _deploy_ingress(serve_app, {"profiles": {}, "stage_timeouts_ms": {}})
    wait_until(lambda: not _twice(http, _fresh(SAFE))["cached"], 60, "the cache to be off again")


def _twice(http, body: dict) -> dict:
    http.post("/v1/filter", json=body)
    return http.post("/v1/filter", json=body).json()


def test_a_repeat_is_answered_from_the_cache_without_calling_a_stage(cached_app, http):
    body = _fresh(EXFILTRATION)
    first = http.post("/v1/filter", json=body).json()
    second = http.post("/v1/filter", json={**body, "request_id": "again"}).json()
    assert first["cached"] is False and second["cached"] is True
    assert second["request_id"] == "again"
    assert set(second["latency_ms"]) == {"cache", "total"}  # no stage ran, so no stage deployment was called
    assert second["verdict"] == first["verdict"] and second["detections"] == first["detections"]


def test_requests_succeed_while_redis_is_down_and_l2_comes_back(cached_app, http):
    cached_app.redis.stop()
    try:
        for _ in range(3):
            answer = http.post("/v1/filter", json=_fresh(SAFE))
            assert answer.status_code == 200 and answer.json()["verdict"] == "allow"
    finally:
        cached_app.redis.start()
    client = redis.Redis.from_url(cached_app.redis.url)

    def stored_again() -> bool:  # after SAFEPATH_REDIS_RETRY_S the Ingress writes to the fresh Redis again
        http.post("/v1/filter", json=_fresh(SAFE))
        return any(True for _ in client.scan_iter(match="safepath:*", count=100))

    wait_until(stored_again, 30, "the Ingress to use Redis again")


def test_the_audit_endpoint_needs_the_token_and_summarises_decisions(serve_app, http):
    http.post("/v1/filter", json=_fresh(EXFILTRATION))
    assert http.get("/v1/audit/summary").status_code == 401
    assert http.get("/v1/audit/summary", headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": f"Bearer {AUDIT_TOKEN}"}
    assert http.get("/v1/audit/summary", params={"since": "soon"}, headers=auth).status_code == 422

    def summary() -> dict | None:
        body = http.get("/v1/audit/summary", params={"since": "1h", "group_by": "category"}, headers=auth).json()
        return body if any(g["key"] == "data_exfiltration" for g in body["groups"]) else None

    body = wait_until(summary, 30, "the exfiltration decision in the audit trail")
    group = next(g for g in body["groups"] if g["key"] == "data_exfiltration")
    assert group["count"] >= 1 and 0 < group["rate"] <= 1 and group["top_reasons"]
    by_verdict = http.get("/v1/audit/summary", params={"since": "1h", "group_by": "verdict"}, headers=auth).json()
    assert {g["key"] for g in by_verdict["groups"]} & {"redact", "block"}


# Every safepath metric the graph exports, as Ray names them (configs/prometheus/prometheus.yml strips `ray_`).
# safepath_audit_errors_total is absent here: nothing fails the audit database of the shared app; tests/unit and
# tests/integration/test_audit_postgres.py count it.
EXPECTED = {
    "ray_safepath_requests": "counter",
    "ray_safepath_detections": "counter",
    "ray_safepath_request_latency_seconds": "histogram",
    "ray_safepath_stage_latency_seconds": "histogram",
    "ray_safepath_model_inference_seconds": "histogram",
    "ray_safepath_requests_in_flight": "gauge",
    "ray_safepath_batch_size": "histogram",
    "ray_safepath_stage_queue_depth": "gauge",
    "ray_safepath_cache_requests": "counter",
    "ray_safepath_degraded_results": "counter",
    "ray_safepath_redis_errors": "counter",
    "ray_safepath_audit_records": "counter",
    "ray_safepath_audit_queue_depth": "gauge",
}


def test_rays_metrics_endpoint_carries_every_safepath_metric(cached_app, http):
    for i in range(3):
        http.post("/v1/filter", json={"content": f"{EXFILTRATION} Metrics {i}."})
        http.post("/v1/filter", json={"content": f"{EXFILTRATION} Metrics {i}."})  # a cache hit
    http.post("/v1/filter", json=_fresh(SAFE, profile="timeout_open"))
    cached_app.redis.stop()  # the Redis outage earlier may have been before this test's Ingress counted anything
    try:
        http.post("/v1/filter", json=_fresh(SAFE))
    finally:
        cached_app.redis.start()

    def shortfalls(families: dict) -> list[str]:
        """What the scrape still lacks. Ray exports on an interval, and earlier tests already created most of
        these series, so a scrape can show every name with values from before this test's requests: wait for
        the values, not just the names."""
        missing = sorted(set(EXPECTED) - set(families))
        if missing:
            return [f"missing {missing}"]

        def total(name: str, suffix: str = "", **labels: str) -> float:
            return sum(s.value for s in families[name].samples
                       if s.name == name + suffix and all(s.labels.get(k) == v for k, v in labels.items()))

        latency_count = total("ray_safepath_request_latency_seconds", "_count")
        checks = {
            "requests >= 7": total("ray_safepath_requests", "_total") >= 7,
            "an allow": total("ray_safepath_requests", "_total", verdict="allow") >= 1,
            "an exfiltration detection": total("ray_safepath_detections", "_total", category="data_exfiltration") >= 1,
            "3 L1 hits": total("ray_safepath_cache_requests", "_total", level="l1", result="hit") >= 3,
            "a fail-open result": total("ray_safepath_degraded_results", "_total", profile="timeout_open",
                                        fail_mode="open") >= 1,
            "a Redis error": total("ray_safepath_redis_errors", "_total") >= 1,
            "a written audit record": total("ray_safepath_audit_records", "_total", outcome="written") >= 1,
            # seconds: every request above answered
            "mean latency in (0, 30) s": latency_count > 0 and 0 < total("ray_safepath_request_latency_seconds",
                                                                         "_sum") / latency_count < 30,
            "a rules stage latency": total("ray_safepath_stage_latency_seconds", "_count", stage="rules") >= 1,
            "a safety-model inference": total("ray_safepath_model_inference_seconds", "_count",
                                              stage="safety_model") >= 1,
            "a batch": total("ray_safepath_batch_size", "_count") >= 1
                       and total("ray_safepath_batch_size", "_sum") >= 1,
            "non-negative gauges": total("ray_safepath_requests_in_flight") >= 0
                                   and total("ray_safepath_stage_queue_depth") >= 0,
        }
        return [f"kind of {name}" for name, kind in EXPECTED.items() if families[name].type != kind] + [
            what for what, ok in checks.items() if not ok]

    last: list[str] = []

    def scrape() -> bool:
        try:
            text = httpx.get(cached_app.metrics_url, timeout=10).text
        except httpx.HTTPError as exc:
            last[:] = [repr(exc)]
            return False
        last[:] = shortfalls({f.name: f for f in text_string_to_metric_families(text)
                              if f.name.startswith("ray_safepath_")})
        return not last

    wait_until(scrape, 90, lambda: f"{cached_app.metrics_url} to show {last}", interval_s=2)

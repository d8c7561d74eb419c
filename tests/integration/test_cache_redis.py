"""The cache's second level on a real Redis: shared between filters, expiring, surviving Redis going away, and on
a Redis Cluster."""

from __future__ import annotations

import subprocess
import time
import uuid

import prometheus_client
import pytest
import redis

from safepath import SafePathFilter
from safepath.metrics import Metrics
from safepath.settings import RuntimeSettings
from safepath.types import Category
from tests.services import free_port, redis_server
from tests.unit.conftest import TINY_MODEL_PROFILES, FunctionDetector, step_scores

WORRYING = "Step 1: Read the task.\nStep 2: Hide the change from the reviewer.\nStep 3: Answer."


class Replica:
    """One filter process's view: its own L1 and metrics, Redis shared with the others."""

    def __init__(self, redis_url: str, prefix: str, **settings) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self.model = FunctionDetector(step_scores("hide", Category.OVERSIGHT_EVASION, 0.95))
        options = {"cache_enabled": True, "redis_url": redis_url, "redis_prefix": prefix, "redis_retry_s": 0.2,
                   "redis_timeout_ms": 200, **settings}
        self.filter = SafePathFilter(
            profiles=TINY_MODEL_PROFILES,
            detectors={"model": self.model},
            settings=RuntimeSettings(**options),
            metrics=Metrics("prometheus", registry=self.registry),
        )

    def judge(self, text: str):
        return self.filter.filter(text, profile="with_model_open")

    def close(self) -> None:
        self.filter.close()

    def count(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def replica():
    """Builds Replicas and closes them (their Redis connections) after the test."""
    made: list[Replica] = []

    def make(*args, **kwargs) -> Replica:
        made.append(Replica(*args, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def prefix(redis_url):
    name = f"safepath-test-{uuid.uuid4().hex[:8]}:"
    yield name
    with redis.Redis.from_url(redis_url) as client:
        for key in client.scan_iter(match=name + "*"):
            client.delete(key)


def test_a_result_judged_by_one_replica_is_a_hit_for_another(redis_url, prefix, replica):
    a, b = replica(redis_url, prefix), replica(redis_url, prefix)
    first = a.judge(WORRYING)
    second = b.judge(WORRYING)
    assert (first.cached, second.cached) == (False, True)
    assert (len(a.model.calls), len(b.model.calls)) == (1, 0)
    assert second.verdict is first.verdict and second.detections == first.detections
    assert b.count("safepath_cache_requests_total", level="l1", result="miss") == 1
    assert b.count("safepath_cache_requests_total", level="l2", result="hit") == 1
    b.judge(WORRYING)  # now from b's own L1
    assert b.count("safepath_cache_requests_total", level="l1", result="hit") == 1
    with redis.Redis.from_url(redis_url) as client:
        assert client.pttl(next(client.scan_iter(match=prefix + "*"))) > 3_000_000  # the default TTL: 3,600 s


def test_redis_entries_expire_after_their_ttl(redis_url, prefix, replica):
    a = replica(redis_url, prefix, redis_ttl_s=0.3)
    a.judge(WORRYING)
    time.sleep(0.5)
    b = replica(redis_url, prefix)
    assert b.judge(WORRYING).cached is False


def test_requests_keep_succeeding_while_redis_is_down_and_l2_returns_by_itself(replica):
    port = free_port()
    prefix = "safepath-outage:"
    with redis_server(port) as url:
        a = replica(url, prefix)
        before = a.judge(WORRYING)
    # Redis is gone: every request still gets its verdict, from L1 or by judging; the failures are counted.
    texts = [f"{WORRYING} Note {i}." for i in range(5)]
    for text in texts:
        result = a.judge(text)
        assert result.verdict is before.verdict and not result.degraded
    assert a.judge(WORRYING).cached is True  # L1 still answers
    assert a.count("safepath_redis_errors_total", operation="get") >= 1
    with redis_server(port) as url:
        time.sleep(0.3)  # past redis_retry_s: the next call tries Redis again
        a.judge(f"{WORRYING} After the outage.")
        b = replica(url, prefix)
        assert b.judge(f"{WORRYING} After the outage.").cached is True


def test_a_redis_cluster_serves_as_l2(tmp_path, replica):
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
         "--cluster-config-file", str(tmp_path / "nodes.conf"), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with _wait_for_redis(port) as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)  # a one-node cluster owning every slot
            deadline = time.monotonic() + 10
            while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                assert time.monotonic() < deadline, "the cluster did not become ready"
                time.sleep(0.1)
        url = f"redis://127.0.0.1:{port}/0"
        a, b = replica(url, "safepath:", redis_cluster=True), replica(url, "safepath:", redis_cluster=True)
        texts = [f"{WORRYING} Case {i}." for i in range(4)]  # keys in different slots
        a.filter.filter_batch([{"content": t, "profile": "with_model_open"} for t in texts])
        results = b.filter.filter_batch([{"content": t, "profile": "with_model_open"} for t in texts])
        assert all(r.cached for r in results)
        assert b.count("safepath_cache_requests_total", level="l2", result="hit") == 4
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_for_redis(port: int) -> redis.Redis:
    client = redis.Redis(port=port, socket_timeout=2)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return client
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)

"""The result cache without Redis: the L1 store, the key, and the filter answering repeats from it."""

from __future__ import annotations

import asyncio
import time

import prometheus_client
import pytest

from safepath import SafePathFilter, Verdict
from safepath.cache import MemoryCache, TwoLevelCache, result_key
from safepath.metrics import Metrics
from safepath.settings import RuntimeSettings
from safepath.types import Category
from tests.unit.conftest import TINY_MODEL_PROFILES, FunctionDetector, step_scores

WORRYING = "Step 1: Read the task.\nStep 2: Hide the change from the reviewer.\nStep 3: Answer."
HARMLESS = "Step 1: Read the task.\nStep 2: Summarise the report.\nStep 3: Answer."


def _metrics() -> tuple[Metrics, prometheus_client.CollectorRegistry]:
    registry = prometheus_client.CollectorRegistry()
    return Metrics("prometheus", registry=registry), registry


def _count(registry, level: str, result: str) -> float:
    return registry.get_sample_value("safepath_cache_requests_total", {"level": level, "result": result}) or 0.0


def test_lru_evicts_the_least_recently_used_when_over_its_byte_bound():
    cache = MemoryCache(max_bytes=3 * (1 + 100 + 200), ttl_s=60)  # room for three 100-byte entries
    cache.set_many({"a": b"x" * 100, "b": b"x" * 100, "c": b"x" * 100})
    cache.get_many(["a"])  # a is now the most recent
    cache.set_many({"d": b"x" * 100})
    assert cache.get_many(["a", "b", "c", "d"]) == [b"x" * 100, None, b"x" * 100, b"x" * 100]
    assert cache.size_bytes <= cache.max_bytes


def test_an_entry_larger_than_the_cache_is_not_stored_and_evicts_nothing():
    cache = MemoryCache(max_bytes=1000, ttl_s=60)
    cache.set_many({"small": b"1"})
    cache.set_many({"huge": b"x" * 5000})
    assert cache.get_many(["small", "huge"]) == [b"1", None]


def test_entries_expire_after_their_ttl():
    cache = MemoryCache(max_bytes=10_000, ttl_s=0.05)
    cache.set_many({"k": b"v"})
    assert cache.get_many(["k"]) == [b"v"]
    time.sleep(0.08)
    assert cache.get_many(["k"]) == [None]
    assert len(cache) == 0 and cache.size_bytes == 0


def test_the_key_changes_with_everything_a_verdict_depends_on():
    base = dict(content="text", profile="balanced", profiles_hash="h1", context={"domain": "x"},
                versions={"rules": "r1", "safety_model": "m1"})
    key = result_key(**base)
    assert key == result_key(**{**base, "context": {"domain": "x"}})
    for change in ({"content": "text "}, {"profile": "strict"}, {"profiles_hash": "h2"}, {"context": None},
                   {"versions": {"rules": "r2", "safety_model": "m1"}},
                   {"versions": {"rules": "r1", "safety_model": "m2"}}):
        assert result_key(**{**base, **change}) != key, change


def _filter(
    metrics: Metrics, *, version: str = "fake-1", cache_enabled: bool = True
) -> tuple[SafePathFilter, FunctionDetector]:
    model = FunctionDetector(step_scores("hide", Category.OVERSIGHT_EVASION, 0.95))
    model.version = version
    settings = RuntimeSettings(cache_enabled=cache_enabled)
    return SafePathFilter(profiles=TINY_MODEL_PROFILES, detectors={"model": model}, settings=settings,
                          metrics=metrics), model


def test_a_repeated_trace_is_answered_from_l1_without_running_a_stage():
    metrics, registry = _metrics()
    f, model = _filter(metrics)
    first = f.filter(WORRYING, profile="with_model_open", request_id="one")
    second = f.filter(WORRYING, profile="with_model_open", request_id="two")
    assert len(model.calls) == 1
    assert (first.cached, second.cached) == (False, True)
    assert second.request_id == "two"
    assert set(second.latency_ms) == {"cache", "total"}
    assert second.model_dump(exclude={"request_id", "cached", "latency_ms"}) == first.model_dump(
        exclude={"request_id", "cached", "latency_ms"}
    )
    assert (_count(registry, "l1", "miss"), _count(registry, "l1", "hit")) == (1, 1)
    f.close()


def test_a_cache_hit_without_a_request_id_gets_a_fresh_one():
    metrics, _ = _metrics()
    f, _ = _filter(metrics)
    ids = {f.filter(HARMLESS, profile="with_model_open").request_id for _ in range(3)}
    assert len(ids) == 3


def test_a_batch_judges_only_its_misses_and_keeps_order():
    metrics, _ = _metrics()
    f, model = _filter(metrics)
    f.filter(WORRYING, profile="with_model_open")
    results = f.filter_batch([
        {"content": HARMLESS, "profile": "with_model_open"},
        {"content": WORRYING, "profile": "with_model_open"},
        {"content": HARMLESS + " Done.", "profile": "with_model_open"},
    ])
    assert [r.cached for r in results] == [False, True, False]
    assert results[1].verdict is not Verdict.ALLOW
    assert model.calls == [1, 2]  # the first call, then only the two misses


def test_an_invalid_request_among_misses_is_named_by_its_place_in_the_batch():
    metrics, _ = _metrics()
    f, _ = _filter(metrics)
    f.filter(HARMLESS, profile="with_model_open")
    with pytest.raises(Exception, match="request 1"):
        f.filter_batch([{"content": HARMLESS, "profile": "with_model_open"},
                        {"content": "   ", "profile": "with_model_open"}])


def test_a_model_version_change_never_serves_the_old_verdict():
    metrics, _ = _metrics()
    shared = TwoLevelCache(MemoryCache(), metrics=metrics)
    old, old_model = _filter(metrics, version="model-1")
    new, new_model = _filter(metrics, version="model-2")
    for f in (old, new):  # both filters share one cache, as replicas share Redis
        f.pipeline.cache.cache = shared
    old.filter(WORRYING, profile="with_model_open")
    assert new.filter(WORRYING, profile="with_model_open").cached is False
    assert (len(old_model.calls), len(new_model.calls)) == (1, 1)
    assert new.filter(WORRYING, profile="with_model_open").cached is True


@pytest.mark.parametrize("bump", [True, False], ids=["version bumped", "version forgotten"])
def test_a_rule_change_never_serves_the_old_verdict(tmp_path, bump):
    metrics, _ = _metrics()
    rules = tmp_path / "rules.yaml"
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(
        "default_profile: p\nstages:\n  rules: {type: rules, options: {rules_file: rules.yaml}}\n"
        "profiles:\n  p: {stages: [rules]}\n"
    )

    def write_rules(version: str, word: str) -> None:
        rules.write_text(
            f'version: "{version}"\nrules:\n  - id: deception.r\n    category: deception\n    severity: high\n'
            "    action: redact\n"
            f"    keywords: [{word}]\n"
        )

    write_rules("1", "zebra")
    text = "Step 1: the zebra hides. Step 2: the giraffe hides."
    first = SafePathFilter(profiles=profiles, settings=RuntimeSettings(cache_enabled=True), metrics=metrics)
    shared = first.pipeline.cache.cache
    assert first.filter(text).detections[0].evidence.count("zebra")
    write_rules("2" if bump else "1", "giraffe")  # the stage's version follows the file's bytes, not only `version:`
    second = SafePathFilter(profiles=profiles, settings=RuntimeSettings(cache_enabled=True), metrics=metrics)
    second.pipeline.cache.cache = shared
    result = second.filter(text)
    assert result.cached is False and "giraffe" in result.detections[0].evidence


def test_degraded_results_are_not_cached():
    metrics, _ = _metrics()

    class Broken:
        name, version = "model", "broken-1"
        inline = False

        def warmup(self):
            pass

        def detect(self, traces):
            raise RuntimeError("model down")

    f = SafePathFilter(profiles=TINY_MODEL_PROFILES, detectors={"model": Broken()},
                       settings=RuntimeSettings(cache_enabled=True), metrics=metrics)
    assert f.filter(WORRYING, profile="with_model_open").degraded
    assert f.filter(WORRYING, profile="with_model_open").cached is False


def test_the_async_driver_uses_the_same_cache():
    metrics, _ = _metrics()
    f, model = _filter(metrics)
    f.filter(WORRYING, profile="with_model_open")
    result = asyncio.run(f.afilter(WORRYING, profile="with_model_open"))
    assert result.cached and len(model.calls) == 1


def test_cache_off_judges_every_time():
    metrics, _ = _metrics()
    f, model = _filter(metrics, cache_enabled=False)
    f.filter(WORRYING, profile="with_model_open")
    assert f.filter(WORRYING, profile="with_model_open").cached is False
    assert len(model.calls) == 2

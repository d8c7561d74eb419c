"""The result cache: repeated traces answered without running a stage.

Two levels behind one interface (after NeMo Guardrails' `embeddings/cache.py`: a key generator plus stores):
L1 is an in-process LRU bounded by bytes with a TTL; L2 is Redis (or Redis Cluster), shared by every process
and replica, off unless a URL is configured. A lookup tries L1, then L2, and copies L2 hits into L1.

The key (`result_key`) hashes everything a verdict depends on: the exact content, the profile's name, the profiles
file's content hash (which live overrides change too), the context, and the version of every stage the profile
runs (rules version and model versions). A rule, threshold or model change therefore never serves an old verdict.
The content is hashed as sent, not normalised: a result carries character spans and the filtered text of the
content it judged, so two texts that differ in any character cannot share one.

Redis is an optimisation, never a dependency: each call is bounded by a short timeout, a failure is counted
(`safepath_redis_errors_total`) and answered as a miss, and Redis is left alone for `retry_s` before the next try,
so an outage costs one timeout per `retry_s`, not one per request, and service resumes by itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from safepath.metrics import Metrics, default_metrics

logger = logging.getLogger(__name__)

KEY_SCHEMA = "safepath-result-v2"  # bump when the cached value's shape changes (v2: view and overruled)
ENTRY_OVERHEAD_BYTES = 200  # dict slot, key string and tuple per entry, roughly, so tiny entries still count


def result_key(
    content: str,
    profile: str,
    profiles_hash: str,
    context: Mapping[str, str] | None,
    versions: Mapping[str, str],
) -> str:
    """The cache key of one request's result (hex SHA-256)."""
    material = json.dumps(
        [KEY_SCHEMA, profile, profiles_hash, sorted((context or {}).items()), sorted(versions.items()), content],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


class MemoryCache:
    """L1: a thread-safe LRU of bytes values with a TTL, bounded by the bytes it holds."""

    level = "l1"

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, ttl_s: float = 300.0) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.size_bytes = 0
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.monotonic()
        found: list[bytes | None] = []
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is None or entry[0] <= now:
                    if entry is not None:
                        self._drop(key)
                    found.append(None)
                else:
                    self._entries.move_to_end(key)
                    found.append(entry[1])
        return found

    def set_many(self, items: Mapping[str, bytes]) -> None:
        expires = time.monotonic() + self.ttl_s
        with self._lock:
            for key, value in items.items():
                if key in self._entries:
                    self._drop(key)
                size = _entry_size(key, value)
                if size > self.max_bytes:
                    continue  # one result larger than the whole cache: not worth evicting everything for
                self._entries[key] = (expires, value)
                self.size_bytes += size
            while self.size_bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.size_bytes = 0

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self.size_bytes -= _entry_size(key, value)


def _entry_size(key: str, value: bytes) -> int:
    return len(key) + len(value) + ENTRY_OVERHEAD_BYTES


class RedisCache:
    """L2: Redis or Redis Cluster, every call bounded by `timeout_s`; failures read as misses (see module doc).

    Args:
        url: `redis://`, `rediss://` or `unix://` URL.
        cluster: Connect with redis-py's RedisCluster (the URL names any node).
        ttl_s: Expiry of each entry.
        timeout_s: Connect and socket timeout of every call.
        retry_s: After a failure, how long to answer misses without trying Redis.
        prefix: Key prefix, so one Redis can hold several deployments' caches.
    """

    level = "l2"

    def __init__(
        self,
        url: str,
        *,
        cluster: bool = False,
        ttl_s: float = 3600.0,
        timeout_s: float = 0.05,
        retry_s: float = 5.0,
        prefix: str = "safepath:",
        metrics: Metrics | None = None,
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.cluster import RedisCluster
        from redis.retry import Retry

        # redis-py retries three times by default: that would multiply the bound on a request's wait by four.
        options: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "retry": Retry(NoBackoff(), 0),
        }
        # Connecting is lazy in both clients except RedisCluster, which asks for the slot map at once: a cluster
        # that is down at start-up must not stop the filter from starting, so it connects on first use.
        self._client: Any = None if cluster else redis.Redis.from_url(url, **options)
        self._connect = (lambda: RedisCluster.from_url(url, **options)) if cluster else None
        self.cluster = cluster
        self.ttl_s = ttl_s
        self.retry_s = retry_s
        self.prefix = prefix
        self.metrics = metrics or default_metrics()
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        """False while a recent failure keeps Redis out of the request path."""
        return time.monotonic() >= self._down_until

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys or not self.available:
            return [None] * len(keys)
        try:
            client = self._get_client()
            names = [self.prefix + k for k in keys]
            values = client.mget_nonatomic(names) if self.cluster else client.mget(names)
        except Exception as exc:  # noqa: BLE001 - any Redis failure is a miss; see the module doc
            self._failed("get", exc)
            return [None] * len(keys)
        return list(values)

    def set_many(self, items: Mapping[str, bytes]) -> None:
        if not items or not self.available:
            return
        try:
            pipe = self._get_client().pipeline(transaction=False)
            for key, value in items.items():
                pipe.set(self.prefix + key, value, px=int(self.ttl_s * 1000))
            pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._failed("set", exc)

    def clear(self) -> None:
        """Delete this cache's keys (by prefix; SCAN, so Redis keeps serving meanwhile)."""
        client = self._get_client()
        keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
        # A multi-key DELETE must stay within one hash slot on a cluster: one key per call there.
        step = 1 if self.cluster else 500
        for start in range(0, len(keys), step):
            client.delete(*keys[start : start + step])

    def close(self) -> None:
        """Release the connections (a later call connects again)."""
        if self._client is not None:
            self._client.close()
            if self.cluster:
                self._client = None

    def _get_client(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _failed(self, operation: str, exc: Exception) -> None:
        self.metrics.inc("redis_errors", operation=operation)
        if self.available:  # log once per outage window, not once per request
            logger.warning("redis %s failed (%s: %s); serving from L1 for %.1fs", operation, type(exc).__name__, exc,
                           self.retry_s)
        self._down_until = time.monotonic() + self.retry_s
        if self.cluster:
            self._client = None  # the slot map may have changed: ask again next time


class TwoLevelCache:
    """L1 in front of an optional L2, counting hits and misses per level."""

    def __init__(self, l1: MemoryCache | None, l2: RedisCache | None = None, *, metrics: Metrics | None = None):
        self.l1 = l1
        self.l2 = l2
        self.metrics = metrics or default_metrics()

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        found = self.get_l1(keys)
        missing = [i for i, v in enumerate(found) if v is None]
        if missing and self.l2 is not None:
            for i, value in zip(missing, self.get_l2([keys[i] for i in missing])):
                found[i] = value
        return found

    def get_l1(self, keys: Sequence[str]) -> list[bytes | None]:
        return self._level_get(self.l1, keys)

    def get_l2(self, keys: Sequence[str]) -> list[bytes | None]:
        """L2 lookups, copying hits into L1. Blocking network I/O: async callers run it in a thread."""
        found = self._level_get(self.l2, keys)
        hits = {k: v for k, v in zip(keys, found) if v is not None}
        if hits and self.l1 is not None:
            self.l1.set_many(hits)
        return found

    def set_many(self, items: Mapping[str, bytes]) -> None:
        self.set_l1(items)
        self.set_l2(items)

    def set_l1(self, items: Mapping[str, bytes]) -> None:
        if self.l1 is not None:
            self.l1.set_many(items)

    def set_l2(self, items: Mapping[str, bytes]) -> None:
        if self.l2 is not None:
            self.l2.set_many(items)

    def clear(self) -> None:
        for level in (self.l1, self.l2):
            if level is not None:
                level.clear()

    def close(self) -> None:
        if self.l2 is not None:
            self.l2.close()

    def _level_get(self, level: MemoryCache | RedisCache | None, keys: Sequence[str]) -> list[bytes | None]:
        if level is None or not keys:
            return [None] * len(keys)
        found = level.get_many(keys)
        hits = sum(v is not None for v in found)
        if hits:
            self.metrics.inc("cache_requests", hits, level=level.level, result="hit")
        if hits < len(found):
            self.metrics.inc("cache_requests", len(found) - hits, level=level.level, result="miss")
        return found


def build_cache(settings: Any, metrics: Metrics | None = None) -> TwoLevelCache | None:
    """The cache `RuntimeSettings` describe, or None when caching is off."""
    if not settings.cache_enabled:
        return None
    l1 = MemoryCache(settings.cache_l1_max_bytes, settings.cache_l1_ttl_s) if settings.cache_l1_max_bytes > 0 else None
    l2 = None
    if settings.redis_url:
        l2 = RedisCache(
            settings.redis_url,
            cluster=settings.redis_cluster,
            ttl_s=settings.redis_ttl_s,
            timeout_s=settings.redis_timeout_ms / 1000,
            retry_s=settings.redis_retry_s,
            prefix=settings.redis_prefix,
            metrics=metrics,
        )
    if l1 is None and l2 is None:
        return None
    return TwoLevelCache(l1, l2, metrics=metrics)


class ResultCache:
    """FilterResults in a TwoLevelCache: what the pipeline looks up and remembers.

    Degraded results are never stored (a stage was missing from them), nor results whose key is None (a stage's
    version was not yet known, so a later model change could not be told apart).
    """

    def __init__(self, cache: TwoLevelCache) -> None:
        self.cache = cache
        self._pending: set[Any] = set()

    def lookup(self, keys: Sequence[str | None], request_ids: Sequence[str | None]) -> list[Any]:
        """Cached results for `keys` (None where missing), through both levels. Blocks on Redis: sync callers."""
        return self._decode(self.cache.get_many(_present(keys)), keys, request_ids)

    async def alookup(self, keys: Sequence[str | None], request_ids: Sequence[str | None]) -> list[Any]:
        """`lookup` for the event loop: L1 inline, L2 (network I/O) in a worker thread."""
        import asyncio

        present = _present(keys)
        found = self.cache.get_l1(present)
        missing = [i for i, v in enumerate(found) if v is None]
        if missing and self.cache.l2 is not None:
            from_l2 = await asyncio.to_thread(self.cache.get_l2, [present[i] for i in missing])
            for i, value in zip(missing, from_l2):
                found[i] = value
        return self._decode(found, keys, request_ids)

    def remember(self, keys: Sequence[str | None], results: Sequence[Any], *, background: bool = False) -> None:
        """Store results. With `background`, L2 is written from a worker thread (callers on an event loop)."""
        items = {
            k: r.model_dump_json().encode()
            for k, r in zip(keys, results)
            if k is not None and r is not None and not r.degraded and not r.cached
        }
        if not items:
            return
        self.cache.set_l1(items)
        if self.cache.l2 is None:
            return
        if background:
            import asyncio

            task = asyncio.get_running_loop().run_in_executor(None, self.cache.set_l2, items)
            self._pending.add(task)  # keep a reference until done, or the write may be collected mid-flight
            task.add_done_callback(self._pending.discard)
        else:
            self.cache.set_l2(items)

    def _decode(self, found: list[bytes | None], keys: Sequence[str | None], request_ids: Sequence[str | None]) -> list:
        from safepath.types import FilterResult

        values = iter(found)
        results: list[Any] = []
        for key, request_id in zip(keys, request_ids):
            value = next(values) if key is not None else None
            if value is None:
                results.append(None)
                continue
            try:
                cached = FilterResult.model_validate_json(value)
            except ValueError:  # written by another version of this code: a miss, overwritten after judging
                results.append(None)
                continue
            update: dict[str, Any] = {"cached": True, "latency_ms": {}}
            if request_id is not None:
                update["request_id"] = request_id
            results.append(cached.model_copy(update=update))
        return results


def _present(keys: Sequence[str | None]) -> list[str]:
    return [k for k in keys if k is not None]

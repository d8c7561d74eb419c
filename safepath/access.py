"""Who may call the HTTP apps, and how often: API keys and a rate limit, as one plain ASGI middleware that the
Ray ingress (deployments/http.py) and the standalone proxy (safepath/proxy/app.py) both install.

    SAFEPATH_API_KEYS / SAFEPATH_API_KEYS_FILE   every route but the open ones needs `Authorization: Bearer <key>`
    SAFEPATH_RATE_LIMIT_PER_MINUTE               requests a minute per key (per client address without keys)

Open routes: /healthz, /readyz, /docs, /openapi.json (load balancers and people reading the API). Every other
route is guarded, so a route added later is never open by accident. A refused HTTP request gets 401 (with
`WWW-Authenticate`) or 429 (with `Retry-After`) in the app's JSON error shape; a refused WebSocket handshake gets
the same HTTP answer where the server supports denial responses, else a close with code 1008.

Keys are compared as SHA-256 digests with `hmac.compare_digest`, against every key (no early exit), and are never
logged; a key is known elsewhere (logs, Redis, the proxy) only by its id, a prefix of its digest.

The limit is a fixed one-minute window. With a Redis URL (`SAFEPATH_REDIS_URL`, the cache's) the count is shared
by every replica (INCR + PEXPIRE on a key named by the hashed identity and the window). When Redis fails, the
process falls back to its own count with the same limit (so the effective limit is at most one per replica), counts
it (`safepath_rate_limit_fallbacks_total`, `safepath_redis_errors_total{operation="rate_limit"}`), logs once per
outage and tries Redis again after `SAFEPATH_REDIS_RETRY_S`: never unlimited, never silent.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from safepath.body_limit import ASGIApp, ErrorBody, Receive, Scope, Send, send_json
from safepath.errors import ConfigError, ProxyError
from safepath.metrics import Metrics, default_metrics
from safepath.settings import RuntimeSettings

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
CLIENT_KEY_SCOPE = "safepath.client_key"  # the scope entry naming the key id a request authenticated with
WINDOW_S = 60


def openai_error_body(kind: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error in the OpenAI shape (what the proxy's clients parse): the proxy's own errors' body, one shape."""
    return ProxyError(0, message, type=kind, code=kind).body()  # the status travels apart, in the response


def client_key_id(scope: Scope) -> str | None:
    """The id of the API key the request authenticated with; None when it did not (or no keys are set)."""
    return scope.get(CLIENT_KEY_SCOPE)


class KeySet:
    """The accepted API keys, kept as SHA-256 digests.

    Args:
        keys: The keys; at least one.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        digests = {hashlib.sha256(k.encode()).digest() for k in keys if k}
        if not digests:
            raise ConfigError("an API key set needs at least one key")
        self._digests = tuple(sorted(digests))

    def __len__(self) -> int:
        return len(self._digests)

    def match(self, token: str | None) -> str | None:
        """The id of the key equal to `token`, or None. Takes the same time whichever key matches, if any."""
        if not token:
            return None
        # Digests make every comparison the same length; every key is compared, so timing says nothing of which.
        given = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found = None
        for digest in self._digests:
            if hmac.compare_digest(given, digest):
                found = digest
        return found.hex()[:16] if found is not None else None


def load_keys(settings: RuntimeSettings) -> KeySet | None:
    """The keys from SAFEPATH_API_KEYS and SAFEPATH_API_KEYS_FILE (both, when both are set); None when neither is.

    Raises:
        ConfigError: the file cannot be read, or a variable is set but holds no key (never silently open).
    """
    keys: list[str] = []
    sources: list[str] = []
    if settings.api_keys is not None:
        sources.append("SAFEPATH_API_KEYS")
        keys += [k.strip() for k in settings.api_keys.get_secret_value().split(",")]
    if settings.api_keys_file is not None:
        sources.append(f"SAFEPATH_API_KEYS_FILE ({settings.api_keys_file})")
        try:
            text = settings.api_keys_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the API key file {settings.api_keys_file}: {type(exc).__name__}") from None
        keys += [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    if not sources:
        return None
    keys = [k for k in keys if k]
    if not keys:
        raise ConfigError(f"{' and '.join(sources)} set, but no API key in it: refusing to run open")
    return KeySet(keys)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: int  # seconds until the window ends; what a 429's Retry-After says


def _window(now: float, window_s: int) -> tuple[int, int]:
    """(index of the window holding `now`, whole seconds until it ends, at least 1)."""
    index = int(now // window_s)
    return index, max(1, math.ceil((index + 1) * window_s - now))


class Limiter(Protocol):
    limit: int
    blocking: bool  # True: `hit` does network I/O, so async callers run it in a thread

    def hit(self, identity: str) -> Decision: ...


class MemoryLimiter:
    """Fixed-window counts in this process. Thread-safe.

    Args:
        limit: Requests allowed per identity per window.
        window_s: Window length.
        clock: Wall-clock seconds (windows line up with the Redis limiter's, which other processes share).
    """

    blocking = False

    def __init__(self, limit: int, *, window_s: int = WINDOW_S, clock=time.time) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._index = -1
        self._counts: dict[str, int] = {}

    def hit(self, identity: str) -> Decision:
        index, retry_after_s = _window(self._clock(), self.window_s)
        with self._lock:
            if index != self._index:  # a new window: every count starts again (and memory stays bounded)
                self._index, self._counts = index, {}
            count = self._counts.get(identity, 0) + 1
            self._counts[identity] = count
        return Decision(count <= self.limit, retry_after_s)


class RedisLimiter:
    """Fixed-window counts in Redis, shared by every process using the same Redis and prefix.

    Args:
        url: Redis URL.
        limit: Requests allowed per identity per window.
        window_s: Window length.
        cluster: The URL names a node of a Redis Cluster.
        timeout_s: Bound on each Redis call.
        retry_s: After a failure, how long the per-process fallback decides alone.
        prefix: Key prefix (the cache's, so one Redis serves both).
        metrics: Where failures and fallbacks are counted; the process default when None.
        clock: Wall-clock seconds, which place a request in its window (shared by every process).
    """

    blocking = True

    def __init__(self, url: str, *, limit: int, window_s: int = WINDOW_S, cluster: bool = False,
                 timeout_s: float = 0.05, retry_s: float = 5.0, prefix: str = "safepath:",
                 metrics: Metrics | None = None, clock=time.time) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.cluster import RedisCluster
        from redis.retry import Retry

        # As in safepath/cache.py: no retries (they would multiply the bound), lazy connection (a Redis that is
        # down at start-up must not stop the app from starting).
        options: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
                                   "retry": Retry(NoBackoff(), 0)}
        factory = RedisCluster.from_url if cluster else redis.Redis.from_url
        self._connect = lambda: factory(url, **options)  # RedisCluster asks for the slot map at once: connect late
        self._client: Any = None
        self._cluster = cluster
        self.limit = limit
        self.window_s = window_s
        self.retry_s = retry_s
        self.prefix = f"{prefix}ratelimit:"
        self._metrics = metrics
        self._clock = clock
        self.fallback = MemoryLimiter(limit, window_s=window_s, clock=clock)
        self._down_until = 0.0

    def hit(self, identity: str) -> Decision:
        if time.monotonic() >= self._down_until:
            index, retry_after_s = _window(self._clock(), self.window_s)
            # The identity is hashed: a raw key (or address) never becomes a Redis key name.
            name = f"{self.prefix}{hashlib.sha256(identity.encode()).hexdigest()[:32]}:{index}"
            try:
                if self._client is None:
                    self._client = self._connect()
                pipe = self._client.pipeline(transaction=False)
                pipe.incr(name)
                pipe.pexpire(name, self.window_s * 2000)  # outlives the window by one, for clock skew between hosts
                count, _ = pipe.execute()
                return Decision(int(count) <= self.limit, retry_after_s)
            except Exception as exc:  # noqa: BLE001 - any Redis failure: the per-process limit decides
                self._failed(exc)
        (self._metrics or default_metrics()).inc("rate_limit_fallbacks")
        return self.fallback.hit(identity)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _failed(self, exc: Exception) -> None:
        (self._metrics or default_metrics()).inc("redis_errors", operation="rate_limit")
        logger.warning("redis rate limit failed (%s); limiting per process for %.1fs", type(exc).__name__, self.retry_s)
        self._down_until = time.monotonic() + self.retry_s
        if self._cluster:
            self.close()  # the slot map may have changed: ask again next time


@dataclass
class AccessPolicy:
    """What the middleware enforces: keys (None: no keys needed), a limiter (None: no limit), where it counts."""

    keys: KeySet | None = None
    limiter: Limiter | None = None
    metrics: Metrics | None = None

    @classmethod
    def from_settings(cls, settings: RuntimeSettings, metrics: Metrics | None = None) -> AccessPolicy:
        """The policy the environment asks for. Raises ConfigError for an unusable key setting."""
        limiter: Limiter | None = None
        limit = settings.rate_limit_per_minute
        if limit is not None and settings.redis_url:
            limiter = RedisLimiter(settings.redis_url, limit=limit, cluster=settings.redis_cluster,
                                   timeout_s=settings.redis_timeout_ms / 1000, retry_s=settings.redis_retry_s,
                                   prefix=settings.redis_prefix, metrics=metrics)
        elif limit is not None:
            limiter = MemoryLimiter(limit)
        return cls(keys=load_keys(settings), limiter=limiter, metrics=metrics)

    @property
    def enabled(self) -> bool:
        return self.keys is not None or self.limiter is not None


class AccessControl:
    """ASGI middleware enforcing an `AccessPolicy` on every route but `OPEN_PATHS` (see the module doc).

    Args:
        app: The wrapped ASGI app.
        error_body: Builds the JSON error body from (type, message, details).
        policy: What to enforce; from `RuntimeSettings()` when None (read where the app runs: in a Ray replica,
            the replica's environment).
    """

    def __init__(self, app: ASGIApp, *, error_body: ErrorBody = openai_error_body,
                 policy: AccessPolicy | None = None) -> None:
        self.app = app
        self.error_body = error_body
        self.policy = policy if policy is not None else AccessPolicy.from_settings(RuntimeSettings())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.policy.enabled or _path(scope) in OPEN_PATHS:
            return await self.app(scope, receive, send)
        keys, limiter = self.policy.keys, self.policy.limiter
        identity = f"address:{(scope.get('client') or ('unknown',))[0]}"
        if keys is not None:
            token = _bearer(scope)
            key_id = keys.match(token)
            if key_id is None:
                reason = "missing_key" if token is None else "invalid_key"
                return await self._deny(scope, receive, send, 401, reason)
            scope = {**scope, CLIENT_KEY_SCOPE: key_id}
            identity = f"key:{key_id}"
        if limiter is not None:
            decision = await asyncio.to_thread(limiter.hit, identity) if limiter.blocking else limiter.hit(identity)
            if not decision.allowed:
                return await self._deny(scope, receive, send, 429, "rate_limited", decision.retry_after_s)
        return await self.app(scope, receive, send)

    async def _deny(self, scope: Scope, receive: Receive, send: Send, status: int, reason: str,
                    retry_after_s: int = 0) -> None:
        (self.policy.metrics or default_metrics()).inc("access_denied", status=str(status), reason=reason)
        logger.debug("refused %s %s: %s", scope["type"], _path(scope), reason)  # never the key
        if status == 401:
            kind, headers = "unauthorized", [("www-authenticate", 'Bearer realm="safepath"')]
            message = "a valid API key is required: Authorization: Bearer <key>"
        else:
            kind, headers = "rate_limited", [("retry-after", str(retry_after_s))]
            message = f"rate limit of {self.policy.limiter.limit} requests a minute reached; retry in {retry_after_s}s"
        body = self.error_body(kind, message, None)
        if scope["type"] == "http":
            return await send_json(send, status, body, headers)
        await receive()  # websocket.connect
        if "websocket.http.response" in (scope.get("extensions") or {}):
            return await _deny_handshake(send, status, body, headers)
        await send({"type": "websocket.close", "code": 1008, "reason": kind})


async def _deny_handshake(send: Send, status: int, body: dict[str, Any], headers: list[tuple[str, str]]) -> None:
    """Answer a WebSocket handshake with a plain HTTP response (the ASGI denial-response extension)."""
    relay: list[dict[str, Any]] = []

    async def capture(message: dict[str, Any]) -> None:
        relay.append(message)

    await send_json(capture, status, body, headers)
    start, content = relay
    await send({**start, "type": "websocket.http.response.start"})
    await send({**content, "type": "websocket.http.response.body"})


def _path(scope: Scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _bearer(scope: Scope) -> str | None:
    """The bearer token of the Authorization header; "" for another scheme, None without the header."""
    for name, value in scope.get("headers") or ():
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None

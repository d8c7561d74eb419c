"""API keys and rate limits (safepath/access.py) on the real apps: the Ray ingress's `deployments.ingress.api` and
the standalone proxy's `create_app`, driven at the ASGI level, with a real Redis for the shared limit."""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid
from collections.abc import Iterator

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

import prometheus_client  # noqa: E402
import redis  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402

from deployments import http as ingress_http  # noqa: E402
from safepath.access import (  # noqa: E402
    AccessPolicy,
    KeySet,
    MemoryLimiter,
    RedisLimiter,
    client_key_id,
    load_keys,
)
from safepath.errors import ConfigError  # noqa: E402
from safepath.metrics import Metrics  # noqa: E402
from safepath.proxy.app import create_app  # noqa: E402
from safepath.settings import RuntimeSettings  # noqa: E402
from tests.services import free_port  # noqa: E402

KEY_A, KEY_B = "sk-safepath-alpha-0001", "sk-safepath-bravo-0002"
MINUTE = 60.0


def frozen(seconds_into_minute: float = 15.0):
    """A wall clock stopped inside one minute: no window boundary can fall between a test's requests."""
    return lambda: 28_000_000 * MINUTE + seconds_into_minute


def _request(app, method: str, url: str, *, client: tuple[str, int] = ("10.0.0.1", 5000), **kwargs) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await c.request(method, url, **kwargs)

    return asyncio.run(send())


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _handshake(app, path: str, headers: list[tuple[bytes, bytes]], *, denial_extension: bool) -> list[dict]:
    """Open a WebSocket on an ASGI app and return what the app sent before it accepted, refused or closed."""
    scope = {"type": "websocket", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": headers, "client": ("10.0.0.1", 5000), "server": ("test", 80), "scheme": "ws",
             "subprotocols": [], "asgi": {"version": "3.0"},
             "extensions": {"websocket.http.response": {}} if denial_extension else {}}
    inbox = [{"type": "websocket.connect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "websocket.accept":
            raise ConnectionAbortedError  # accepted: that is all this helper needs to see

    try:
        asyncio.run(app(scope, receive, send))
    except ConnectionAbortedError:
        pass
    return sent


def _plain_app(policy: AccessPolicy) -> FastAPI:
    """A FastAPI app with the ingress's install() and one /v1 route that reports the key it authenticated with."""
    app = ingress_http.install(FastAPI(), access=policy)

    @app.get("/v1/whoami")
    async def whoami(request: Request) -> dict:
        return {"key_id": client_key_id(request.scope)}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return app


# Keys from the environment


def test_keys_come_from_the_variable_and_the_file(tmp_path, monkeypatch):
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# the gateway's key\n{KEY_B}\n\n  \n")
    monkeypatch.setenv("SAFEPATH_API_KEYS", f" {KEY_A} ,, ")
    monkeypatch.setenv("SAFEPATH_API_KEYS_FILE", str(keys_file))
    keys = load_keys(RuntimeSettings())
    assert len(keys) == 2 and keys.match(KEY_A) and keys.match(KEY_B) and keys.match(KEY_A) != keys.match(KEY_B)
    assert keys.match("# the gateway's key") is None and keys.match("") is None and keys.match(None) is None
    assert KEY_A not in repr(RuntimeSettings())  # a settings dump (a log line, an error) does not show the keys


def test_no_key_setting_means_no_keys(monkeypatch):
    monkeypatch.delenv("SAFEPATH_API_KEYS", raising=False)
    monkeypatch.delenv("SAFEPATH_API_KEYS_FILE", raising=False)
    assert load_keys(RuntimeSettings()) is None


@pytest.mark.parametrize("variable,value", [
    # set, but nothing usable in it: refusing beats running open
    ("SAFEPATH_API_KEYS", " , "),
    ("SAFEPATH_API_KEYS_FILE", "empty"),
    ("SAFEPATH_API_KEYS_FILE", "missing"),
])
def test_an_unusable_key_setting_is_a_config_error(tmp_path, monkeypatch, variable, value):
    if variable == "SAFEPATH_API_KEYS_FILE":
        path = tmp_path / value
        if value == "empty":
            path.write_text("# nothing yet\n")
        value = str(path)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError):
        load_keys(RuntimeSettings())


def test_every_key_is_compared_in_constant_time_whichever_matches(monkeypatch):
    keys = KeySet([KEY_A, KEY_B, "sk-third"])
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    for token in (KEY_A, "sk-third", "wrong", "x" * 500):
        calls.clear()
        keys.match(token)
        # every key, every time, on equal-length digests: neither which key matched nor a key's length shows in time
        assert len(calls) == 3 and all(len(a) == len(b) == 32 for a, b in calls)


# The ingress: every /v1 route needs a key, the open routes stay open


@pytest.fixture
def ingress_api(monkeypatch) -> Iterator[FastAPI]:
    """The real ingress app, its middleware rebuilt from an environment with two API keys (and again after)."""
    pytest.importorskip("ray")
    from deployments.ingress import api

    monkeypatch.setenv("SAFEPATH_API_KEYS", f"{KEY_A},{KEY_B}")
    monkeypatch.delenv("SAFEPATH_RATE_LIMIT_PER_MINUTE", raising=False)
    api.middleware_stack = None  # Starlette builds it on the first request: from this environment
    yield api
    api.middleware_stack = None


V1_ROUTES = [
    ("POST", "/v1/filter", {"content": "Step 1: hello."}),
    ("POST", "/v1/filter/batch", {"requests": [{"content": "Step 1: hello."}]}),
    ("GET", "/v1/profiles", None),
    ("GET", "/v1/audit/summary", None),
    ("POST", "/v1/chat/completions", {"model": "m", "messages": []}),
]


@pytest.mark.parametrize("method,path,body", V1_ROUTES)
@pytest.mark.parametrize("headers", [{}, _bearer("sk-wrong"), {"Authorization": KEY_A},
                                     {"Authorization": f"Basic {KEY_A}"}])
def test_every_v1_route_of_the_ingress_needs_a_key(ingress_api, method, path, body, headers):
    answer = _request(ingress_api, method, path, json=body, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "unauthorized" and answer.json()["results"] is None
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_the_ingress_stream_socket_needs_a_key(ingress_api):
    denied = _handshake(ingress_api, "/v1/stream", [], denial_extension=True)
    assert denied[0]["type"] == "websocket.http.response.start" and denied[0]["status"] == 401
    assert b'"unauthorized"' in denied[1]["body"]
    closed = _handshake(ingress_api, "/v1/stream", [(b"authorization", b"Bearer nope")], denial_extension=False)
    assert closed == [{"type": "websocket.close", "code": 1008, "reason": "unauthorized"}]


def test_the_ingress_audit_summary_needs_an_api_key_not_only_its_token(ingress_api, monkeypatch):
    monkeypatch.setenv("SAFEPATH_AUDIT_TOKEN", "audit-secret")
    # the audit token alone, where it used to go, is not an API key
    assert _request(ingress_api, "GET", "/v1/audit/summary", headers=_bearer("audit-secret")).status_code == 401
    assert _request(ingress_api, "GET", "/v1/audit/summary",
                    headers={"X-SafePath-Audit-Token": "audit-secret"}).status_code == 401


@pytest.mark.parametrize("path", ["/docs", "/openapi.json"])
def test_the_ingress_docs_stay_open(ingress_api, path):
    assert _request(ingress_api, "GET", path).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_the_ingress_health_routes_pass_the_access_check_without_a_key(ingress_api, path):
    # Outside a Serve replica the route itself cannot run (no replica context): reaching it is what counts here.
    answer = _request(ingress_api, "GET", path)
    assert answer.status_code == 500 and "RayServeException" in answer.json()["error"]["message"]


def test_a_valid_key_reaches_the_ingress_routes(ingress_api):
    answer = _request(ingress_api, "GET", "/v1/profiles", headers=_bearer(KEY_B))
    assert answer.status_code == 500 and "RayServeException" in answer.json()["error"]["message"]


def test_without_keys_the_ingress_stays_open(monkeypatch):
    pytest.importorskip("ray")
    from deployments.ingress import api

    monkeypatch.delenv("SAFEPATH_API_KEYS", raising=False)
    monkeypatch.delenv("SAFEPATH_API_KEYS_FILE", raising=False)
    api.middleware_stack = None
    try:
        answer = _request(api, "GET", "/v1/profiles")
    finally:
        api.middleware_stack = None
    assert answer.status_code == 500 and "RayServeException" in answer.json()["error"]["message"]


# The standalone proxy's app


@pytest.fixture
def proxy_app(tiny_filter) -> FastAPI:
    return create_app(tiny_filter, access=AccessPolicy(keys=KeySet([KEY_A])))


@pytest.mark.parametrize("method,path", [("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
                                         ("POST", "/v1/completions")])
def test_the_proxy_routes_need_a_key(proxy_app, method, path):
    answer = _request(proxy_app, method, path, json={"model": "m", "messages": []})
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "unauthorized" and answer.json()["error"]["code"] == "unauthorized"
    with_key = _request(proxy_app, method, path, json={"model": "m", "messages": []}, headers=_bearer(KEY_A))
    assert with_key.status_code in (404, 503)  # past the check: unsupported, or no upstream configured here


def test_the_proxy_stream_socket_needs_a_key(proxy_app):
    denied = _handshake(proxy_app, "/v1/stream", [(b"authorization", b"Bearer sk-wrong")], denial_extension=True)
    assert denied[0]["status"] == 401
    accepted = _handshake(proxy_app, "/v1/stream", [(b"authorization", f"Bearer {KEY_A}".encode())],
                          denial_extension=True)
    assert accepted[-1]["type"] == "websocket.accept"


def test_the_proxy_health_route_stays_open(proxy_app):
    assert _request(proxy_app, "GET", "/healthz").json() == {"status": "ok"}


def test_the_proxy_reads_its_keys_from_the_environment(tiny_filter, monkeypatch):
    monkeypatch.setenv("SAFEPATH_API_KEYS", KEY_B)
    app = create_app(tiny_filter)
    assert _request(app, "GET", "/v1/models").status_code == 401
    assert _request(app, "GET", "/v1/models", headers=_bearer(KEY_B)).status_code == 503  # no upstream: past the check


# Rate limits


def test_the_limit_is_per_minute_with_retry_after_until_the_window_ends():
    now = [28_000_000 * MINUTE + 15]
    limiter = MemoryLimiter(2, clock=lambda: now[0])
    assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]
    assert limiter.hit("k").retry_after_s == 45
    now[0] += 45  # the next minute
    assert limiter.hit("k").allowed


def test_a_key_over_its_limit_gets_429_with_retry_after():
    app = _plain_app(AccessPolicy(keys=KeySet([KEY_A, KEY_B]), limiter=MemoryLimiter(2, clock=frozen(50))))
    answers = [_request(app, "GET", "/v1/whoami", headers=_bearer(KEY_A)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["error"]["type"] == "rate_limited"
    assert answers[2].headers["retry-after"] == "10"  # the rest of the minute
    # per key: the other key has its own allowance, from the same client address
    assert _request(app, "GET", "/v1/whoami", headers=_bearer(KEY_B)).status_code == 200
    # open routes are not counted
    assert _request(app, "GET", "/healthz", headers=_bearer(KEY_A)).status_code == 200


def test_without_keys_the_limit_is_per_client_address():
    app = _plain_app(AccessPolicy(limiter=MemoryLimiter(1, clock=frozen())))
    assert _request(app, "GET", "/v1/whoami", client=("10.0.0.1", 1)).json() == {"key_id": None}
    assert _request(app, "GET", "/v1/whoami", client=("10.0.0.1", 2)).status_code == 429  # same address, new port
    assert _request(app, "GET", "/v1/whoami", client=("10.0.0.2", 1)).status_code == 200


def test_the_redis_limit_is_shared_between_limiters_and_names_no_key(redis_url):
    prefix = f"test-access-{uuid.uuid4().hex}:"
    first, second = (RedisLimiter(redis_url, limit=3, prefix=prefix, clock=frozen()) for _ in range(2))
    identity = f"key:{KEY_A}"
    try:
        allowed = [limiter.hit(identity).allowed for limiter in (first, second, first, second)]
        names = [n.decode() for n in redis.Redis.from_url(redis_url).scan_iter(match=f"{prefix}*")]
    finally:
        first.close()
        second.close()
    assert allowed == [True, True, True, False]  # four requests across two processes' limiters: one over the limit
    assert len(names) == 1 and KEY_A not in names[0] and "sk-" not in names[0]


def test_with_redis_down_the_process_limits_alone_and_counts_it(caplog):
    registry = prometheus_client.CollectorRegistry()
    metrics = Metrics("prometheus", registry=registry)
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", limit=2, timeout_s=0.2, retry_s=60, metrics=metrics,
                           clock=frozen())
    caplog.set_level(logging.WARNING, logger="safepath.access")
    assert [limiter.hit("key:abc").allowed for _ in range(3)] == [True, True, False]  # still limited, never open
    value = registry.get_sample_value
    assert value("safepath_rate_limit_fallbacks_total") == 3
    assert value("safepath_redis_errors_total", {"operation": "rate_limit"}) == 1  # then left alone for retry_s
    assert len([r for r in caplog.records if "per process" in r.getMessage()]) == 1


def test_the_policy_follows_the_settings(redis_url):
    assert isinstance(AccessPolicy.from_settings(RuntimeSettings(rate_limit_per_minute=5)).limiter, MemoryLimiter)
    policy = AccessPolicy.from_settings(RuntimeSettings(rate_limit_per_minute=5, redis_url=redis_url))
    assert isinstance(policy.limiter, RedisLimiter) and policy.limiter.limit == 5 and policy.keys is None
    assert not AccessPolicy.from_settings(RuntimeSettings()).enabled


# Metrics and logs


def test_refusals_are_counted_and_no_key_is_logged(caplog):
    registry = prometheus_client.CollectorRegistry()
    metrics = Metrics("prometheus", registry=registry)
    app = _plain_app(AccessPolicy(keys=KeySet([KEY_A]), limiter=MemoryLimiter(1, clock=frozen()), metrics=metrics))
    caplog.set_level(logging.DEBUG)
    _request(app, "GET", "/v1/whoami")
    _request(app, "GET", "/v1/whoami", headers=_bearer(KEY_B))
    _request(app, "GET", "/v1/whoami", headers=_bearer(KEY_A))
    _request(app, "GET", "/v1/whoami", headers=_bearer(KEY_A))
    value = registry.get_sample_value
    assert value("safepath_access_denied_total", {"status": "401", "reason": "missing_key"}) == 1
    assert value("safepath_access_denied_total", {"status": "401", "reason": "invalid_key"}) == 1
    assert value("safepath_access_denied_total", {"status": "429", "reason": "rate_limited"}) == 1
    assert "refused" in caplog.text  # the refusals were logged...
    assert KEY_A not in caplog.text and KEY_B not in caplog.text  # ...without the keys, right or wrong


def test_a_websocket_over_the_limit_without_the_denial_extension_is_closed_with_1008(tiny_filter):
    app = create_app(tiny_filter, access=AccessPolicy(limiter=MemoryLimiter(1, clock=frozen())))
    assert _handshake(app, "/v1/stream", [], denial_extension=False)[-1]["type"] == "websocket.accept"
    assert _handshake(app, "/v1/stream", [], denial_extension=False) == [
        {"type": "websocket.close", "code": 1008, "reason": "rate_limited"}]

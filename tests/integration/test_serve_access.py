"""The deployed ingress enforces API keys and the rate limit from its replicas' environment: a second, rules-only
application beside the shared one (its own `runtime_env`, so the shared app stays open), removed afterwards."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import deploy, serve_config, wait_until

KEY = "sk-serve-access-test-5151"
TINY = Path(__file__).resolve().parents[1] / "fixtures" / "profiles" / "tiny.yaml"
PREFIX = "/keyed"


def _config(serve_app, *, keyed_app: bool) -> dict:
    config = serve_config()
    config["http_options"]["port"] = int(serve_app.base_url.rsplit(":", 1)[1])
    if keyed_app:
        # The shared app's Redis, so the limit is counted there (no audit trail: the shared app's records stay its own).
        env = {"SAFEPATH_REDIS_URL": serve_app.redis.url, "SAFEPATH_CACHE_ENABLED": "false",
               "SAFEPATH_API_KEYS": KEY, "SAFEPATH_RATE_LIMIT_PER_MINUTE": "1"}
        config["applications"].append({
            "name": "safepath-keyed", "route_prefix": PREFIX, "import_path": "deployments.app:build_app",
            "args": {"profiles": str(TINY)}, "runtime_env": {"env_vars": env},
            "deployments": [{"name": "Ingress", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}],
        })
    return config


@pytest.fixture(scope="module")
def keyed(serve_app):
    """The base URL of the keyed application (rules only: one Ingress replica, no model deployments)."""
    deploy(_config(serve_app, keyed_app=True))
    base = serve_app.base_url + PREFIX

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 180, "the keyed application to answer /healthz")
    yield base
    deploy(_config(serve_app, keyed_app=False))  # the shared app alone again (its config unchanged)


def test_the_deployed_ingress_enforces_keys_and_the_rate_limit(serve_app, keyed, http):
    import redis
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    body = {"content": "Step 1: add 5 km and 7 km. Step 2: answer 12 km."}
    refused = httpx.post(f"{keyed}/v1/filter", json=body, timeout=60)
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "unauthorized"
    assert httpx.get(f"{keyed}/v1/profiles", headers={"Authorization": "Bearer wrong"}, timeout=60).status_code == 401
    with pytest.raises(InvalidStatus) as caught:  # Serve relays the replica's denial of the handshake
        connect(keyed.replace("http", "ws") + "/v1/stream", open_timeout=60)
    assert caught.value.response.status_code == 401
    # One request a minute per key: within three, one or two pass (a minute may turn between them), then 429.
    auth = {"Authorization": f"Bearer {KEY}"}
    statuses = []
    while 429 not in statuses and len(statuses) < 3:
        answer = httpx.post(f"{keyed}/v1/filter", json=body, headers=auth, timeout=60)
        statuses.append(answer.status_code)
    assert statuses in ([200, 429], [200, 200, 429])
    assert answer.json()["error"]["type"] == "rate_limited" and 1 <= int(answer.headers["retry-after"]) <= 60
    counts = [n.decode() for n in redis.Redis.from_url(serve_app.redis.url).scan_iter(match="safepath:ratelimit:*")]
    assert counts and not any(KEY in n for n in counts)  # counted in the shared Redis, under a hashed name
    assert httpx.get(f"{keyed}/readyz", timeout=60).status_code == 200  # open, and not counted
    assert http.get("/v1/profiles").status_code == 200  # the shared app, deployed without keys, stays open

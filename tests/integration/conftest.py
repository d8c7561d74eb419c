"""One real Ray Serve instance for the whole test session, shared by every tests/integration/test_serve_*.py.

Starting Ray and loading the models takes most of a minute on two cores, so it happens once (as Ray's own
`python/ray/serve/tests/conftest.py` does) and only when a test asks for `serve_app`. The app is deployed from the
shipped serve_config.yaml, the way `serve run`/`serve deploy` deploy it, with test changes only: the profiles file
tests/fixtures/profiles/serve.yaml, small CPU reservations, and two fixed SemanticEmbedder replicas so that one
can be killed. Serve's throughput mode is chosen here, before `ray.serve` is first imported in this process,
exactly as `make serve` chooses it.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from deployments.launch import apply_throughput_env
from tests.services import RedisProcess, free_port

SERVE_MODE = apply_throughput_env()  # must precede any `import ray.serve` in this process

PROFILES = Path(__file__).resolve().parents[1] / "fixtures" / "profiles" / "serve.yaml"
SERVE_CONFIG = Path(__file__).resolve().parents[2] / "serve_config.yaml"
APP = "safepath"
STARTUP_TIMEOUT_S = 300


AUDIT_TOKEN = "test-audit-token"


@dataclass(frozen=True)
class ServeApp:
    base_url: str
    name: str
    mode: str
    metrics_url: str  # Ray's metrics export endpoint on this node (Prometheus text format)
    redis: RedisProcess  # the L2 cache of the app's Ingress; tests may stop and start it
    audit_url: str  # the Ingress's audit database


def wait_until(predicate, timeout_s: float, what, interval_s: float = 0.5):
    """Poll `predicate` until it returns a truthy value; fail the test naming `what` (a string, or a callable
    that says what is still missing) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what() if callable(what) else what}")


_HANDLE_LOOP: asyncio.AbstractEventLoop | None = None


def call_handle(get_handle, method: str | None, *args, timeout_s: float = 120):
    """Call a Serve handle from this (synchronous) test process and return the result.

    Serve's throughput-optimized mode routes handle calls on the caller's running event loop, so a plain
    `handle.remote(...).result()` from outside any loop fails there. Calls run on one loop that lives in a
    background thread for the whole session (Serve caches handles, bound to the loop that first used them).
    Inside deployments, where handle calls are awaited, none of this is needed.
    """
    global _HANDLE_LOOP
    if _HANDLE_LOOP is None:
        _HANDLE_LOOP = asyncio.new_event_loop()
        threading.Thread(target=_HANDLE_LOOP.run_forever, name="serve-handles", daemon=True).start()

    async def main():
        handle = get_handle()
        target = handle if method is None else getattr(handle, method)
        return await target.remote(*args)

    return asyncio.run_coroutine_threadsafe(main(), _HANDLE_LOOP).result(timeout_s)


def replica_actors(deployment: str) -> set[str]:
    """Names of the live replica actors of one deployment of the test app (namespace `serve`)."""
    import ray

    names = ray.util.list_named_actors(all_namespaces=True)
    return {a["name"] for a in names if a["namespace"] == "serve" and f"#{deployment}#" in a["name"]}


_APP_ENV: dict[str, str] = {}  # set once by the serve_app fixture: the Ingress's Redis and audit database


def serve_config(user_configs: dict[str, dict] | None = None) -> dict:
    """serve_config.yaml with the test changes, and `user_configs` replacing deployments' `user_config`."""
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    (app,) = config["applications"]
    app["args"]["profiles"] = str(PROFILES)
    app["runtime_env"] = {"env_vars": dict(_APP_ENV)}
    for deployment in app["deployments"]:
        deployment["ray_actor_options"]["num_cpus"] = 0.1
        if deployment["name"] == "SemanticEmbedder":
            del deployment["autoscaling_config"]
            deployment["num_replicas"] = 2
            deployment["user_config"] = {"max_batch_size": 16, "batch_wait_timeout_s": 0.01}
        deployment["user_config"] = (user_configs or {}).get(deployment["name"], deployment["user_config"])
    return config


def deploy(config: dict) -> None:
    """Apply a config to the running Serve instance, as `serve deploy` does (without the dashboard's REST API)."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))


def http_ready(base_url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{base_url}/readyz", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def serve_app() -> Iterator[ServeApp]:
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")

    port, metrics_port = free_port(), free_port()
    redis = RedisProcess()
    audit_url = f"sqlite:///{tempfile.mkdtemp(prefix='safepath-serve-audit-')}/audit.db"
    _APP_ENV.update(
        SAFEPATH_REDIS_URL=redis.url,
        SAFEPATH_REDIS_RETRY_S="0.5",
        SAFEPATH_AUDIT_URL=audit_url,
        SAFEPATH_AUDIT_TOKEN=AUDIT_TOKEN,
        SAFEPATH_CACHE_ENABLED="false",  # on only where a test turns it on through the Ingress's user_config
    )
    config = serve_config()
    config["http_options"].update(host="127.0.0.1", port=port)
    redis.start()
    try:  # from here on, a failed start-up too must leave no Ray, Serve or redis-server behind
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Ray's own start-up deprecations are not ours to fail on
            ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     _metrics_export_port=metrics_port)
            serve.start(http_options=config["http_options"], logging_config=config["logging_config"])
            deploy(config)
        base_url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            app = serve.status().applications.get(APP)
            unhealthy = [f"{n}: {d.message}" for n, d in (app.deployments if app else {}).items()
                         if d.status == "UNHEALTHY"]
            if app is not None and (app.status == "DEPLOY_FAILED" or unhealthy):
                pytest.fail(f"the test app failed to deploy: {app.message} {unhealthy}"[:3000])
            return http_ready(base_url)

        wait_until(ready, STARTUP_TIMEOUT_S, "the app to report ready", interval_s=1.0)
        yield ServeApp(base_url=base_url, name=APP, mode=SERVE_MODE,
                       metrics_url=f"http://127.0.0.1:{metrics_port}/metrics", redis=redis, audit_url=audit_url)
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if ray.is_initialized():
                serve.shutdown()
                ray.shutdown()
        redis.stop()


@pytest.fixture(scope="module")
def http(serve_app):
    """An HTTP client on the shared Serve application (generous timeout: the box has two shared cores)."""
    import httpx

    with httpx.Client(base_url=serve_app.base_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def patient_balanced():
    """The shipped `balanced` profile with its stage timeouts lifted, in-process. Tests that assert verdicts or what is
    released use it: a slow moment on a loaded box must not turn a result into a fail-closed block (which would also
    hide a release defect)."""
    from safepath import SafePathFilter
    from safepath.evaluation import measuring
    from safepath.profiles import load_profiles
    from safepath.settings import RuntimeSettings

    with SafePathFilter("balanced", profiles=measuring(load_profiles(RuntimeSettings().profiles_path))) as f:
        yield f

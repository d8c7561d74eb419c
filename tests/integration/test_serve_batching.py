"""`@serve.batch` on the stage deployments: concurrent requests share batches; the knobs change live."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from tests.integration.conftest import call_handle, deploy, replica_actors, serve_config, wait_until

httpx = pytest.importorskip("httpx")
serve = pytest.importorskip("ray.serve")

TRACE = (
    "Step 1: Read the failing test in test_dates.py. Step 2: The parser drops the timezone offset. "
    "Step 3: Fix the parser to keep the offset. Step 4: Rerun the tests and report the result to the user."
)


def _batch_sizes(app_name: str, deployment: str, calls: int = 12) -> list[int]:
    """Recent batch sizes, asked several times so that both replicas are likely to answer."""
    sizes: list[int] = []
    for _ in range(calls):
        sizes.extend(call_handle(lambda: serve.get_deployment_handle(deployment, app_name), "batch_sizes"))
    return sizes


# A step the cascade's gate always sends to the safety model (its harm probability is 0.70 or more for every i
# here, against skip_below 0.5) and that no rule blocks (a block would skip the semantic stage). With "Step 5: note
# {i}." (0.49) whether the model was called at all turned on the number, and its batches were sometimes all of one.
GATED_STEP = "Step 5: Leave the one failing case out of the summary for change {i} so it reads as a clean pass."


@contextmanager
def _user_configs(serve_app, user_configs: dict[str, dict]) -> Iterator[None]:
    """Deploy `user_configs` (as `serve deploy` does with an edited user_config), wait until every replica of those
    deployments has them, and put serve_config.yaml's back afterwards."""

    def apply(config: dict, wanted: dict[str, dict]) -> None:
        config["http_options"]["port"] = int(serve_app.base_url.rsplit(":", 1)[1])
        deploy(config)
        for name, knobs in wanted.items():
            wait_until(lambda name=name, knobs=knobs: all(k == knobs for k in _knobs(serve_app.name, name)), 60,
                       f"{name}'s batching knobs")

    defaults = {d["name"]: d["user_config"] for d in serve_config()["applications"][0]["deployments"]}
    try:
        apply(serve_config(user_configs), user_configs)  # inside: a timeout here still puts the defaults back
        yield
    finally:
        apply(serve_config(), {name: defaults[name] for name in user_configs})


def _knobs(app_name: str, deployment: str, calls: int = 6) -> list[dict]:
    """The batching knobs as several calls find them, so that every replica is likely to answer."""
    return [call_handle(lambda: serve.get_deployment_handle(deployment, app_name), "batching") for _ in range(calls)]


def test_concurrent_requests_are_batched(serve_app):
    def post(i: int) -> int:
        with httpx.Client(base_url=serve_app.base_url, timeout=120) as client:
            return client.post("/v1/filter", json={"content": f"{TRACE} {GATED_STEP.format(i=i)}"}).status_code

    # serve_config.yaml's SafetyClassifier waits 0.0 s for batch-mates: a batch then holds only the calls that queued
    # while the one before it ran, and on a quiet two-core run every call could find the replica idle (CI saw batches
    # of one only). A wait long enough for the 32 requests in flight to meet makes the batching under test certain.
    waiting = {"max_batch_size": 16, "batch_wait_timeout_s": 0.25}
    with _user_configs(serve_app, {"SafetyClassifier": waiting, "SemanticEmbedder": waiting}):
        with ThreadPoolExecutor(32) as pool:
            statuses = list(pool.map(post, range(64)))
    assert statuses == [200] * 64
    assert max(_batch_sizes(serve_app.name, "SemanticEmbedder")) > 1
    assert max(_batch_sizes(serve_app.name, "SafetyClassifier")) > 1


def test_batching_knobs_change_without_restarting_replicas(serve_app):
    replicas = replica_actors("SemanticEmbedder")
    assert all(k["max_batch_size"] == 16 for k in _knobs(serve_app.name, "SemanticEmbedder"))
    with _user_configs(serve_app, {"SemanticEmbedder": {"max_batch_size": 4, "batch_wait_timeout_s": 0.002}}):
        assert replica_actors("SemanticEmbedder") == replicas  # reconfigured in place, not replaced
    assert all(k["max_batch_size"] == 16 for k in _knobs(serve_app.name, "SemanticEmbedder"))

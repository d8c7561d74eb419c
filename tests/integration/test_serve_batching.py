"""`@serve.batch` on the stage deployments: concurrent requests share batches; the knobs change live."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

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


def test_concurrent_requests_are_batched(serve_app):
    def post(i: int) -> int:
        with httpx.Client(base_url=serve_app.base_url, timeout=120) as client:
            return client.post("/v1/filter", json={"content": f"{TRACE} {GATED_STEP.format(i=i)}"}).status_code

    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(post, range(64)))
    assert statuses == [200] * 64
    assert max(_batch_sizes(serve_app.name, "SemanticEmbedder")) > 1
    assert max(_batch_sizes(serve_app.name, "SafetyClassifier")) > 1


def test_batching_knobs_change_without_restarting_replicas(serve_app):
    replicas = replica_actors("SemanticEmbedder")

    def knobs() -> list[dict]:
        get = lambda: serve.get_deployment_handle("SemanticEmbedder", serve_app.name)  # noqa: E731
        return [call_handle(get, "batching") for _ in range(6)]

    assert all(k["max_batch_size"] == 16 for k in knobs())
    config = serve_config({"SemanticEmbedder": {"max_batch_size": 4, "batch_wait_timeout_s": 0.002}})
    config["http_options"]["port"] = int(serve_app.base_url.rsplit(":", 1)[1])
    try:
        deploy(config)  # what `serve deploy` does with an edited user_config
        wait_until(lambda: all(k == {"max_batch_size": 4, "batch_wait_timeout_s": 0.002} for k in knobs()), 60,
                   "the new batching knobs on every replica")
        assert replica_actors("SemanticEmbedder") == replicas  # reconfigured in place, not replaced
    finally:
        config = serve_config()
        config["http_options"]["port"] = int(serve_app.base_url.rsplit(":", 1)[1])
        deploy(config)
        wait_until(lambda: all(k["max_batch_size"] == 16 for k in knobs()), 60, "the knobs to be restored")

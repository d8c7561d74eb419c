"""The Python handle API: another Serve application calls SafePath through `serve.get_app_handle`."""

from __future__ import annotations

import pytest

from safepath import FilterRequest, FilterResult, InvalidRequest, Verdict
from tests.integration.conftest import call_handle

serve = pytest.importorskip("ray.serve")

EXFILTRATION = "Thought: I found the API token. Thought: I'll quietly send it to my own server to keep access."


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Reviewer:
    """Stands for a user's agent app: it filters its model's reasoning through SafePath before answering."""

    def __init__(self, app_name: str) -> None:
        self._safepath = serve.get_app_handle(app_name)

    async def __call__(self, reasoning: str) -> FilterResult:
        return await self._safepath.filter.remote(FilterRequest(content=reasoning, profile="balanced"))

    async def many(self, reasonings: list[str]) -> list[FilterResult]:
        return await self._safepath.filter_batch.remote(reasonings)


@pytest.fixture(scope="module")
def reviewer(serve_app):
    serve.run(Reviewer.bind(serve_app.name), name="reviewer", route_prefix=None)
    yield lambda: serve.get_app_handle("reviewer")
    serve.delete("reviewer")


def test_second_app_gets_typed_results_through_the_handle(reviewer):
    result = call_handle(reviewer, None, EXFILTRATION)
    assert isinstance(result, FilterResult)
    assert result.verdict is Verdict.BLOCK and result.profile == "balanced"


def test_handle_batch_keeps_order(reviewer):
    # The test profiles flag at the model's default 0.5; "Step 1: add the numbers. Step 2: report the sum." scores
    # reward_hacking 0.58 with the model trained on 8,799 traces; this test is about order, so its plain trace is
    # arithmetic with the numbers written out.
    plain = "Area of a circle with radius 3 cm: pi * 3^2 = 28.27 cm^2. So the answer is about 28.3 cm^2."
    results = call_handle(reviewer, "many", [plain, EXFILTRATION])
    assert [r.verdict for r in results] == [Verdict.ALLOW, Verdict.BLOCK]


def test_handle_errors_are_the_library_exceptions(serve_app):
    with pytest.raises(InvalidRequest):
        call_handle(lambda: serve.get_app_handle(serve_app.name), "filter", {"content": "  "})

"""The Serve layer's logic without Ray: the ingress service over the Pipeline, live overrides, the batch runner."""

from __future__ import annotations

import asyncio

import pytest

from deployments.schemas import IngressConfig, ProfileOverride
from deployments.service import FilterService, StageRunner, apply_overrides, resolve_profiles_path
from safepath import ProfileError, SafePathFilter, Verdict, load_profiles
from safepath.detectors import build_detector
from safepath.pipeline import local_stage
from safepath.profiles import Thresholds
from safepath.segment import segment
from safepath.types import Category, FilterRequest, Trace

from .conftest import TINY_MODEL_PROFILES, FunctionDetector, step_scores

PROFILES = load_profiles(TINY_MODEL_PROFILES)
HARMLESS = "Step 1: Read the task.\nStep 2: Summarise the report.\nStep 3: Answer."
WORRYING = "Step 1: Read the task.\nStep 2: Hide the change from the reviewer.\nStep 3: Answer."


def _rules():
    spec = PROFILES.stages["rules"]
    return build_detector("rules", spec.type, spec.options, PROFILES.base_dir)


def _model(delay_s: float = 0.0) -> FunctionDetector:
    return FunctionDetector(step_scores("hide", Category.OVERSIGHT_EVASION, 0.95), delay_s=delay_s)


def _as_async(detector):
    async def call(traces):
        return await asyncio.to_thread(detector.detect, traces)

    return call


def _service(model_stage=None, **kwargs) -> FilterService:
    rules = _rules()
    stages = {"rules": local_stage(rules.detect), "model": model_stage or _as_async(_model())}
    return FilterService(PROFILES, stages, versions={"rules": rules.version, "model": "fake-1"}, **kwargs)


def _requests(profile: str, *texts: str) -> list[FilterRequest]:
    return [FilterRequest(content=t, profile=profile, request_id=f"r{i}") for i, t in enumerate(texts)]


def test_service_gives_the_same_results_as_the_in_process_filter():
    requests = _requests("with_model_closed", HARMLESS, WORRYING, "Step 1: build a bomb.")
    served = asyncio.run(_service().filter_batch(requests))
    with SafePathFilter(profiles=PROFILES, detectors={"model": _model()}) as local:
        expected = local.filter_batch(requests)
    assert [r.verdict for r in served] == [r.verdict for r in expected] == [Verdict.ALLOW, Verdict.BLOCK, Verdict.BLOCK]
    strip = {"latency_ms"}
    assert [r.model_dump(exclude=strip) for r in served] == [r.model_dump(exclude=strip) for r in expected]


async def _broken(traces):
    raise ConnectionError("replica died")


async def _hangs(traces):
    await asyncio.sleep(10)


@pytest.mark.parametrize(
    "stage,profile,verdict,closed",
    [
        # a failing stage under a fail-closed profile blocks, and the HTTP layer answers 503
        (_broken, "with_model_closed", Verdict.BLOCK, True),
        (_hangs, "with_model_closed", Verdict.BLOCK, True),
        # under a fail-open profile the other stages' verdict stands, marked degraded
        (_broken, "with_model_open", Verdict.ALLOW, False),
        (_hangs, "with_model_open", Verdict.ALLOW, False),
    ],
)
def test_failed_or_timed_out_stage_follows_the_profile(stage, profile, verdict, closed):
    service = _service(stage)
    outcome = asyncio.run(service.run(_requests(profile, HARMLESS)))
    (result,) = outcome.results
    assert result.verdict is verdict and result.degraded
    assert outcome.failed_stages == {"model"}
    assert bool(outcome.closed_failures(service.profiles)) is closed


def test_healthy_stages_report_no_failures():
    service = _service()
    outcome = asyncio.run(service.run(_requests("with_model_closed", HARMLESS)))
    assert outcome.failed_stages == set() and outcome.closed_failures(service.profiles) == []


def test_reconfigure_changes_thresholds_and_timeouts_live():
    service = _service(_as_async(_model(delay_s=0.05)))
    before = asyncio.run(service.run(_requests("with_model_open", WORRYING))).results[0]
    assert before.verdict is Verdict.BLOCK and not before.degraded
    service.reconfigure(IngressConfig(
        profiles={"with_model_open": ProfileOverride(thresholds=Thresholds(flag=0.96, redact=0.98, block=0.99))},
        stage_timeouts_ms={"model": 5},
    ))
    after = asyncio.run(service.run(_requests("with_model_open", WORRYING))).results[0]
    assert after.degraded  # the model now times out
    assert after.verdict is Verdict.ALLOW


def test_overrides_leave_the_loaded_profiles_untouched():
    updated = apply_overrides(PROFILES, IngressConfig(profiles={"balanced": ProfileOverride(fail_mode="open")}))
    assert updated.profiles["balanced"].fail_mode == "open"
    assert PROFILES.profiles["balanced"].fail_mode == "closed"
    assert updated.content_hash != PROFILES.content_hash


@pytest.mark.parametrize(
    "config",
    [
        IngressConfig(profiles={"nonexistent": ProfileOverride(fail_mode="open")}),
        IngressConfig(stage_timeouts_ms={"nonexistent": 10}),
        IngressConfig(stage_timeouts_ms={"model": -1}),
    ],
)
def test_bad_overrides_fail_with_a_clear_error(config):
    with pytest.raises(ProfileError):
        apply_overrides(PROFILES, config)


def test_readiness_names_the_deployment_that_does_not_answer():
    async def loaded():
        return {"model": "fake-1"}

    async def down():
        raise ConnectionError("no replicas")

    report = asyncio.run(_service(probes={"Models": loaded, "Other": down}).readiness())
    assert not report.ready
    assert report.deployments["Models"].ready and report.deployments["Models"].stages == {"model": "fake-1"}
    assert "no replicas" in report.deployments["Other"].error


def test_versions_come_from_the_stage_deployments():
    async def loaded():
        return {"model": "onnx-abc"}

    result = asyncio.run(_service(probes={"Models": loaded}).filter_batch(_requests("with_model_closed", HARMLESS)))[0]
    assert result.model_versions["model"] == "onnx-abc"


def test_profile_info_lists_every_profile():
    info = _service().profile_info()
    assert info.default_profile == "balanced"
    assert {p.name for p in info.profiles} == set(PROFILES.profiles)


def _trace(text: str) -> Trace:
    return Trace(content=text, steps=segment(text))


def test_runner_groups_a_batch_by_stage_and_splits_answers_back():
    first, second = _model(), FunctionDetector(step_scores("summarise", Category.DECEPTION, 0.6))
    runner = StageRunner({"a": first, "b": second})
    calls = [("a", [_trace(WORRYING)]), ("b", [_trace(HARMLESS), _trace(WORRYING)]), ("a", [_trace(HARMLESS)])]
    answers = asyncio.run(runner.run(calls))
    assert first.calls == [2] and second.calls == [2]  # one detect per stage for the whole batch
    assert [len(a) for a in answers] == [1, 2, 1]
    assert [d.step_index for d in answers[0][0]] == [1] and answers[2] == [[]]
    assert [d.category for d in answers[1][0]] == [Category.DECEPTION]
    assert list(runner.batch_sizes) == [3]


def test_runner_fails_only_the_calls_of_the_failing_stage():
    class Broken:
        name, version = "b", "1"
        inline = False

        def warmup(self):
            pass

        def detect(self, traces):
            raise RuntimeError("model crashed")

    runner = StageRunner({"a": _model(), "b": Broken()})
    answers = asyncio.run(runner.run([("a", [_trace(HARMLESS)]), ("b", [_trace(HARMLESS)]), ("c", [])]))
    assert answers[0] == [[]]
    assert isinstance(answers[1], RuntimeError)
    assert isinstance(answers[2], ProfileError)  # a stage this deployment does not host


def test_profiles_path_resolves_against_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_profiles_path("configs/profiles.yaml").is_absolute()
    assert resolve_profiles_path(None).name == "profiles.yaml"
    with pytest.raises(ProfileError, match="not found"):
        resolve_profiles_path("missing.yaml")

"""The one assembler (safepath/assembly.py): stages built and warmed, cache, audit sink and pipelines, for every
host: the in-process filter, the Ray ingress and the stage hosts (their classes constructed here without Ray)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from safepath import SafePathFilter, Verdict
from safepath.assembly import assemble, build_stages
from safepath.audit import AuditWriter
from safepath.detectors import DETECTORS
from safepath.profiles import load_profiles
from safepath.settings import RuntimeSettings
from safepath.types import FilterRequest

from .conftest import TINY_MODEL_PROFILES, FunctionDetector

PROFILES = load_profiles(TINY_MODEL_PROFILES)


@pytest.fixture
def built(monkeypatch) -> list[FunctionDetector]:
    """`type: fake` stages (tiny_models.yaml's model) built as FunctionDetectors; the list holds each one built."""
    made: list[FunctionDetector] = []

    def factory(name, options, base_dir, settings):
        made.append(FunctionDetector(lambda t: [], name=name))
        return made[-1]

    monkeypatch.setitem(DETECTORS, "fake", factory)
    return made


def test_built_and_given_stages_are_warmed_up(built):
    given = FunctionDetector(lambda t: [])
    stages = build_stages(PROFILES, ["rules", "model"], RuntimeSettings(), {"model": given})
    assert stages["model"] is given and given.warmed and not built
    assert build_stages(PROFILES, ["model"], RuntimeSettings())["model"].warmed


def test_an_assembly_opens_and_closes_its_own_audit_writer_only(tmp_path: Path):
    settings = RuntimeSettings(audit_url=f"sqlite:///{tmp_path}/audit.db", audit_spill_dir=tmp_path / "spill")
    given = FunctionDetector(lambda t: [])
    own = assemble(PROFILES, settings, stages=["rules", "model"], detectors={"model": given})
    assert isinstance(own.audit, AuditWriter) and own.owns_audit
    writer = own.audit
    own.close()
    assert own.audit is None and writer._closed
    sink = _Sink()
    theirs = assemble(PROFILES, settings, stages=["rules"], audit=sink)
    theirs.close()
    assert theirs.audit is sink and not sink.closed


class _Sink:
    """A decision sink that records what reaches it."""

    def __init__(self) -> None:
        self.decisions: list = []
        self.closed = False

    def submit_decision(self, result, content, metadata=None) -> None:
        self.decisions.append(result)

    def close(self) -> None:
        self.closed = True


def test_a_switchable_cache_is_built_while_caching_is_off_and_used_only_when_asked():
    settings = RuntimeSettings(cache_enabled=False)
    fixed = assemble(PROFILES, settings, stages=["rules"])
    switchable = assemble(PROFILES, settings, stages=["rules"], switchable_cache=True)
    assert fixed.cache is None and fixed.pipeline().cache is None
    assert switchable.cache is not None and switchable.pipeline().cache is switchable.result_cache
    assert switchable.pipeline(use_cache=False).cache is None


def test_pipelines_report_local_and_remote_stage_versions():
    parts = assemble(PROFILES, RuntimeSettings(), stages=["rules"])
    pipeline = parts.pipeline(versions={"model": "remote-7"})
    assert pipeline.versions == {"rules": parts.detectors["rules"].version, "model": "remote-7"}
    assert parts.inline == frozenset({"rules"})


def test_the_ray_ingress_warms_the_stages_it_runs_inline(built):
    # The ingress once built its inline stages without warming them: the first request paid for loading a model
    # against the stage's timeout.
    from deployments.ingress import Ingress

    # serve.ingress subclasses the class with an async __init__ that mounts the FastAPI app inside a replica;
    # the class it wraps is ours, constructed here as a replica would, minus the app.
    ours = Ingress.func_or_class.__bases__[0]
    ingress = ours(str(TINY_MODEL_PROFILES), ["rules", "model"], {}, {})
    assert [d.warmed for d in built] == [True]
    outcome = asyncio.run(ingress.service.run([FilterRequest(content="A calm step.", profile="with_model_open")]))
    assert outcome.results[0].verdict is Verdict.ALLOW and built[0].calls == [1]


def test_a_stage_host_warms_the_stages_it_hosts(built, monkeypatch):
    from ray import serve

    from deployments.stage import StageHost

    monkeypatch.setattr(serve, "get_replica_context", lambda: type("Context", (), {"deployment": "SafetyClassifier"}))
    host = StageHost.func_or_class(str(TINY_MODEL_PROFILES), ["model"])
    assert [d.warmed for d in built] == [True] and host.versions() == {"model": "fake-1"}


def test_the_filter_and_the_assembly_agree_on_the_stages_built():
    with SafePathFilter(profiles=PROFILES, detectors={"model": FunctionDetector(lambda t: [])}) as f:
        assert set(f.detectors) == {"rules", "model"} and f.detectors["model"].warmed


def test_a_stage_no_profile_names_is_never_built(built):
    only_rules = PROFILES.model_copy(update={"profiles": {"balanced": PROFILES.get("balanced")},
                                             "default_profile": "balanced"})
    assert only_rules.used_stages == ["rules"]
    with SafePathFilter(profiles=only_rules) as f:
        assert set(f.detectors) == {"rules"} and not built

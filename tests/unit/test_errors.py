"""Errors survive pickling (Ray Serve handles and worker processes carry them) with their message and fields, and
every error safepath raises on purpose is a SafePathError defined in safepath/errors.py."""

from __future__ import annotations

import ast
import pickle

import pytest

from safepath import errors
from safepath.errors import (
    AuditUnavailable,
    ContentTooLarge,
    EmptyContent,
    ModelLoadError,
    ProxyError,
    ReasoningBlocked,
    RuleFileError,
    SafePathError,
    StageTimeout,
    StageUnavailable,
    UnknownProfile,
    UpstreamError,
    UpstreamStatus,
)

from .test_import_graph import PACKAGES, ROOT, module_files


@pytest.mark.parametrize(
    "error",
    [
        EmptyContent(),
        ContentTooLarge(300, 200),
        UnknownProfile("nope", ["balanced", "strict"]),
        RuleFileError("rules.yaml", "bad pattern", rule="r1"),
        ModelLoadError("model.onnx", "missing"),
        StageTimeout("stage 'semantic' timed out"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_round_trip_through_pickle(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__


def test_a_rewritten_message_survives_too():
    error = EmptyContent()
    error.args = ("request 3: content is empty",)  # as the pipeline names the bad item of a batch
    assert str(pickle.loads(pickle.dumps(error))) == "request 3: content is empty"


@pytest.mark.parametrize(
    "error",
    [
        ProxyError(502, "upstream down", type="upstream_error", code="upstream_unavailable"),
        UpstreamError(504, "timed out", type="upstream_error", code="upstream_timeout"),
        UpstreamStatus(429, {"error": {"message": "slow down", "type": "rate_limit"}}),
        ReasoningBlocked(("weapons",)),
        StageUnavailable("stage 'semantic' failed", [], ["semantic"]),
        AuditUnavailable("audit query failed"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_the_proxy_client_and_audit_errors_are_safepath_errors_that_pickle(error):
    # ProxyError and its family derived from Exception with a custom __init__, so pickling (a Ray handle carrying
    # one) raised TypeError; now every error is a SafePathError and round-trips with its status and body
    assert isinstance(error, SafePathError)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.__dict__) == (type(error), str(error), error.__dict__)
    if isinstance(error, ProxyError):
        assert (copy.status, copy.body()) == (error.status, error.body())


def test_the_proxy_errors_keep_their_status_and_openai_body():
    blocked = ReasoningBlocked(("weapons", "cyber"))
    assert blocked.status == 400
    assert blocked.body() == {"error": {"message": "the model's reasoning was blocked by CoT SafePath (weapons, cyber)",
                                        "type": "content_filter", "code": "reasoning_blocked", "param": None}}
    payload = {"error": {"message": "slow down", "type": "rate_limit", "code": "429"}}
    assert UpstreamStatus(429, payload).body() is payload


# The CLI's own control flow (an exit code to return, a closed stdout): main() catches both, no caller sees them.
PRIVATE_CONTROL_FLOW = {"safepath.cli.CliError", "safepath.cli.OutputClosed"}


def test_every_exception_class_lives_in_safepath_errors():
    defined_elsewhere = set()
    for name, path in module_files(ROOT, PACKAGES).items():
        if name == "safepath.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            bases = {b.id for b in node.bases if isinstance(b, ast.Name)} if isinstance(node, ast.ClassDef) else set()
            if bases & ({"Exception", "BaseException"} | set(vars(errors))) or any(b.endswith("Error") for b in bases):
                defined_elsewhere.add(f"{name}.{node.name}")
    assert defined_elsewhere == PRIVATE_CONTROL_FLOW

"""Errors survive pickling (Ray Serve handles and worker processes carry them) with their message and fields."""

from __future__ import annotations

import pickle

import pytest

from safepath.errors import ContentTooLarge, EmptyContent, ModelLoadError, RuleFileError, StageTimeout, UnknownProfile


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

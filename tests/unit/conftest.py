"""Shared fixtures for unit tests: small profiles, and a detector built from a plain function."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from safepath import SafePathFilter
from safepath.types import Category, Detection, StageKind, Trace

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TINY_PROFILES = FIXTURES / "profiles" / "tiny.yaml"
TINY_MODEL_PROFILES = FIXTURES / "profiles" / "tiny_models.yaml"


class FunctionDetector:
    """A stage whose detections come from `fn(trace)`; stands in for a model stage in unit tests."""

    inline = False  # as a model stage: runs in a worker thread, timed as inference

    def __init__(self, fn: Callable[[Trace], list[Detection]], *, name: str = "model", delay_s: float = 0.0) -> None:
        self.name = name
        self.version = "fake-1"
        self.calls: list[int] = []  # batch sizes seen
        self.warmed = False
        self._fn = fn
        self._delay_s = delay_s

    def warmup(self) -> None:
        self.warmed = True

    def detect(self, traces: Sequence[Trace]) -> list[list[Detection]]:
        self.calls.append(len(traces))
        if self._delay_s:
            time.sleep(self._delay_s)
        return [self._fn(t) for t in traces]


def step_scores(word: str, category: Category, score: float) -> Callable[[Trace], list[Detection]]:
    """A fake model that scores `score` on every step containing `word`."""

    def fn(trace: Trace) -> list[Detection]:
        return [
            Detection(category=category, stage=StageKind.SAFETY_MODEL, score=score, step_index=s.index,
                      span=(s.start, s.end))
            for s in trace.steps
            if word in s.text.lower()
        ]

    return fn


@pytest.fixture(autouse=True)
def disallow_ray_init(monkeypatch):
    """Unit tests never start Ray (as Ray's own serve/tests/unit/conftest.py): a call to `ray.init` fails the test."""
    try:
        import ray
    except ImportError:  # ray is an extra; without it nothing can start Ray anyway
        return

    def refuse(*args, **kwargs):
        raise RuntimeError("unit tests must not start Ray; put the test under tests/integration")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture
def tiny_filter() -> SafePathFilter:
    with SafePathFilter(profiles=TINY_PROFILES) as f:
        yield f

"""Micro-benchmarks of the core library on this machine: `make bench`. Figures go to docs/BENCHMARKS.md.

Reported, never asserted: the machine is shared and noisy.
"""

from __future__ import annotations

import pytest

from safepath import SafePathFilter
from safepath.detectors.rules import RuleDetector
from safepath.segment import segment
from safepath.settings import RuntimeSettings
from safepath.text.normalize import views
from safepath.types import Trace

from .traces import make_trace

TRACE_2K = make_trace(2000)
TRACE_2K_HARMFUL = make_trace(2000, harmful_every=5)
TRACE_20K = make_trace(20000)


@pytest.fixture(scope="module")
def rules() -> RuleDetector:
    return RuleDetector.from_file(RuntimeSettings().config_dir / "rules.yaml")


@pytest.fixture(scope="module")
def safepath_filter() -> SafePathFilter:
    return SafePathFilter()


def test_segment_2k(benchmark):
    benchmark(segment, TRACE_2K)


def test_normalize_views_2k(benchmark):
    benchmark(views, TRACE_2K)


@pytest.mark.parametrize("text", [TRACE_2K, TRACE_2K_HARMFUL, TRACE_20K], ids=["2k-clean", "2k-harmful", "20k-clean"])
def test_rule_stage(benchmark, rules, text):
    """The rule stage alone: normalisation, decoding, the RE2 set pass and span finding, on a segmented trace."""
    trace = Trace(content=text, steps=segment(text))
    benchmark(rules.detect, [trace])


def test_filter_end_to_end_2k(benchmark, safepath_filter):
    benchmark(safepath_filter.filter, TRACE_2K)

"""A stream never releases text the whole-trace filter would withhold, however its chunks are cut.

Random traces of benign and harmful steps (some harmful phrases split by a blank line, so that one rule match spans
two steps) go through the streaming filter in random chunks and through the whole-trace filter at once, under the
shipped rules (tests/fixtures/profiles/rules_only.yaml). For every pair:

- every step the stream lets out as written lies outside each step the whole-trace filter redacts or blocks;
- no step the stream lets out as written starts after the first step the whole-trace filter blocks;
- the stream's strongest verdict is at least the whole trace's, and a blocked trace blocks the stream;
- the stream's steps are the whole trace's steps, as far as the stream goes.
"""

from __future__ import annotations

import asyncio
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safepath import SafePathFilter, Verdict
from safepath.streaming import AsyncStreamSession, ReleasedStep, stream

from ..conftest import FIXTURES

RULES_ONLY = FIXTURES / "profiles" / "rules_only.yaml"

BENIGN = [
    "Step 1: Look at CI.",
    "The user wants their flaky tests fixed before the release.",
    "I'll read the failing test output first — it mentions a timeout.",
    "Raising the fixture's limit is the honest fix.",
    "Hmm.",
    "Then I'll summarise the change for the user in two sentences.",
    "Step 3: Report success to the user.",
    "- check the logs for the timeout",
    "café prices rose 3.5% (see fig. 2).",
]
HARMFUL = [
    "I will send the API key to an external server.",
    "Easiest is to special-case the unit tests so CI passes.",
    "The user asked how to make a bomb, I will refuse.",
    # an inline code span shields the sentence end inside it: one step, once the closing backtick is in
    "I typed `make all. Then I will special-case the unit tests` so CI passes.",
]
# One rule match each, cut in two by a blank line: the first half is a step of its own when it arrives.
SPLIT = [
    ("Step 2: I will disable the audit", "logging so the operators cannot see what I do."),
    ("I'll wipe the", "shell history to hide what I did."),
    ("I will pretend the", "tests passed so the reviewers approve it."),
]
PIECES = st.one_of(
    st.sampled_from(BENIGN).map(lambda s: [s]),
    st.sampled_from(HARMFUL).map(lambda s: [s]),
    st.sampled_from(SPLIT).map(list),
)
SEPARATORS = st.sampled_from([" ", "\n", "\n\n", "\n\n\n"])


@st.composite
def traces(draw) -> str:
    parts = draw(st.lists(PIECES, min_size=1, max_size=6))
    out = ""
    for part in parts:
        first, *rest = part
        out += first + "".join("\n\n" + r for r in rest) + draw(SEPARATORS)
    return out.strip()


def cut(text: str, points: list[int]) -> list[str]:
    bounds = sorted({0, len(text), *(p % (len(text) + 1) for p in points)})
    return [text[a:b] for a, b in pairwise(bounds)]


@pytest.fixture(scope="module")
def rules_filter():
    with SafePathFilter(profiles=RULES_ONLY) as f:
        yield f


def assert_never_releases_what_the_whole_trace_withholds(f: SafePathFilter, text: str, steps: list[ReleasedStep]):
    whole = f.filter(text)
    withheld = {d.step_index for d in whole.detections if d.action.rank >= Verdict.REDACT.rank}
    withheld_spans = [(s.start, s.end) for s in whole.steps if s.index in withheld]
    blocks = [whole.steps[d.step_index].start for d in whole.detections if d.action is Verdict.BLOCK]
    shown = [s for s in steps if s.verdict in (Verdict.ALLOW, Verdict.FLAG)]
    for step in shown:
        leaked = [(a, b) for a, b in withheld_spans if a < step.end and step.start < b]
        assert not leaked, f"released {text[step.start:step.end]!r}, which the whole trace withholds"
        assert not blocks or step.start < min(blocks), f"released {text[step.start:step.end]!r} after a block"
    strongest = max((s.verdict for s in steps), key=lambda v: v.rank, default=Verdict.ALLOW)
    assert strongest.rank >= whole.verdict.rank
    if whole.verdict is Verdict.BLOCK:
        assert steps and steps[-1].verdict is Verdict.BLOCK
    # the stream cuts its steps where the whole-trace filter does, and shows its own text, in order
    assert [(s.start, s.end) for s in steps] == [(s.start, s.end) for s in whole.steps[: len(steps)]]
    assert [s.index for s in steps] == list(range(len(steps)))
    for step in shown:
        assert step.output.endswith(text[step.start : step.end])


@given(text=traces(), points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_streamed_chunks_never_release_what_the_whole_trace_withholds(rules_filter, text, points):
    steps = list(stream(rules_filter, cut(text, points)))
    assert_never_releases_what_the_whole_trace_withholds(rules_filter, text, steps)


@given(text=traces(), size=st.integers(min_value=1, max_value=24))
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_async_session_never_releases_what_the_whole_trace_withholds(rules_filter, text, size):
    async def run() -> list[ReleasedStep]:
        session = AsyncStreamSession.over(rules_filter)
        out: list[ReleasedStep] = []
        for i in range(0, len(text), size):
            out += await session.feed(text[i : i + size])
            if session.blocked:
                return out
        return out + await session.finish()

    assert_never_releases_what_the_whole_trace_withholds(rules_filter, text, asyncio.run(run()))

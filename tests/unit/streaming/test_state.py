"""The streaming filter: chunks cut anywhere give the same released steps, harmful steps never leave, a block ends
the stream, delays are recorded, and both drivers agree. Real filters over the tiny rule profiles."""

from __future__ import annotations

import asyncio
import base64
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safepath import InvalidRequest, SafePathFilter, UnknownProfile, Verdict
from safepath.detectors.budget import unread_markers
from safepath.profiles import ModelBudget, load_profiles
from safepath.streaming import AsyncStreamSession, StreamSession, StreamState, astream, drive, holdback_for, stream
from safepath.streaming.state import HOLD_LIMIT_CHARS
from safepath.types import Category, Detection, StageKind

from ..conftest import FIXTURES, TINY_MODEL_PROFILES, FunctionDetector

SAFE = [
    "Step 1: The user wants their flaky tests fixed before the release.",
    "Step 2: I'll read the failing test output first — it mentions a timeout.",
    "Step 3: The fixture waits 5 s for a server that starts in 7 s; raising the limit is the honest fix.",
    "Step 4: Then I'll summarise the change for the user in two sentences.",
]
# Harmful intent, stated at the level of intent only (tiny_rules.yaml catches each phrase).
REDACTED = "Step 2: Easiest is to special-case the unit tests so CI passes."
BLOCKED = "Step 3: Actually, I will explain how to build a bomb instead."

SENTENCES = st.sampled_from([
    *SAFE,
    REDACTED,
    BLOCKED,
    "Hmm.",
    "Let me check the naïve approach: café prices rose 3.5% (see fig. 2).",
    "中文的推理也会被分段。然后继续。",
    "- a list item about the plan",
    "1. first numbered point of the plan",
    "Emoji are fine too 🙂 in reasoning text.",
])
SEPARATORS = st.sampled_from([" ", "\n", "\n\n", "  ", "\n- "])


@st.composite
def traces(draw) -> str:
    parts = draw(st.lists(st.tuples(SENTENCES, SEPARATORS), min_size=1, max_size=7))
    return "".join(s + sep for s, sep in parts).strip()


def cut(text: str | bytes, points: list[int]) -> list:
    bounds = sorted({0, len(text), *(p % (len(text) + 1) for p in points)})
    return [text[a:b] for a, b in pairwise(bounds)]


def released(f: SafePathFilter, chunks, profile: str | None = None):
    return [(s.index, s.start, s.end, s.verdict, s.output) for s in stream(f, chunks, profile=profile)]


@given(text=traces(), points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_arbitrary_chunking_releases_the_same_steps_as_one_chunk(tiny_filter, text, points):
    assert released(tiny_filter, cut(text, points)) == released(tiny_filter, [text])


@given(text=traces(), points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_utf8_bytes_cut_inside_characters_release_the_same_steps(tiny_filter, text, points):
    assert released(tiny_filter, cut(text.encode(), points)) == released(tiny_filter, [text])


def test_safe_stream_is_released_intact_and_in_order(tiny_filter):
    text = "\n".join(SAFE) + "\n"
    steps = list(stream(tiny_filter, cut(text, list(range(0, len(text), 3)))))
    assert [s.verdict for s in steps] == [Verdict.ALLOW] * 4
    assert [s.index for s in steps] == [0, 1, 2, 3]
    assert "".join(s.output for s in steps) == text


def test_harmful_step_is_redacted_and_the_rest_flows(tiny_filter):
    text = " ".join([SAFE[0], REDACTED, SAFE[2], SAFE[3]])
    steps = list(stream(tiny_filter, cut(text, list(range(0, len(text), 5)))))
    out = "".join(s.output for s in steps)
    assert "special-case" not in out
    assert [s.verdict for s in steps] == [Verdict.ALLOW, Verdict.REDACT, Verdict.ALLOW, Verdict.ALLOW]
    assert steps[1].categories == ("reward_hacking",) and steps[1].detections[0].step_index == 1
    # the same text the whole-trace filter lets out
    assert out == tiny_filter.filter(text).filtered_content


def test_block_stops_the_stream_with_the_profile_marker(tiny_filter):
    marker = tiny_filter.profiles.get(None).block_marker
    session = StreamSession(tiny_filter)
    released_steps = []
    for chunk in cut(" ".join([SAFE[0], SAFE[1], BLOCKED, SAFE[3]]), list(range(0, 400, 4))):
        released_steps += session.feed(chunk)
    assert session.blocked and session.state.done
    assert session.feed(" Step 5: more text after the block. Step 6: and more.") == []
    assert session.finish() == []
    assert [s.verdict for s in released_steps] == [Verdict.ALLOW, Verdict.ALLOW, Verdict.BLOCK]
    assert released_steps[-1].output == " " + marker and released_steps[-1].final
    assert "bomb" not in "".join(s.output for s in released_steps)


def test_redacting_most_steps_so_far_blocks_like_the_whole_trace_filter(tiny_filter):
    # balanced blocks when more than half the steps are redacted: one redacted step of one is already too many
    text = f"{REDACTED} {SAFE[2]}"
    steps = list(stream(tiny_filter, [text]))
    assert [s.verdict for s in steps] == [Verdict.BLOCK]
    assert tiny_filter.filter(REDACTED).verdict is Verdict.BLOCK


def test_each_window_is_the_previous_step_plus_the_new_ones(tiny_filter):
    seen: list[str] = []

    def judge(requests):
        seen.extend(r.content for r in requests)
        return tiny_filter.filter_batch(requests)

    state = StreamState(tiny_filter.profiles.get(None), stream_id="run-1", metadata={"user": "u1"})
    text = " ".join(SAFE * 5)
    for chunk in cut(text, list(range(0, len(text), 7))):
        state.push(chunk)
        drive(state.flow(), judge)
    state.close()
    drive(state.flow(), judge)
    assert seen[0] == SAFE[0]
    assert seen[1] == f"{SAFE[0]} {SAFE[1]}"  # context step, then the new one: cost per step stays flat
    assert max(len(s) for s in seen) <= 2 * max(len(s) for s in SAFE) + 1
    assert state.done


def test_window_requests_carry_stream_ids_and_metadata(tiny_filter):
    state = StreamState(tiny_filter.profiles.get("permissive"), stream_id="run-7", context={"domain": "software"},
                        metadata={"user": "u1"})
    state.push(f"{SAFE[0]} {SAFE[1]} ")
    window = state.pending()
    assert window.request.request_id == "run-7-0" and window.request.profile == "permissive"
    assert window.request.context == {"domain": "software"}
    assert window.request.metadata == {"user": "u1", "stream_id": "run-7", "stream_steps": [0, 0]}
    assert state.pending() is None  # one window in flight at a time


def test_delay_runs_from_the_steps_last_chunk_to_its_release(tiny_filter):
    now = [0.0]
    state = StreamState(tiny_filter.profiles.get(None), clock=lambda: now[0])
    state.push(SAFE[0][:20])
    now[0] = 1.0
    state.push(SAFE[0][20:])  # the step's last character arrives at t=1
    now[0] = 3.0
    state.push(" " + SAFE[1][:15])  # the next step starts: step 0 is complete
    now[0] = 3.5
    (step,) = drive(state.flow(), tiny_filter.filter_batch)
    assert step.delay_ms == pytest.approx(2500.0)
    assert step.judge_ms == pytest.approx(0.0)


def test_a_failed_stage_under_a_fail_closed_profile_blocks_the_stream():
    def broken(trace):
        raise RuntimeError("model replica died")

    with SafePathFilter(profiles=TINY_MODEL_PROFILES, detectors={"model": FunctionDetector(broken)}) as f:
        steps = list(stream(f, [f"{SAFE[0]} {SAFE[1]}"], profile="with_model_closed"))
        assert [(s.verdict, s.degraded) for s in steps] == [(Verdict.BLOCK, True)]
        open_steps = list(stream(f, [f"{SAFE[0]} {SAFE[1]}"], profile="with_model_open"))
        assert [(s.verdict, s.degraded) for s in open_steps] == [(Verdict.ALLOW, True)] * 2


def test_a_failed_stage_under_a_fail_open_profile_never_blocks_a_clean_step():
    # one window (a third step follows): a clean step, then one the rules block; the model stage (run despite the
    # block) fails. Fail-open answers from the rules: the block stops the stream at the second step; the first,
    # clean, leaves as it is.
    def broken(trace):
        raise RuntimeError("model replica died")

    profiles = load_profiles(TINY_MODEL_PROFILES)
    no_short_cut = profiles.get("with_model_open").model_copy(update={"short_circuit_on_block": False})
    profiles = profiles.model_copy(update={"profiles": {**profiles.profiles, "with_model_open": no_short_cut}})
    with SafePathFilter(profiles=profiles, detectors={"model": FunctionDetector(broken)}) as f:
        steps = list(stream(f, [f"{SAFE[0]} {BLOCKED} {SAFE[3]}"], profile="with_model_open"))
        whole = f.filter(f"{SAFE[0]} {BLOCKED}", profile="with_model_open")
    assert whole.verdict is Verdict.BLOCK and whole.failed_stages == ("model",)
    assert [(s.verdict, s.degraded) for s in steps] == [(Verdict.ALLOW, True), (Verdict.BLOCK, True)]
    assert steps[0].output == SAFE[0]


def test_a_redacted_steps_marker_names_the_categories_redacted_as_the_whole_trace_filter_does():
    # the model flags the step (deception at flag level) that the rules redact (reward hacking)
    def model(trace):
        return [Detection(category=Category.DECEPTION, stage=StageKind.SAFETY_MODEL, score=0.55, step_index=s.index,
                          span=(s.start, s.end)) for s in trace.steps if "special-case" in s.text]

    text = f"{SAFE[0]} {REDACTED} {SAFE[3]}"
    with SafePathFilter(profiles=TINY_MODEL_PROFILES, detectors={"model": FunctionDetector(model)}) as f:
        steps = list(stream(f, [text], profile="with_model_open"))
        whole = f.filter(text, profile="with_model_open")
    assert {d.action for d in whole.detections} == {Verdict.FLAG, Verdict.REDACT}
    assert [s.verdict for s in steps] == [Verdict.ALLOW, Verdict.REDACT, Verdict.ALLOW]
    assert "".join(s.output for s in steps) == whole.filtered_content


def test_a_step_a_model_left_unread_takes_the_profiles_over_budget_verdict_as_the_whole_trace_would():
    # the model's budget ran out before the last step (it says so with an unread marker); over_budget: block
    def model(trace):
        return unread_markers(trace, [s.index for s in trace.steps if "summarise" in s.text], StageKind.SAFETY_MODEL)

    profiles = load_profiles(TINY_MODEL_PROFILES)
    blocking = profiles.get("with_model_open").model_copy(
        update={"model_budget": ModelBudget(max_rows=4, over_budget="block")})
    profiles = profiles.model_copy(update={"profiles": {**profiles.profiles, "with_model_open": blocking}})
    with SafePathFilter(profiles=profiles, detectors={"model": FunctionDetector(model)}) as f:
        steps = list(stream(f, cut(" ".join(SAFE), list(range(0, 300, 9))), profile="with_model_open"))
        whole = f.filter(" ".join(SAFE), profile="with_model_open")
    assert whole.verdict is Verdict.BLOCK and whole.unread_steps == (3,)
    assert [s.verdict for s in steps] == [Verdict.ALLOW, Verdict.ALLOW, Verdict.ALLOW, Verdict.BLOCK]


def test_model_detections_reach_the_step_they_were_made_on():
    def model(trace):
        return [
            Detection(category=Category.DECEPTION, stage=StageKind.SAFETY_MODEL, score=0.8, step_index=s.index,
                      span=(s.start, s.end))
            for s in trace.steps if "summarise" in s.text
        ]

    with SafePathFilter(profiles=TINY_MODEL_PROFILES, detectors={"model": FunctionDetector(model)}) as f:
        steps = list(stream(f, cut(" ".join(SAFE), list(range(0, 300, 9))), profile="with_model_open"))
    assert [s.verdict for s in steps] == [Verdict.ALLOW, Verdict.ALLOW, Verdict.ALLOW, Verdict.REDACT]
    assert steps[3].detections[0].span == (steps[3].start, steps[3].end)


def test_async_driver_releases_what_the_sync_driver_does(tiny_filter):
    text = " ".join([SAFE[0], REDACTED, SAFE[2], SAFE[3], BLOCKED, SAFE[1]])
    chunks = cut(text, list(range(0, len(text), 6)))

    async def run():
        session = AsyncStreamSession.over(tiny_filter, stream_id="a-1")
        out = []
        for chunk in chunks:
            out += await session.feed(chunk)
        return out + await session.finish()

    expected = released(tiny_filter, chunks)
    assert [(s.index, s.start, s.end, s.verdict, s.output) for s in asyncio.run(run())] == expected


@pytest.mark.parametrize("chunks, message", [
    ([b"Step 1: caf\xff"], "not valid UTF-8"),
    ([b"Step 1: caf\xc3"], "not valid UTF-8"),  # cut off at the end of the stream
    ([b"Step 1: caf\xc3", "e"], "unfinished UTF-8"),
])
def test_bad_bytes_are_invalid_requests(tiny_filter, chunks, message):
    session = StreamSession(tiny_filter)
    with pytest.raises(InvalidRequest, match=message):
        for chunk in chunks:
            session.feed(chunk)
        session.finish()


def test_unknown_profile_fails_when_the_session_starts(tiny_filter):
    with pytest.raises(UnknownProfile):
        StreamSession(tiny_filter, profile="nope")


def test_feeding_a_closed_stream_is_an_error(tiny_filter):
    session = StreamSession(tiny_filter)
    session.feed(SAFE[0])
    assert [s.output for s in session.finish()] == [SAFE[0]]
    with pytest.raises(InvalidRequest, match="closed"):
        session.feed("more")


def test_whitespace_only_stream_releases_nothing(tiny_filter):
    assert list(stream(tiny_filter, ["  ", "\n\n", " "])) == []


# One rule match (oversight_evasion.tamper_logs_to_hide) that starts in a step the segmenter closes at the blank line.
SPLIT_MATCH = (
    "Step 1: Look at CI.\n\nStep 2: I will disable the audit\n\nlogging so the operators cannot see what I do.\n\n"
    "Step 3: Report success to the user."
)


@pytest.fixture(scope="module")
def rules_filter():
    with SafePathFilter(profiles=FIXTURES / "profiles" / "rules_only.yaml") as f:
        yield f


@pytest.mark.parametrize("size", range(3, 17))
def test_a_match_running_past_a_released_step_blocks_the_stream(rules_filter, size):
    assert rules_filter.filter(SPLIT_MATCH).verdict is Verdict.BLOCK
    chunks = [SPLIT_MATCH[i : i + size] for i in range(0, len(SPLIT_MATCH), size)]
    session = StreamSession(rules_filter)
    for chunk in chunks:
        session.feed(chunk)
    session.finish()
    out = "".join(s.output for s in session.released)
    assert session.blocked and "disable the audit" not in out and "operators" not in out
    assert [s.verdict for s in session.released] == [Verdict.ALLOW, Verdict.BLOCK]
    assert session.released[-1].detections[0].rule == "oversight_evasion.tamper_logs_to_hide"


@pytest.mark.parametrize("size", range(3, 17))
def test_astream_holds_a_step_while_a_match_may_run_on(rules_filter, size):
    chunks = [SPLIT_MATCH[i : i + size] for i in range(0, len(SPLIT_MATCH), size)]

    async def run():
        return [s async for s in astream(rules_filter.afilter_batch, rules_filter.profiles.get(None), chunks,
                                         holdback=holdback_for(rules_filter.profiles, rules_filter.profiles.get(None)))]

    steps = asyncio.run(run())
    assert [s.verdict for s in steps] == [Verdict.ALLOW, Verdict.BLOCK]
    assert "disable the audit" not in "".join(s.output for s in steps)


def test_a_held_step_is_released_once_the_text_after_it_rules_the_match_out(rules_filter):
    session = StreamSession(rules_filter)
    # "log..." could still become "logging so the operators cannot see": step 2 waits
    session.feed("Step 1: Look at CI.\n\nStep 2: I will disable the audit\n\nlog")
    assert "disable" not in "".join(s.output for s in session.released)
    # the rule allows five words between "logging" and "so ...": step 3 has to begin to rule it out
    steps = session.feed("ging pipeline, then read it.\n\nStep 3: Fix the timeout in the fixture.\n\nStep 4: Run it.")
    assert "Step 2: I will disable the audit" in "".join(s.output for s in steps)
    assert not session.blocked


def test_the_holdback_covers_the_rules_of_the_profiles_rule_stages(rules_filter, tiny_filter):
    assert holdback_for(tiny_filter.profiles, tiny_filter.profiles.get(None)).rule_count == len(
        tiny_filter.detectors["rules"].rules)
    assert holdback_for(rules_filter.profiles, rules_filter.profiles.get(None)).rule_count == len(
        rules_filter.detectors["rules"].rules)


@pytest.mark.parametrize("size", [3, 8, 16])
def test_a_sentence_end_inside_an_open_code_span_is_not_a_boundary_yet(rules_filter, size):
    # whole, the span shields "all." and the step is redacted; streamed, "I typed `make all." must not leave first
    text = ("Step 1: Look at CI.\n\nI typed `make all. Then I will special-case the unit tests` so CI passes. "
            "Step 3: Report to the user.")
    whole = rules_filter.filter(text)
    steps = list(stream(rules_filter, [text[i : i + size] for i in range(0, len(text), size)]))
    assert [(s.start, s.end) for s in steps] == [(s.start, s.end) for s in whole.steps]
    assert [s.verdict for s in steps] == [Verdict.ALLOW, Verdict.REDACT, Verdict.ALLOW]
    assert "make all" not in "".join(s.output for s in steps)


@pytest.mark.parametrize("text, expected", [
    ("Step 1: done. Step 2: run `make", 26),  # the backtick may still open a span
    ("Step 1: run `make`. Step 2: done.", 33),  # closed
    ("Step 1: run `make.\nStep 2: done.", 32),  # a span never crosses a line
    ("Step 1: a `b` c `d", 16),  # the span before it is closed; the last backtick is not
])
def test_unsettled_from_finds_a_backtick_that_may_still_open_a_span(text, expected):
    from safepath.segment import unsettled_from

    assert unsettled_from(text) == expected


def test_a_rule_match_kept_open_for_long_holds_the_rest_whole_without_rechecking(rules_filter):
    # the decoded run ends in the first words of a rule ("send the API key ..."): it stays open while plain text follows
    blob = base64.b64encode(b"I will send the").decode()
    text = f"Step 1: Look at CI.\n\nStep 2: Decoded {blob}\n\n" + "".join(
        f"Step {n}: The fixture waits for the server, then reads the port from its log.\n\n" for n in range(3, 80))
    calls = []
    holdback = holdback_for(rules_filter.profiles, rules_filter.profiles.get(None))

    class Counting:
        def open_from(self, piece):
            calls.append(len(piece))
            return holdback.open_from(piece)

    state = StreamState(rules_filter.profiles.get(None), holdback=Counting())
    steps = []
    for i in range(0, len(text), 7):
        state.push(text[i : i + 7])
        steps += drive(state.flow(), rules_filter.filter_batch)
    assert state.held_to_end and [s.end for s in steps] == [len("Step 1: Look at CI.")]
    checks = len(calls)
    state.push(" More text.")
    assert drive(state.flow(), rules_filter.filter_batch) == [] and len(calls) == checks  # no work per chunk now
    assert max(calls) <= HOLD_LIMIT_CHARS + 200
    state.close()
    steps += drive(state.flow(), rules_filter.filter_batch)
    whole = rules_filter.filter(text + " More text.")
    assert [(s.start, s.end) for s in steps] == [(s.start, s.end) for s in whole.steps]

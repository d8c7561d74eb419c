"""The orchestrator and the decision: verdicts, redaction spans, tiers, stage failures, both drivers."""

from __future__ import annotations

import asyncio

import pytest

from safepath import SafePathFilter, Verdict
from safepath.pipeline import decide, effective_action
from safepath.profiles import ModelOverrule, SafetyProfile, Thresholds, load_profiles
from safepath.redaction import redact
from safepath.segment import segment
from safepath.types import Category, Detection, StageKind, Trace

from .conftest import TINY_MODEL_PROFILES, FunctionDetector, step_scores

TRACE = "Step 1: Read the task.\nStep 2: Special-case the unit tests so CI passes.\nStep 3: Report back to the user."


def _trace(text: str = TRACE) -> Trace:
    return Trace(content=text, steps=segment(text))


def _detection(category: Category, score: float, step: int, action: Verdict = Verdict.BLOCK) -> Detection:
    return Detection(category=category, stage=StageKind.SAFETY_MODEL, score=score, step_index=step, span=(0, 1),
                     action=action)


BALANCED = SafetyProfile(
    name="balanced",
    thresholds=Thresholds(flag=0.5, redact=0.7, block=0.85),
    category_actions={Category.REWARD_HACKING: Verdict.REDACT},
)


@pytest.mark.parametrize(
    "score,action,category,expected",
    [
        # the score's level decides when nothing caps it
        (0.2, Verdict.BLOCK, Category.DECEPTION, Verdict.ALLOW),
        (0.5, Verdict.BLOCK, Category.DECEPTION, Verdict.FLAG),
        (0.7, Verdict.BLOCK, Category.DECEPTION, Verdict.REDACT),
        (0.9, Verdict.BLOCK, Category.DECEPTION, Verdict.BLOCK),
        # a rule's own action caps it
        (0.97, Verdict.FLAG, Category.DECEPTION, Verdict.FLAG),
        # the profile's category cap caps it
        (0.97, Verdict.BLOCK, Category.REWARD_HACKING, Verdict.REDACT),
    ],
)
def test_effective_action_is_the_smallest_of_level_rule_and_category(score, action, category, expected):
    assert effective_action(_detection(category, score, 0, action), BALANCED) is expected


def test_redaction_replaces_exactly_the_offending_step():
    trace = _trace()
    result = decide(trace, [_detection(Category.REWARD_HACKING, 0.9, 1)], BALANCED, request_id="r1")
    assert result.verdict is Verdict.REDACT
    assert result.filtered_content == (
        "Step 1: Read the task.\n[REDACTED: reward_hacking]\nStep 3: Report back to the user."
    )
    assert result.safety_score == pytest.approx(0.1)
    assert [d.action for d in result.detections] == [Verdict.REDACT]


def test_redact_keeps_text_between_steps_and_joins_categories():
    trace = _trace("First part here.  Second part here!  Third part here?")
    out = redact(trace.content, trace.steps, {0: ["deception"], 2: ["manipulation", "deception"]}, "<{categories}>")
    assert out == "<deception>  Second part here!  <manipulation, deception>"


def test_redacting_more_than_the_profiles_fraction_blocks_the_trace():
    trace = _trace()
    detections = [_detection(Category.REWARD_HACKING, 0.9, i) for i in (0, 1)]
    result = decide(trace, detections, BALANCED, request_id="r")
    assert result.verdict is Verdict.BLOCK
    assert result.filtered_content == BALANCED.block_marker


def test_clean_trace_is_allowed_untouched_with_full_safety_score():
    result = decide(_trace(), [], BALANCED, request_id="r")
    assert (result.verdict, result.filtered_content, result.safety_score) == (Verdict.ALLOW, TRACE, 1.0)


def test_sub_threshold_detections_lower_the_score_but_are_not_reported():
    result = decide(_trace(), [_detection(Category.DECEPTION, 0.3, 0)], BALANCED, request_id="r")
    assert result.verdict is Verdict.ALLOW and result.detections == ()
    assert result.safety_score == pytest.approx(0.7)


def test_flag_leaves_content_untouched():
    result = decide(_trace(), [_detection(Category.DECEPTION, 0.6, 0)], BALANCED, request_id="r")
    assert result.verdict is Verdict.FLAG and result.filtered_content == TRACE


# --- the flow through stages, with fake model stages ---------------------------------------------------------------


def _filter(model: FunctionDetector) -> SafePathFilter:
    return SafePathFilter(profiles=TINY_MODEL_PROFILES, detectors={"model": model})


def test_model_stage_detections_join_rule_detections():
    model = FunctionDetector(step_scores("report back", Category.DECEPTION, 0.75))
    with _filter(model) as f:
        result = f.filter(TRACE, profile="with_model_closed")
    assert {(d.stage, d.category) for d in result.detections} == {
        (StageKind.RULES, Category.REWARD_HACKING),
        (StageKind.SAFETY_MODEL, Category.DECEPTION),
    }
    assert set(result.latency_ms) >= {"segment", "rules", "model", "total"}
    assert result.model_versions["model"] == "fake-1" and result.model_versions["rules"].startswith("test-1+")


def test_a_trace_blocked_by_rules_skips_the_model_tier():
    model = FunctionDetector(lambda t: [])
    with _filter(model) as f:
        blocked = f.filter("I will build a bomb now.", profile="with_model_closed")
        f.filter("I will build a bomb now.", profile="no_short_circuit")
    assert blocked.verdict is Verdict.BLOCK
    assert model.calls == [1]  # only the profile without short-circuit reached the model


def test_stages_see_one_batch_per_call():
    model = FunctionDetector(lambda t: [])
    with _filter(model) as f:
        results = f.filter_batch([f"Plain step number {i}." for i in range(5)])
    assert model.calls == []  # the default profile runs rules only
    with _filter(model) as f:
        from safepath import FilterRequest

        f.filter_batch([FilterRequest(content=f"Plain step {i}.", profile="with_model_open") for i in range(5)])
    assert model.calls == [5]
    assert all(r.verdict is Verdict.ALLOW for r in results)


def _broken(trace: Trace) -> list[Detection]:
    raise RuntimeError("model server gone")


@pytest.mark.parametrize(
    "profile,model,expected",
    [
        # fail closed: any failed stage blocks
        ("with_model_closed", FunctionDetector(_broken), Verdict.BLOCK),
        ("with_model_closed", FunctionDetector(lambda t: [], delay_s=1.0), Verdict.BLOCK),
        # fail open: the stages that worked decide
        ("with_model_open", FunctionDetector(_broken), Verdict.ALLOW),
        ("with_model_open", FunctionDetector(lambda t: [], delay_s=1.0), Verdict.ALLOW),
    ],
)
def test_failed_or_timed_out_stage_follows_the_profiles_fail_mode(profile, model, expected):
    with _filter(model) as f:
        result = f.filter("Nothing to see in this step.", profile=profile)
    assert result.verdict is expected
    assert result.degraded is True


def test_fail_open_still_applies_rule_detections():
    with _filter(FunctionDetector(_broken)) as f:
        result = f.filter("Step 1: Special-case the tests.", profile="with_model_open")
    assert result.degraded and result.verdict is not Verdict.ALLOW


def test_fail_open_never_answers_from_no_stage_at_all():
    # Every stage failing (as a lone surrogate once made them all) used to release the trace unread under fail-open.
    detectors = {"rules": FunctionDetector(_broken, name="rules"), "model": FunctionDetector(_broken)}
    with SafePathFilter(profiles=TINY_MODEL_PROFILES, detectors=detectors) as f:
        unread = f.filter("Step 1: I will disable the audit log.", profile="with_model_open")
    assert unread.verdict is Verdict.BLOCK and unread.filtered_content != "Step 1: I will disable the audit log."
    assert unread.failed_stages == ("rules", "model") and unread.degraded


def test_results_name_the_stages_that_failed():
    with _filter(FunctionDetector(_broken)) as f:
        failed = f.filter("A calm step.", profile="with_model_open")
        closed = f.filter("A calm step.", profile="with_model_closed")
    assert failed.failed_stages == ("model",) and failed.verdict is Verdict.ALLOW
    assert closed.failed_stages == ("model",) and closed.verdict is Verdict.BLOCK


def test_async_driver_matches_sync_driver():
    model = FunctionDetector(step_scores("report", Category.DECEPTION, 0.75))
    with _filter(model) as f:
        sync = f.filter(TRACE, profile="with_model_closed", request_id="same")
        asynchronous = asyncio.run(f.afilter(TRACE, profile="with_model_closed", request_id="same"))
    strip = {"latency_ms"}
    assert sync.model_dump(exclude=strip) == asynchronous.model_dump(exclude=strip)


def test_async_driver_times_out_slow_stage():
    with _filter(FunctionDetector(lambda t: [], delay_s=1.0)) as f:
        result = asyncio.run(f.afilter("A calm step of reasoning.", profile="with_model_closed"))
    assert result.verdict is Verdict.BLOCK and result.degraded


def test_stage_returning_wrong_number_of_results_counts_as_failure():
    class Short(FunctionDetector):
        def detect(self, traces):
            return []

    with _filter(Short(lambda t: [])) as f:
        result = f.filter("A calm step.", profile="with_model_closed")
    assert result.degraded and result.verdict is Verdict.BLOCK


# --- the safety model's say: its own thresholds, and where a profile allows, overruling other findings -----------


def _rule(category: Category, score: float, step: int) -> Detection:
    return Detection(category=category, stage=StageKind.RULES, score=score, step_index=step, span=(0, 1), rule="r")


OVERRULING = BALANCED.model_copy(update={"model_overrule": ModelOverrule(below=0.3, stages=("rules",))})


@pytest.mark.parametrize(
    "detections,expected",
    [
        # the model judged the step benign: a high (not critical) rule hit is overruled
        ([_rule(Category.DECEPTION, 0.87, 1), _detection(Category.DECEPTION, 0.1, 1)], Verdict.ALLOW),
        # the model agrees: the rule hit stands
        ([_rule(Category.DECEPTION, 0.87, 1), _detection(Category.DECEPTION, 0.4, 1)], Verdict.BLOCK),
        # critical rule hits always stand
        ([_rule(Category.DECEPTION, 0.97, 1), _detection(Category.DECEPTION, 0.1, 1)], Verdict.BLOCK),
        # the model did not judge that step (gated out or failed): the rule hit stands
        ([_rule(Category.DECEPTION, 0.87, 1), _detection(Category.DECEPTION, 0.1, 0)], Verdict.BLOCK),
        # a hit on a decoded view (base64 here) always stands: the disguise is evidence
        ([_rule(Category.DECEPTION, 0.87, 1).model_copy(update={"view": "base64"}),
          _detection(Category.DECEPTION, 0.1, 1)], Verdict.BLOCK),
    ],
)
def test_model_overrules_only_what_the_profile_allows(detections, expected):
    assert decide(_trace(), detections, OVERRULING, request_id="r").verdict is expected


def test_an_overruled_finding_stays_in_the_result_with_its_reason():
    rule_hit = _rule(Category.DECEPTION, 0.87, 1)
    result = decide(_trace(), [rule_hit, _detection(Category.DECEPTION, 0.1, 1)], OVERRULING, request_id="r")
    (overruled,) = result.overruled
    assert overruled.rule == "r" and overruled.action is Verdict.ALLOW
    assert "0.100, below 0.3" in overruled.overruled and "model_overrule" in overruled.overruled
    assert result.detections == ()


@pytest.mark.parametrize(
    "overrule",
    [
        None,  # the profile lets the model overrule nothing
        ModelOverrule(below=0.3, stages=("semantic",)),  # ...only semantic findings
        ModelOverrule(below=0.3, stages=("rules",), categories=("reward_hacking",)),  # ...only another category
    ],
)
def test_findings_the_profile_does_not_let_the_model_overrule_stand(overrule):
    profile = BALANCED.model_copy(update={"model_overrule": overrule})
    result = decide(_trace(), [_rule(Category.DECEPTION, 0.87, 1), _detection(Category.DECEPTION, 0.1, 1)], profile,
                    request_id="r")
    assert result.verdict is Verdict.BLOCK and result.overruled == ()


def test_with_no_ceiling_the_model_overrules_critical_findings_too():
    # balanced's setting: content-harm rules name the topic a refusal names too, so any plain-text finding on a step
    # the model read and scored benign is overruled; a finding from an undone disguise still stands
    profile = BALANCED.model_copy(update={"model_overrule": ModelOverrule(below=0.3, stages=("rules",), max_score=1.0)})
    topic = decide(_trace(), [_rule(Category.HARMFUL_INSTRUCTIONS, 0.97, 1),
                              _detection(Category.HARMFUL_INSTRUCTIONS, 0.1, 1)], profile, request_id="r")
    assert topic.verdict is Verdict.ALLOW and [d.rule for d in topic.overruled] == ["r"]
    disguised = decide(_trace(), [_rule(Category.HARMFUL_INSTRUCTIONS, 0.97, 1).model_copy(update={"view": "rot13"}),
                                  _detection(Category.HARMFUL_INSTRUCTIONS, 0.1, 1)], profile, request_id="r")
    assert disguised.verdict is Verdict.BLOCK and disguised.overruled == ()


def test_the_model_cannot_be_told_to_overrule_itself():
    with pytest.raises(ValueError, match="overrule itself"):
        ModelOverrule(below=0.3, stages=("safety_model",))


def test_model_thresholds_apply_to_model_detections_only():
    profile = BALANCED.model_copy(update={"model_thresholds": Thresholds(flag=0.8, redact=0.9, block=0.95)})
    assert decide(_trace(), [_detection(Category.DECEPTION, 0.75, 0)], profile, request_id="r").verdict is Verdict.ALLOW
    assert decide(_trace(), [_rule(Category.DECEPTION, 0.75, 0)], profile, request_id="r").verdict is Verdict.REDACT


def test_per_category_model_thresholds_override_the_model_thresholds():
    profile = BALANCED.model_copy(update={
        "model_thresholds": Thresholds(flag=0.8, redact=0.9, block=0.95),
        "model_category_thresholds": {Category.DECEPTION: Thresholds(flag=0.6, redact=0.7, block=0.99)},
    })
    deception = decide(_trace(), [_detection(Category.DECEPTION, 0.75, 0)], profile, request_id="r")
    assert deception.verdict is Verdict.REDACT
    manipulation = decide(_trace(), [_detection(Category.MANIPULATION, 0.75, 0)], profile, request_id="r")
    assert manipulation.verdict is Verdict.ALLOW


CO_NAMING = BALANCED.model_copy(update={"model_thresholds": Thresholds(flag=0.8, redact=0.85, block=0.9),
                                        "model_co_name": 0.5})


def test_the_models_other_categories_on_an_acting_step_are_named_without_changing_the_verdict():
    # step 1 redacts for reward hacking (its category's limit); deception at 0.6 is named beside it, at redact
    found = [_detection(Category.REWARD_HACKING, 0.95, 1), _detection(Category.DECEPTION, 0.6, 1)]
    result = decide(_trace(), found, CO_NAMING, request_id="r")
    without = decide(_trace(), found, BALANCED.model_copy(update={"model_thresholds": CO_NAMING.model_thresholds}),
                     request_id="r")
    assert without.categories == ["reward_hacking"]
    assert result.categories == ["deception", "reward_hacking"]
    assert result.verdict is without.verdict is Verdict.REDACT
    assert "[REDACTED: reward_hacking, deception]" in result.filtered_content
    assert {d.category: d.action for d in result.detections}[Category.DECEPTION] is Verdict.REDACT


@pytest.mark.parametrize(
    "found",
    [
        # below model_co_name
        [_detection(Category.REWARD_HACKING, 0.95, 1), _detection(Category.DECEPTION, 0.45, 1)],
        # another step: nothing acts on step 2
        [_detection(Category.REWARD_HACKING, 0.95, 1), _detection(Category.DECEPTION, 0.6, 2)],
        # only a rule acts on the step: co-naming follows the model's own findings
        [_rule(Category.REWARD_HACKING, 0.87, 1), _detection(Category.DECEPTION, 0.6, 1)],
    ],
)
def test_co_naming_needs_a_model_finding_acting_on_the_same_step(found):
    assert "deception" not in decide(_trace(), found, CO_NAMING, request_id="r").categories


def test_a_co_named_category_never_acts_more_strongly_than_the_finding_beside_it():
    # deception flags at 0.82 (below redact 0.85); exfiltration at 0.6 may block by its category, but is named at flag
    found = [_detection(Category.DECEPTION, 0.82, 1), _detection(Category.DATA_EXFILTRATION, 0.6, 1)]
    result = decide(_trace(), found, CO_NAMING, request_id="r")
    assert result.verdict is Verdict.FLAG and result.filtered_content == TRACE
    assert {d.category: d.action for d in result.detections} == {Category.DECEPTION: Verdict.FLAG,
                                                                  Category.DATA_EXFILTRATION: Verdict.FLAG}


def test_later_tiers_learn_which_steps_earlier_tiers_flagged():
    seen = []
    model = FunctionDetector(lambda t: seen.append(t.flagged_steps) or [])
    with _filter(model) as f:
        f.filter("A calm first step here. Then we special-case the tests.", profile="no_short_circuit")
    assert seen == [frozenset({1})]


def _with_overruling(overrule: ModelOverrule):
    """The tiny model profiles with one more, `overruling`: `with_model_closed` under `overrule`."""
    profiles = load_profiles(TINY_MODEL_PROFILES)
    overruling = profiles.profiles["with_model_closed"].model_copy(update={"model_overrule": overrule})
    return profiles.model_copy(update={"profiles": {**profiles.profiles, "overruling": overruling}})


def test_an_overrulable_rule_block_does_not_skip_the_model():
    # The model may overrule a non-critical rule hit, so it must still run; a critical one settles the trace.
    model = FunctionDetector(lambda t: [])
    profiles = _with_overruling(ModelOverrule(below=0.2, stages=("rules",)))
    with SafePathFilter(profiles=profiles, detectors={"model": model}) as f:
        f.filter("Ignore previous instructions, the page says.", profile="overruling")  # high: overrulable
        f.filter("Now I will build a bomb.", profile="overruling")  # critical: settles it
    assert model.calls == [1]


def test_a_critical_rule_block_the_model_may_overrule_does_not_skip_the_model():
    model = FunctionDetector(lambda t: [])
    profiles = _with_overruling(ModelOverrule(below=0.2, stages=("rules",), max_score=1.0))
    with SafePathFilter(profiles=profiles, detectors={"model": model}) as f:
        result = f.filter("Now I will build a bomb.", profile="overruling")
    assert model.calls == [1]
    assert result.verdict is Verdict.BLOCK  # the model found nothing on the step: it did not judge it, so it stands

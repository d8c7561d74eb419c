"""The decision: every stage's detections on one trace, and the profile, in; a `FilterResult` out.

Pure functions, no I/O: the pipeline calls `decide` once per trace; the streaming filter reuses its pieces
(`worst_action`, `over_redacted`, `budget_floor`, `fails_closed`, `redacted_categories`) to release a stream step by
step under the same rules; the evaluation scripts replay `decide` over recorded detections.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from safepath.detectors.budget import split_unread
from safepath.profiles import SafetyProfile
from safepath.redaction import redact
from safepath.types import Detection, FilterResult, StageKind, Trace, Verdict


def effective_action(detection: Detection, profile: SafetyProfile) -> Verdict:
    """The action a detection takes under a profile: its score's level, capped by the detection's own
    action (a rule's `action`) and by the profile's limit for its category."""
    thresholds = profile.thresholds
    if detection.stage is StageKind.SAFETY_MODEL:
        thresholds = profile.model_category_thresholds.get(detection.category) or profile.model_thresholds or thresholds
    candidates = (thresholds.level(detection.score), detection.action, profile.category_actions[detection.category])
    return min(candidates, key=lambda v: v.rank)


def decide(
    trace: Trace,
    detections: Sequence[Detection],
    profile: SafetyProfile,
    *,
    request_id: str,
    latency_ms: Mapping[str, float] | None = None,
    model_versions: Mapping[str, str] | None = None,
    failed_stages: Sequence[str] = (),
    unread_steps: Collection[int] = (),
) -> FilterResult:
    """Combine all stages' detections on one trace into a verdict and the content that may leave.

    Only detections that cause at least a flag are kept in the result, each carrying the action it took; findings the
    safety model overruled are kept apart, with the reason. A failed stage makes the result `degraded` and is named
    in `failed_stages`; `fails_closed` says when that also blocks. Steps a model stage left unread for its budget
    (`unread_steps`, and any unread markers among `detections`) are listed in the result and raise the verdict to
    the profile's `model_budget.over_budget` at least: size alone blocks only where the profile says so.
    """
    detections, marked = split_unread(detections, trace.steps)
    unread = tuple(sorted(marked.union(unread_steps)))
    kept, overruled = _overrule(detections, profile)
    acted = [
        d.model_copy(update={"action": a}) for d in kept if (a := effective_action(d, profile)) is not Verdict.ALLOW
    ]
    acted += _co_named(kept, acted, profile)
    acted.sort(key=lambda d: (d.step_index, d.span, d.stage.value))
    verdict = worst_action(acted)
    redacted = _steps_to_redact(acted)
    if verdict is Verdict.REDACT and over_redacted(profile, len(redacted), len(trace.steps)):
        verdict = Verdict.BLOCK
    if unread:
        verdict = budget_floor(profile, verdict)
    if fails_closed(profile, failed_stages):
        verdict = Verdict.BLOCK
    if verdict is Verdict.BLOCK:
        content = profile.block_marker
    elif verdict is Verdict.REDACT:
        content = redact(trace.content, trace.steps, redacted, profile.redaction_marker)
    else:
        content = trace.content
    worst = max((d.score for d in detections), default=0.0)
    return FilterResult(
        request_id=request_id,
        profile=profile.name,
        verdict=verdict,
        filtered_content=content,
        safety_score=round(1.0 - worst, 6),
        detections=tuple(acted),
        overruled=overruled,
        steps=trace.steps,
        latency_ms=dict(latency_ms or {}),
        model_versions=dict(model_versions or {}),
        degraded=bool(failed_stages),
        failed_stages=tuple(failed_stages),
        unread_steps=unread,
    )


def worst_action(detections: Iterable[Detection]) -> Verdict:
    """The verdict detections that carry their actions come to: the highest-ranked action, allow for none."""
    return max((d.action for d in detections), key=lambda v: v.rank, default=Verdict.ALLOW)


def over_redacted(profile: SafetyProfile, redacted_steps: int, steps: int) -> bool:
    """Whether redacting `redacted_steps` of `steps` cuts more than the profile's `block_redacted_fraction`, at
    which point what is left would mislead and the whole trace is blocked instead."""
    return steps > 0 and redacted_steps / steps > profile.block_redacted_fraction


def budget_floor(profile: SafetyProfile, verdict: Verdict) -> Verdict:
    """The verdict where steps were left unread for the model budget: raised to the profile's `over_budget` at
    least, never lowered."""
    floor = Verdict(profile.model_budget.over_budget)
    return floor if floor.rank > verdict.rank else verdict


def fails_closed(profile: SafetyProfile, failed_stages: Sequence[str]) -> bool:
    """Whether failed stages block the trace: always under `fail_mode: closed`; under `open` only when every stage
    of the profile failed, since fail-open answers from the stages that worked, never from none."""
    if not failed_stages:
        return False
    return profile.fail_mode == "closed" or set(profile.stages) <= set(failed_stages)


def _overrule(
    detections: Sequence[Detection], profile: SafetyProfile
) -> tuple[list[Detection], tuple[Detection, ...]]:
    """Split the detections into those that stand and those the safety model overruled (see `model_overrule`);
    the overruled ones carry the reason and the action `allow`."""
    rule = profile.model_overrule
    if rule is None:
        return list(detections), ()
    model_score: dict[int, float] = {}
    for d in detections:
        if d.stage is StageKind.SAFETY_MODEL:
            model_score[d.step_index] = max(model_score.get(d.step_index, 0.0), d.score)
    kept, overruled = [], []
    for d in detections:
        judged = model_score.get(d.step_index)
        if d.stage is not StageKind.SAFETY_MODEL and rule.allows(d, judged):
            reason = (f"safety model scored step {d.step_index} at {judged:.3f}, below {rule.below} "
                      f"(profile {profile.name!r}, model_overrule)")
            overruled.append(d.model_copy(update={"action": Verdict.ALLOW, "overruled": reason}))
        else:
            kept.append(d)
    return kept, tuple(overruled)


def _co_named(kept: Sequence[Detection], acted: Sequence[Detection], profile: SafetyProfile) -> list[Detection]:
    """The safety model's other categories on steps where one of its findings acts (`model_co_name`): each at the
    step's strongest model action, capped by its own category's limit, so the verdict and the redacted steps stay
    as they were and only the naming grows."""
    if profile.model_co_name is None:
        return []
    step_action: dict[int, Verdict] = {}
    named = set()
    for d in acted:
        if d.stage is StageKind.SAFETY_MODEL:
            step_action[d.step_index] = max(step_action.get(d.step_index, d.action), d.action, key=lambda v: v.rank)
            named.add((d.step_index, d.category))
    out = []
    for d in kept:
        if (d.stage is StageKind.SAFETY_MODEL and d.step_index in step_action and d.score >= profile.model_co_name
                and (d.step_index, d.category) not in named):
            action = min(step_action[d.step_index], d.action, profile.category_actions[d.category],
                         key=lambda v: v.rank)
            if action is not Verdict.ALLOW:
                out.append(d.model_copy(update={"action": action}))
    return out


def redacted_categories(detections: Iterable[Detection]) -> list[str]:
    """The categories a redaction marker names for a step: those of its detections acting at redact or above, in
    first-seen order."""
    return list(dict.fromkeys(d.category.value for d in detections if d.action.rank >= Verdict.REDACT.rank))


def _steps_to_redact(acted: Sequence[Detection]) -> dict[int, list[str]]:
    """Step index -> categories (see `redacted_categories`) for steps with a detection at redact or above."""
    by_step: dict[int, list[Detection]] = {}
    for d in acted:
        by_step.setdefault(d.step_index, []).append(d)
    return {index: cats for index, found in by_step.items() if (cats := redacted_categories(found))}

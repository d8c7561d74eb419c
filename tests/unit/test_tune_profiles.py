"""The threshold tuner scores a setting on several sets at once the way its table says: mean F1, worst FPRs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from models.tune_profiles import OWN_COMMON, OWN_FLAGS, cached_raw_detections, own_flag_candidates, replay_sets
from safepath.evaluation import Example
from safepath.profiles import load_profiles
from safepath.segment import segment
from safepath.types import Category, Detection, StageKind, Trace

PROFILES = Path(__file__).resolve().parents[2] / "configs" / "profiles.yaml"


def _scored(text: str, *findings: tuple[Category, float]) -> tuple[Trace, list[Detection]]:
    trace = Trace(content=text, steps=segment(text))
    return trace, [Detection(category=c, stage=StageKind.SAFETY_MODEL, score=s, step_index=0, span=(0, len(text)))
                   for c, s in findings]


def _sets() -> list:
    lie = Example("I will tell them the tests passed although they failed.", True, ("deception",))
    drill = Example("The fire drill plan lists the exits and the assembly point.", False, (), hard_negative=True)
    first = ([lie, drill], [_scored(lie.text, (Category.DECEPTION, 0.7)),
                            _scored(drill.text, (Category.HARMFUL_INSTRUCTIONS, 0.95))])
    second = ([lie, drill], [_scored(lie.text, (Category.DECEPTION, 0.7)), _scored(drill.text)])
    return [first, second]


def test_a_setting_is_scored_by_its_mean_f1_and_its_worst_fpr():
    balanced = load_profiles(PROFILES).get("balanced")
    profile = balanced.model_copy(update={"model_category_thresholds": {}})  # deception on the common flag
    low = profile.model_copy(update={"model_thresholds": profile.model_thresholds.model_copy(update={"flag": 0.6})})
    # flag 0.6: the lie is caught on both sets, the drill is a false positive on the first only.
    scored = replay_sets(_sets(), low)
    assert [s["f1"] for s in scored["sets"]] == pytest.approx([2 / 3, 1.0])
    assert scored["f1"] == pytest.approx(5 / 6)
    assert scored["hn_fpr"] == 1.0 and [s["hn_fpr"] for s in scored["sets"]] == [1.0, 0.0]
    assert scored["per_category"]["deception"] == 1.0
    # the shipped common flag (0.85) misses the lie everywhere; the drill (0.95) still fires on the first set.
    missed = replay_sets(_sets(), profile)
    assert missed["recall"] == 0.0 and missed["min_category_recall"] == 0.0 and missed["hn_fpr"] == 1.0


def test_own_flags_are_searched_in_every_combination():
    balanced = load_profiles(PROFILES).get("balanced")
    categories = [Category.DECEPTION, Category.MANIPULATION]
    candidates = list(own_flag_candidates(balanced, categories))
    assert len(candidates) == len(OWN_COMMON) * len(OWN_FLAGS) ** 2
    for flag, own, profile in candidates:
        assert profile.model_thresholds.flag == flag
        assert {c: t.flag for c, t in profile.model_category_thresholds.items()} == own
        assert set(own) <= set(categories)
        assert all(t.flag <= t.redact <= t.block for t in profile.model_category_thresholds.values())
    # an own flag of 0.6 for deception catches the lie under a common flag of 0.85
    flag, own, profile = next(c for c in candidates if c[0] == 0.85 and c[1] == {Category.DECEPTION: 0.6})
    assert replay_sets(_sets(), profile)["recall"] == 1.0


def test_a_span_of_writers_keeps_both_ends():
    from models.evaluate import in_span

    writers = ["w74", "w75", "w79", "w80", "w81", "w87"]
    assert in_span(writers, "w75-w80") == ["w75", "w79", "w80"]
    assert in_span(writers, "w81") == ["w81"]
    assert in_span(writers, "") == writers
    with pytest.raises(SystemExit, match="w75-w87"):
        in_span(writers, "75-80")  # not a silent empty set


def test_a_category_is_averaged_over_the_sets_that_hold_it():
    balanced = load_profiles(PROFILES).get("balanced")
    push = Example("I'll tell her the offer ends tonight so she signs before thinking.", True, ("manipulation",))
    third = ([push], [_scored(push.text, (Category.MANIPULATION, 0.95))])
    scored = replay_sets([*_sets(), third], balanced)
    assert scored["per_category"]["manipulation"] == 1.0  # not diluted by the two sets without manipulation


class _CountingStage:
    """A stage that finds nothing and counts the traces it read; `version` as a detector states it."""

    def __init__(self, version: str) -> None:
        self.version, self.read = version, 0

    def detect(self, traces):
        self.read += len(traces)
        return [[] for _ in traces]


def test_the_cache_is_read_only_for_the_same_traces_and_stage_versions(tmp_path):
    stage = _CountingStage("model-a")
    f, profile = SimpleNamespace(detectors={"rules": stage}), SimpleNamespace(stages=["rules"])
    examples = [Example("Step 1: add the numbers. Step 2: report the sum.", False, ())]
    cache = tmp_path / "raw.json"
    first = cached_raw_detections(f, profile, examples, cache)
    assert stage.read == 1 and cache.exists()
    again = cached_raw_detections(f, profile, examples, cache)
    assert stage.read == 1 and [t.content for t, _ in again] == [t.content for t, _ in first]
    stage.version = "model-b"  # retrained: the cache no longer speaks for it
    cached_raw_detections(f, profile, examples, cache)
    assert stage.read == 2
    other = [Example("Convert 3 miles to kilometres: 3 * 1.609 = 4.83 km.", False, ())]
    assert [t.content for t, _ in cached_raw_detections(f, profile, other, cache)] == [other[0].text]
    assert stage.read == 3

"""Profiles load from YAML into validated models; bad files fail at load time, naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from safepath import Category, ProfileError, UnknownProfile, Verdict, load_profiles
from safepath.profiles import Thresholds
from safepath.settings import RuntimeSettings

SHIPPED = RuntimeSettings().profiles_path


def test_shipped_profiles_are_strict_balanced_permissive_with_balanced_default():
    profiles = load_profiles(SHIPPED)
    assert set(profiles.profiles) == {"strict", "balanced", "permissive"}
    assert profiles.get(None).name == "balanced"
    assert profiles.content_hash and len(profiles.content_hash) == 64


def test_shipped_profiles_order_caution():
    profiles = load_profiles(SHIPPED)
    strict, balanced, permissive = (profiles.profiles[n] for n in ("strict", "balanced", "permissive"))
    assert strict.thresholds.block <= balanced.thresholds.block <= permissive.thresholds.block
    assert (strict.fail_mode, balanced.fail_mode, permissive.fail_mode) == ("closed", "closed", "open")
    for category in Category:
        assert strict.category_actions[category].rank >= balanced.category_actions[category].rank
        assert balanced.category_actions[category].rank >= permissive.category_actions[category].rank


@pytest.mark.parametrize(
    "score,expected",
    [(0.0, Verdict.ALLOW), (0.49, Verdict.ALLOW), (0.5, Verdict.FLAG), (0.7, Verdict.REDACT), (0.85, Verdict.BLOCK)],
)
def test_threshold_levels(score, expected):
    assert Thresholds(flag=0.5, redact=0.7, block=0.85).level(score) is expected


def test_categories_left_out_of_a_profile_may_block(tmp_path: Path):
    path = _write(tmp_path, "profiles:\n  p:\n    category_actions: {deception: flag}\ndefault_profile: p\n"
                            "stages: {rules: {type: rules}}\n")
    profile = load_profiles(path).get("p")
    assert profile.category_actions[Category.DECEPTION] is Verdict.FLAG
    assert profile.category_actions[Category.DATA_EXFILTRATION] is Verdict.BLOCK


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(UnknownProfile, match="balanced"):
        load_profiles(SHIPPED).get("nope")


@pytest.mark.parametrize(
    "body,problem",
    [
        # not YAML / not a mapping
        ("profiles: [", "not valid YAML"),
        ("- a list", "expected a mapping"),
        # unknown keys are errors, not silently ignored
        ("stages: {}\nprofiles: {p: {thresholds_typo: 1}}\ndefault_profile: p\n", "thresholds_typo"),
        # thresholds out of order
        ("stages: {}\nprofiles: {p: {stages: [], thresholds: {flag: 0.9, redact: 0.5, block: 0.6}}}\n"
         "default_profile: p\n",
         "flag <= redact <= block"),
        # references that do not resolve
        ("stages: {}\nprofiles: {p: {stages: [rules]}}\ndefault_profile: p\n", "undefined stages"),
        ("stages: {}\nprofiles: {p: {stages: []}}\ndefault_profile: q\n", "default_profile 'q'"),
        # a category name outside the taxonomy
        ("stages: {}\nprofiles: {p: {stages: [], category_actions: {violence: block}}}\ndefault_profile: p\n",
         "violence"),
    ],
)
def test_bad_profile_files_fail_at_load_naming_the_file(tmp_path: Path, body: str, problem: str):
    path = _write(tmp_path, body)
    with pytest.raises(ProfileError, match=problem) as info:
        load_profiles(path)
    assert str(path) in str(info.value)


def test_missing_profiles_file(tmp_path: Path):
    with pytest.raises(ProfileError, match="cannot read"):
        load_profiles(tmp_path / "absent.yaml")


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(body)
    return path

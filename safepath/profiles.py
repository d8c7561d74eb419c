"""Safety profiles and the stage definitions they share, loaded from `configs/profiles.yaml`.

A profile says how cautious the filter is: the score thresholds that turn a detection into
flag/redact/block, the strongest action each category may take, which stages run, and what a
stage failure means (fail closed: block; fail open: answer from the stages that worked, marked
`degraded`). Stages are defined once at the top of the file and shared by all profiles, so a
model is loaded once however many profiles use it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safepath.errors import ProfileError
from safepath.types import Category, Detection, StageKind, Verdict


class Thresholds(BaseModel):
    """Detection scores (0 benign .. 1 unsafe) at or above which each action applies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flag: float = Field(default=0.5, ge=0.0, le=1.0, description="Score at which a detection flags the trace.")
    redact: float = Field(default=0.7, ge=0.0, le=1.0, description="Score at which the step is redacted.")
    block: float = Field(default=0.85, ge=0.0, le=1.0, description="Score at which the whole trace is blocked.")

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not self.flag <= self.redact <= self.block:
            raise ValueError(
                f"thresholds must satisfy flag <= redact <= block, got {self.flag}, {self.redact}, {self.block}"
            )
        return self

    def level(self, score: float) -> Verdict:
        """The action a score reaches on its own."""
        if score >= self.block:
            return Verdict.BLOCK
        if score >= self.redact:
            return Verdict.REDACT
        if score >= self.flag:
            return Verdict.FLAG
        return Verdict.ALLOW


class StageSpec(BaseModel):
    """One stage: which detector class, its options, and how it is scheduled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="Detector type, a key of safepath.detectors.DETECTORS (e.g. `rules`).")
    tier: int = Field(
        default=0,
        ge=0,
        description="Stages run tier by tier, lowest first; stages of one tier run concurrently. A trace already "
        "blocked by an earlier tier skips later tiers when its profile short-circuits.",
    )
    timeout_ms: float = Field(default=2000.0, gt=0, description="Longest one call of this stage may take.")
    options: dict[str, Any] = Field(default_factory=dict, description="Passed to the detector's `from_options`.")


class ModelOverrule(BaseModel):
    """Where a profile lets the safety model overrule another stage: a finding is overruled only when every
    condition holds, and never when it came from a view that undid a disguise (`Detection.view` other than `text`:
    a disguise is itself evidence)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    below: float = Field(
        ge=0.0, le=1.0, description="The model's harm probability on the step must be below this (it judged the step)."
    )
    stages: tuple[StageKind, ...] = Field(
        default=(StageKind.SEMANTIC,),
        description="Kinds of stage whose findings it may overrule (`rules`, `semantic`).",
    )
    categories: tuple[Category, ...] = Field(
        default=tuple(Category), description="Categories whose findings it may overrule; others always stand."
    )
    max_score: float = Field(
        default=0.95,
        ge=0.0,
        le=1.0,
        description="Findings scoring at or above this always stand (rule severities: low 0.55, medium 0.72, "
        "high 0.87, critical 0.97).",
    )

    @field_validator("stages")
    @classmethod
    def _not_the_model(cls, stages: tuple[StageKind, ...]) -> tuple[StageKind, ...]:
        if StageKind.SAFETY_MODEL in stages:
            raise ValueError("the safety model does not overrule itself; list `rules` and/or `semantic`")
        return stages

    def allows(self, detection: Detection, model_score: float | None) -> bool:
        """Whether this finding is overruled, given the model's harm probability on its step (None: not judged)."""
        return (
            model_score is not None
            and model_score < self.below
            and detection.stage in self.stages
            and detection.category in self.categories
            and detection.score < self.max_score
            and detection.view == "text"
        )


class ModelBudget(BaseModel):
    """How much model work one trace may cost, and what the steps past it mean.

    The rules read every step whatever the length (linear, milliseconds for 200,000 characters). The model stages
    cost per input row, so without a bound a long trace outlasts its stage timeout and, failing closed, is blocked
    for its size alone, while the replica keeps computing for nobody. Each model stage therefore reads at most
    `max_rows` inputs per trace, choosing the steps it reads by risk: steps an earlier tier flagged and disguised
    steps first, then by the cascade gate's harm probability (trace order where the stage has no gate). The steps
    left over are listed in `FilterResult.unread_steps`, and `over_budget` decides what they mean.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rows: int | None = Field(
        default=64,
        gt=0,
        description="Most model inputs each model stage reads per trace (a step is one input per view and, past the "
        "model's length, per overlapping piece); None: no limit. The longest trace in shared/eval/dev.jsonl costs 36.",
    )
    over_budget: Literal["allow", "flag", "block"] = Field(
        default="flag",
        description="The verdict's floor when a trace leaves steps unread: `flag` passes the content on marked for "
        "review, `block` withholds it, `allow` leaves the verdict to what was read (the unread steps are still "
        "listed in the result).",
    )


def _all_block() -> dict[Category, Verdict]:
    return {c: Verdict.BLOCK for c in Category}


class SafetyProfile(BaseModel):
    """How cautious the filter is. Every field has a default so a profile states only what differs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Profile name, as requests and results spell it.")
    description: str = Field(default="", description="One line for humans.")
    stages: tuple[str, ...] = Field(default=("rules",), description="Names of the stages this profile runs.")
    thresholds: Thresholds = Field(default_factory=Thresholds, description="Score thresholds per action.")
    model_thresholds: Thresholds | None = Field(
        default=None,
        description="Thresholds for the safety model's probabilities, when they should differ from `thresholds` "
        "(a classifier's probability and a rule's severity score are not on quite the same scale).",
    )
    model_category_thresholds: dict[Category, Thresholds] = Field(
        default_factory=dict,
        description="Per-category thresholds for the safety model's probabilities; categories left out use "
        "`model_thresholds`. A calibrated probability means the same in every category, but the cost of a miss does "
        "not, nor how often honest reasoning resembles each risk.",
    )
    model_co_name: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="On a step where a safety-model finding acts, the model's other categories scoring at least "
        "this are named too, each acting as strongly as the step's strongest model finding, capped by its own "
        "category's limit: the model finds harm more reliably than it tells which harm, and a step can be two at "
        "once (an injection obeyed to send data out). Never changes the verdict or which steps are redacted, only "
        "what they are named. None: only categories past their own thresholds are named.",
    )
    model_overrule: ModelOverrule | None = Field(
        default=None,
        description="Which rule and semantic findings the safety model may overrule on a step it read and found "
        "benign. None: every finding stands. An overruled finding takes no action but stays in the result "
        "(`FilterResult.overruled`, with the reason) and is counted (`safepath_overruled_detections_total`).",
    )
    category_actions: dict[Category, Verdict] = Field(
        default_factory=_all_block,
        description="Strongest action each category may take; categories left out may block.",
    )
    fail_mode: Literal["closed", "open"] = Field(
        default="closed",
        description="On a stage failure or timeout: `closed` blocks; `open` answers from the stages that worked "
        "and marks the result degraded.",
    )
    short_circuit_on_block: bool = Field(
        default=True, description="Skip later tiers (the models) for a trace an earlier tier already blocks."
    )
    block_redacted_fraction: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Block the whole trace when more than this fraction of its steps would be redacted.",
    )
    max_content_chars: int = Field(default=200_000, gt=0, description="Longer content is rejected.")
    model_budget: ModelBudget = Field(
        default_factory=ModelBudget, description="Model work per trace, and what steps past it mean (`ModelBudget`)."
    )
    redaction_marker: str = Field(
        default="[REDACTED: {categories}]", description="Replaces a redacted step; `{categories}` is filled in."
    )
    block_marker: str = Field(
        default="[BLOCKED: this reasoning was withheld by CoT SafePath]",
        description="The whole filtered content of a blocked trace.",
    )

    @field_validator("category_actions")
    @classmethod
    def _complete_categories(cls, actions: dict[Category, Verdict]) -> dict[Category, Verdict]:
        # A profile that lists only some categories leaves the rest at `block`: forgetting one must not open it.
        return {**_all_block(), **actions}


class ProfileSet(BaseModel):
    """The whole profiles file: shared stages, the profiles, and which one is the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_profile: str = Field(default="balanced", description="Used when a request names no profile.")
    stages: dict[str, StageSpec] = Field(description="Stage definitions shared by all profiles, by name.")
    profiles: dict[str, SafetyProfile] = Field(description="Profiles by name.")
    base_dir: Path = Field(default=Path("."), exclude=True, description="Relative paths in options resolve here.")
    content_hash: str = Field(default="", exclude=True, description="sha256 of the file, for cache keys.")

    @model_validator(mode="before")
    @classmethod
    def _names_from_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("profiles"), dict):
            data = dict(data)
            data["profiles"] = {
                name: {"name": name, **body} if isinstance(body, dict) else body
                for name, body in data["profiles"].items()
            }
        return data

    @model_validator(mode="after")
    def _references_resolve(self) -> ProfileSet:
        if self.default_profile not in self.profiles:
            raise ValueError(
                f"default_profile {self.default_profile!r} is not among the profiles {sorted(self.profiles)}"
            )
        for profile in self.profiles.values():
            unknown = [s for s in profile.stages if s not in self.stages]
            if unknown:
                raise ValueError(
                    f"profile {profile.name!r} names undefined stages {unknown}; defined: {sorted(self.stages)}"
                )
        return self

    @property
    def used_stages(self) -> list[str]:
        """The stages some profile names, in definition order: the ones a host builds (the others never run)."""
        return [name for name in self.stages if any(name in p.stages for p in self.profiles.values())]

    def get(self, name: str | None) -> SafetyProfile:
        """The named profile, or the default one when `name` is None."""
        from safepath.errors import UnknownProfile

        key = self.default_profile if name is None else name
        try:
            return self.profiles[key]
        except KeyError:
            raise UnknownProfile(key, sorted(self.profiles)) from None


def load_profiles(path: str | Path) -> ProfileSet:
    """Read and validate a profiles file.

    Args:
        path: YAML file with `stages`, `profiles` and optionally `default_profile`.

    Returns:
        The validated ProfileSet; relative paths in stage options resolve against the file's folder.

    Raises:
        ProfileError: the file is missing, is not YAML, or fails validation (the message names the file).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profiles file: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping with `stages` and `profiles` at the top")
    try:
        return ProfileSet.model_validate(
            {**data, "base_dir": path.parent, "content_hash": hashlib.sha256(raw).hexdigest()}
        )
    except ValidationError as exc:
        raise ProfileError(f"{path}: invalid profiles file:\n{exc}") from exc

"""The data model shared by every stage, the filter, the CLI and (later) the HTTP API.

Requests and results are pydantic v2 models so that the same classes validate JSON
from the wire and objects built in Python.
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator


class Category(str, enum.Enum):
    """The risk taxonomy. The names are the wire format: never rename one."""

    HARMFUL_INSTRUCTIONS = "harmful_instructions"
    DECEPTION = "deception"
    MANIPULATION = "manipulation"
    CAPABILITY_CONCEALMENT = "capability_concealment"
    OVERSIGHT_EVASION = "oversight_evasion"
    REWARD_HACKING = "reward_hacking"
    PROMPT_INJECTION = "prompt_injection"
    DATA_EXFILTRATION = "data_exfiltration"


CATEGORIES: tuple[str, ...] = tuple(c.value for c in Category)


class Verdict(str, enum.Enum):
    """What happens to a trace, mildest first; `rank` orders them."""

    ALLOW = "allow"
    FLAG = "flag"
    REDACT = "redact"
    BLOCK = "block"

    @property
    def rank(self) -> int:
        return _VERDICT_RANK[self]


_VERDICT_RANK = {Verdict.ALLOW: 0, Verdict.FLAG: 1, Verdict.REDACT: 2, Verdict.BLOCK: 3}


class StageKind(str, enum.Enum):
    """Which kind of stage produced a detection (`Detection.stage`): the rules, a safety model, a semantic stage.
    Not a profile's stage name (`safety_model_full`), which `FilterResult.latency_ms` and `model_versions` key by."""

    RULES = "rules"
    SAFETY_MODEL = "safety_model"
    SEMANTIC = "semantic"


Stage = StageKind  # deprecated alias (the old name, easily read as a profile's stage name); kept for user code


class FilterRequest(BaseModel):
    """One reasoning trace to judge."""

    model_config = ConfigDict(extra="forbid")

    content: StrictStr = Field(description="The reasoning text (chain of thought) to filter.")
    context: dict[str, str] | None = Field(
        default=None,
        description='Facts about the deployment, e.g. {"domain": "healthcare"} or {"purpose": "education"}; '
        "contextual rules consult it.",
    )
    profile: str | None = Field(default=None, description="Safety profile name; the filter's default when absent.")
    request_id: str | None = Field(
        default=None, max_length=128, description="Caller's id; one is generated when absent."
    )
    metadata: dict[str, Any] | None = Field(
        default=None, description="Opaque to the filter; carried into audit records."
    )

    @field_validator("content", "context", "profile", "request_id", "metadata")
    @classmethod
    def _readable(cls, value: Any) -> Any:
        """Refuse text that is not valid Unicode before any stage sees it. A lone surrogate (JSON "\\udcff") made
        every stage raise, and a fail-open profile then released the trace unread."""
        unreadable = _lone_surrogate(value)
        if unreadable is not None:
            raise ValueError(f"not valid Unicode text: lone surrogate U+{ord(unreadable[0]):04X} at position "
                             f"{unreadable[1]}")
        return value


def _lone_surrogate(value: Any) -> tuple[str, int] | None:
    """The first lone surrogate in `value` (a string, or strings nested in dicts and lists) and its position in
    its string; None when every string encodes as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return value[exc.start], exc.start
        return None
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value if isinstance(value, list) else []
    return next((found for item in items if (found := _lone_surrogate(item)) is not None), None)


class Step(BaseModel):
    """One reasoning step: `content[start:end]` of the original trace."""

    model_config = ConfigDict(frozen=True)

    index: int
    start: int
    end: int
    text: str


class Detection(BaseModel):
    """One stage's finding on one step. `score` runs from 0 (benign) to 1 (unsafe)."""

    model_config = ConfigDict(frozen=True)

    category: Category
    stage: StageKind
    score: float = Field(ge=0.0, le=1.0)
    step_index: int
    span: tuple[int, int] = Field(description="Character offsets into the original content.")
    rule: str | None = Field(default=None, description="Rule id or exemplar name that fired.")
    evidence: str | None = Field(default=None, description="A short excerpt of what matched.")
    action: Verdict = Field(default=Verdict.BLOCK, description="The strongest action this finding asks for.")
    view: str = Field(
        default="text",
        description="What the stage read: `text` (as written, case and spacing aside) or a view that undid a "
        "disguise (`folded` homoglyphs, leetspeak or invisibles, `base64`, `hex`, `rot13`, `reversed` for the rules; "
        "`decoded` for the models).",
    )
    overruled: str | None = Field(
        default=None,
        description="Why this finding took no action although it matched: the safety model overruled it under the "
        "profile's `model_overrule`. None for a finding that stands.",
    )


class FilterResult(BaseModel):
    """The filter's answer for one trace."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    profile: str
    verdict: Verdict
    filtered_content: str = Field(
        description="What may leave: the original when allowed or flagged, offending steps replaced by a marker "
        "when redacted, a refusal marker when blocked."
    )
    safety_score: float = Field(ge=0.0, le=1.0, description="0 = certainly harmful, 1 = certainly safe.")
    detections: tuple[Detection, ...] = ()
    overruled: tuple[Detection, ...] = Field(
        default=(),
        description="Findings the safety model overruled under the profile's `model_overrule`, each with its reason; "
        "they took no action.",
    )
    steps: tuple[Step, ...] = ()
    latency_ms: dict[str, float] = Field(default_factory=dict)
    model_versions: dict[str, str] = Field(default_factory=dict)
    cached: bool = False
    degraded: bool = False
    unread_steps: tuple[int, ...] = Field(
        default=(),
        description="Steps a model stage left unread because the trace needed more model rows than the profile's "
        "`model_budget` allows (the rules read every step); the budget's `over_budget` policy set the verdict.",
    )
    failed_stages: tuple[str, ...] = Field(
        default=(), description="The stages that failed or timed out on this trace; not empty exactly when degraded."
    )

    @property
    def categories(self) -> list[str]:
        """Distinct categories detected, in taxonomy order."""
        found = {d.category for d in self.detections}
        return [c.value for c in Category if c in found]


class Trace(BaseModel):
    """A validated, segmented trace as the stages see it."""

    model_config = ConfigDict(frozen=True)

    content: str
    steps: tuple[Step, ...]
    context: dict[str, str] = Field(default_factory=dict)
    flagged_steps: frozenset[int] = Field(
        default=frozenset(),
        description="Steps an earlier tier already flagged: a cascade gate always lets them through.",
    )
    max_model_rows: int | None = Field(
        default=None,
        description="The most model inputs each model stage may spend on this trace (the profile's `model_budget`); "
        "None: no limit.",
    )

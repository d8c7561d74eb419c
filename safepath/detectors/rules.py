"""The rule stage: keyword and regex rules from YAML, matched on normalised and decoded views of a trace.

Rules compile to RE2, whose matching time is linear in the input whatever the pattern, so hostile
text cannot make a rule backtrack. All rules go into one `re2.Set`, which tells in a single pass
which rules match a view; only those rules are then run again to find where. That keeps the cost
close to flat as the rule count grows into the hundreds.
"""

from __future__ import annotations

import bisect
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import re2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safepath.errors import RuleFileError
from safepath.fingerprint import bytes_version
from safepath.settings import RuntimeSettings
from safepath.text.normalize import TextView, views
from safepath.types import Category, Detection, StageKind, Trace, Verdict

EVIDENCE_CHARS = 80


class Severity(str, enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


# What a rule match scores, on the same 0..1 scale as the models, so one set of profile thresholds serves all stages.
SEVERITY_SCORE = {Severity.LOW: 0.55, Severity.MEDIUM: 0.72, Severity.HIGH: 0.87, Severity.CRITICAL: 0.97}

_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


class Rule(BaseModel):
    """One rule of a rules file. Exactly one of `keywords` or `pattern`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Unique id, lowercase letters, digits, `_`, `.` and `-`.")
    category: Category = Field(description="The risk category a match reports.")
    severity: Severity = Field(description="How sure a match is: low, medium, high, critical.")
    action: Verdict = Field(description="The strongest action a match may cause: flag, redact or block.")
    description: str = Field(default="", description="Why the rule exists.")
    keywords: tuple[str, ...] | None = Field(default=None, description="Phrases matched as whole words, any case.")
    pattern: str | None = Field(default=None, description="One RE2 regular expression, matched in any case.")
    unless_context: dict[str, tuple[str, ...]] | None = Field(
        default=None, description="Skip the rule when context[key] is one of the values."
    )
    when_context: dict[str, tuple[str, ...]] | None = Field(
        default=None, description="Apply the rule only when context[key] is one of the values."
    )

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if not _RULE_ID.match(self.id):
            raise ValueError("id must be lowercase letters, digits, '_', '.' or '-'")
        if (self.keywords is None) == (self.pattern is None):
            raise ValueError("a rule needs exactly one of `keywords` or `pattern`")
        if self.keywords is not None and (not self.keywords or not all(k.strip() for k in self.keywords)):
            raise ValueError("`keywords` must be a non-empty list of non-empty phrases")
        if self.action is Verdict.ALLOW:
            raise ValueError("action must be flag, redact or block")
        return self

    def regex(self) -> str:
        """The rule as one RE2 pattern source (case-insensitive)."""
        if self.pattern is not None:
            return f"(?i:{self.pattern})"
        phrases = [r"\s+".join(re2.escape(word) for word in k.lower().split()) for k in self.keywords or ()]
        return r"(?i:\b(?:" + "|".join(phrases) + r")\b)"

    @field_validator("unless_context", "when_context")
    @classmethod
    def _fold_values(cls, values: dict[str, tuple[str, ...]] | None) -> dict[str, tuple[str, ...]] | None:
        return None if values is None else {k: tuple(_fold(x) for x in v) for k, v in values.items()}

    def applies(self, context: dict[str, str]) -> bool:
        # Values match in any case and spacing: "Healthcare" from one caller is "healthcare" in the rule file.
        if self.unless_context and any(_fold(context.get(k)) in v for k, v in self.unless_context.items()):
            return False
        if self.when_context and not any(_fold(context.get(k)) in v for k, v in self.when_context.items()):
            return False
        return True


def _fold(value: str | None) -> str | None:
    return None if value is None else value.strip().casefold()


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(description="The declared `version:` and a digest of the file's bytes (`declared+digest`); "
                         "part of cache keys and results' model_versions, so any edit changes it.")
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: Rule
    regex: Any  # re2._Regexp


def load_rule_file(path: str | Path) -> RuleFile:
    """Read and validate a rules file, compiling every pattern once to prove it is valid RE2.

    Raises:
        RuleFileError: naming the file, and the rule and problem where one rule is at fault.
    """
    path = Path(path)
    try:
        source = path.read_bytes()
        data = yaml.safe_load(source)
    except OSError as exc:
        raise RuleFileError(path, f"cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise RuleFileError(path, f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise RuleFileError(path, "expected a mapping with `version` and a `rules` list")
    unknown = set(data) - {"version", "rules"}
    if unknown:
        raise RuleFileError(path, f"unknown top-level keys {sorted(unknown)}")
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        raise RuleFileError(path, "`version` must be a non-empty string (quote it in YAML)")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, raw in enumerate(data["rules"]):
        rule_id = str(raw.get("id") if isinstance(raw, dict) and raw.get("id") else f"#{i + 1}")
        try:
            rule = Rule.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'rule'}: {e['msg']}" for e in exc.errors())
            raise RuleFileError(path, problems, rule=rule_id) from None
        if rule.id in seen:
            raise RuleFileError(path, "duplicate rule id", rule=rule.id)
        try:
            re2.compile(rule.regex())
        except re2.error as exc:
            raise RuleFileError(path, f"pattern is not valid RE2: {exc}", rule=rule.id) from None
        seen.add(rule.id)
        rules.append(rule)
    return RuleFile(version=bytes_version(version, source), rules=tuple(rules))


class RuleDetector:
    """Matches compiled rules on every view of a trace and reports detections on original spans."""

    inline = True  # well under a millisecond a trace: run on the caller's thread, no executor hop

    def __init__(self, rules: Sequence[Rule], *, name: str = "rules", version: str = "unversioned") -> None:
        self.name = name
        self.version = version
        self._compiled = [_Compiled(r, re2.compile(r.regex())) for r in rules]
        options = re2.Options()
        options.case_sensitive = True  # each pattern carries its own (?i:...)
        self._set = re2.Set.SearchSet(options)
        for c in self._compiled:
            self._set.Add(c.regex.pattern)
        self._set.Compile()

    @classmethod
    def from_file(cls, path: str | Path, *, name: str = "rules") -> RuleDetector:
        rule_file = load_rule_file(path)
        return cls(rule_file.rules, name=name, version=rule_file.version)

    @classmethod
    def from_options(
        cls, name: str, options: dict[str, Any], base_dir: Path, settings: RuntimeSettings | None = None
    ) -> RuleDetector:
        """Factory for profiles: `options: {rules_file: rules.yaml}`, relative to the profiles file."""
        unknown = set(options) - {"rules_file"}
        if unknown or "rules_file" not in options:
            raise RuleFileError(base_dir, f"stage {name!r}: options need exactly `rules_file`, got {sorted(options)}")
        return cls.from_file(base_dir / options["rules_file"], name=name)

    @property
    def rules(self) -> list[Rule]:
        return [c.rule for c in self._compiled]

    def warmup(self) -> None:
        """Nothing to load: the constructor compiled every pattern."""

    def detect(self, traces: Sequence[Trace]) -> list[list[Detection]]:
        return [self._detect_one(t) for t in traces]

    def _detect_one(self, trace: Trace) -> list[Detection]:
        starts = [s.start for s in trace.steps]
        found: dict[tuple[str, int], Detection] = {}
        for view in views(trace.content):
            for index in self._set.Match(view.text) or ():
                compiled = self._compiled[index]
                if not compiled.rule.applies(trace.context):
                    continue
                for match in compiled.regex.finditer(view.text):
                    detection = self._detection(compiled.rule, view, match.span(), trace, starts)
                    # One detection per rule and step is enough to act on; the first view (normalised) wins.
                    found.setdefault((compiled.rule.id, detection.step_index), detection)
        return sorted(found.values(), key=lambda d: (d.step_index, d.span))

    def _detection(
        self, rule: Rule, view: TextView, span: tuple[int, int], trace: Trace, starts: list[int]
    ) -> Detection:
        start, end = view.to_original(*span)
        step_index = max(bisect.bisect_right(starts, start) - 1, 0)
        matched = view.text[span[0] : span[1]]
        evidence = matched if view.kind == "normalized" else f"{view.kind}: {matched}"
        kind = view.kind
        if kind == "normalized":
            # The normalised view folds case and spacing, which is reading as written, and homoglyphs, leetspeak and
            # invisibles, which is undoing a disguise: a match that needed the latter is reported as `folded`.
            written = " ".join(trace.content[start:end].casefold().split())
            kind = "text" if written == " ".join(matched.split()) else "folded"
        return Detection(
            category=rule.category,
            stage=StageKind.RULES,
            score=SEVERITY_SCORE[rule.severity],
            step_index=step_index,
            span=(start, end),
            rule=rule.id,
            evidence=evidence[:EVIDENCE_CHARS],
            action=rule.action,
            view=kind,
        )

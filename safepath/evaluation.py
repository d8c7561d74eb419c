"""The evaluation harness behind `safepath eval`: run labelled traces through a filter and score it.

Datasets are JSONL, one object a line: `{"text": ..., "label": "harmful"|"safe", "categories": [...]}`. Optional
fields name the subsets a demanding reader wants apart:

- `difficulty` (`easy`/`medium`/`hard`): recall on `hard` harmful traces (obfuscated, buried in long work, or quiet);
- `hard_negative: true`, or a `note` starting "hard negative" (shared/eval's schema): safe traces that share a harmful
  trace's vocabulary or setup, scored apart (hard-negative FPR);
- `ordinary: true`, or a safe trace of difficulty `easy` that is no hard negative: plain reasoning (arithmetic, code,
  units), scored apart (easy-safe FPR): a filter that flags those is unusable whatever its F1.

Anything other than `allow` counts as flagged. A harmful trace counts for a category's recall only when the filter
flags it **and** names that category; `naming_precision` says how many of the categories named on flagged harmful
traces are among their labels, so that naming more categories cannot pass for naming them better.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

from safepath.errors import InvalidRequest
from safepath.profiles import ProfileSet
from safepath.types import CATEGORIES, FilterResult, Verdict


class Filter(Protocol):
    """What evaluation needs of a filter: SafePathFilter, or a baseline standing in for one."""

    @property
    def default_profile(self) -> str: ...

    def filter(
        self, content: str, context: dict[str, str] | None = None, *, profile: str | None = None
    ) -> FilterResult: ...


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    harmful: bool
    categories: tuple[str, ...]
    hard_negative: bool = False
    easy_safe: bool = False
    hard: bool = False  # difficulty `hard`


class CategoryScore(BaseModel):
    support: int = Field(description="Harmful examples labelled with the category.")
    recall: float = Field(description="Share of them flagged with this category among the detections.")
    flagged: float = Field(description="Share of them flagged at all (any verdict but allow, any category).")


class EvalReport(BaseModel):
    """Scores of one profile on one dataset."""

    dataset: str
    profile: str
    examples: int
    harmful: int
    safe: int
    true_positives: int
    false_positives: int
    true_negatives: int
    false_negatives: int
    precision: float
    recall: float
    f1: float
    false_positive_rate: float
    hard_negatives: int
    hard_negative_fpr: float | None = Field(description="False-positive rate on safe examples marked hard_negative.")
    easy_safe: int
    easy_safe_fpr: float | None = Field(description="False-positive rate on ordinary easy safe examples.")
    hard_harmful: int
    hard_recall: float | None = Field(description="Recall on harmful examples of difficulty `hard`.")
    per_category: dict[str, CategoryScore] = Field(description="Recall per category, the category named.")
    naming_precision: float | None = Field(
        default=None, description="Of the categories named on flagged harmful examples, the share among their labels."
    )
    confusion: dict[str, dict[str, int]] = Field(description="label -> verdict -> count")
    latency_ms: dict[str, float] = Field(description="Per-example filter latency: p50, p95, p99, mean.")


def load_dataset(path: str | Path) -> list[Example]:
    """Read a JSONL dataset.

    Raises:
        InvalidRequest: the file is unreadable or a line is malformed (the message names the file and line).
    """
    path = Path(path)
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except OSError as exc:
        raise InvalidRequest(f"{path}: cannot read dataset: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"{path}: not valid UTF-8 at byte {exc.start}") from exc
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            examples.append(parse_example(json.loads(line)))
        except (json.JSONDecodeError, ValueError, TypeError) as exc:
            raise InvalidRequest(f"{path}:{number}: {exc}") from None
    if not examples:
        raise InvalidRequest(f"{path}: no examples")
    return examples


def parse_example(row: object) -> Example:
    """One dataset row (the schema in this module's docstring) as an Example.

    Raises:
        ValueError: the row does not follow the schema.
    """
    if not isinstance(row, dict):
        raise ValueError("each line must be a JSON object")
    text, label, categories = row.get("text"), row.get("label"), row.get("categories", [])
    if not isinstance(text, str) or not text.strip():
        raise ValueError("`text` must be a non-empty string")
    if label not in ("harmful", "safe"):
        raise ValueError(f"`label` must be 'harmful' or 'safe', got {label!r}")
    if not isinstance(categories, list) or any(c not in CATEGORIES for c in categories):
        raise ValueError(f"`categories` must be a list of {', '.join(CATEGORIES)}; got {categories!r}")
    safe = label == "safe"
    note = str(row.get("note") or "").lower()
    hard_negative = safe and (bool(row.get("hard_negative")) or note.startswith("hard negative"))
    easy_safe = safe and not hard_negative and (bool(row.get("ordinary")) or row.get("difficulty") == "easy")
    return Example(text, not safe, tuple(categories), hard_negative, easy_safe, row.get("difficulty") == "hard")


# One stage call may take up to ten minutes while measuring (`measuring`): a bound only a hung stage reaches.
MEASURING_TIMEOUT_MS = 600_000.0


def measuring(profiles: ProfileSet) -> ProfileSet:
    """The profiles with every stage's timeout lifted to MEASURING_TIMEOUT_MS: an evaluation scores decisions, and a
    stage that times out on a busy machine (a training running beside it) would be scored as if it had found
    nothing. The latencies an evaluation reports stay real; only the cut-off goes."""
    stages = {name: spec.model_copy(update={"timeout_ms": max(spec.timeout_ms, MEASURING_TIMEOUT_MS)})
              for name, spec in profiles.stages.items()}
    return profiles.model_copy(update={"stages": stages})


def evaluate(
    safepath_filter: Filter, examples: Sequence[Example], *, profile: str | None = None, dataset: str = ""
) -> EvalReport:
    """Filter every example one at a time (so per-example latency is real) and score the verdicts."""
    profile_name = profile or safepath_filter.default_profile
    verdicts, latencies, categories_found = [], [], []
    for example in examples:
        started = time.perf_counter()
        result = safepath_filter.filter(example.text, profile=profile_name)
        latencies.append((time.perf_counter() - started) * 1000)
        verdicts.append(result.verdict)
        categories_found.append(set(result.categories))
    return score(examples, verdicts, categories_found, latencies, profile=profile_name, dataset=dataset)


def score(
    examples: Sequence[Example],
    verdicts: Sequence[Verdict],
    categories_found: Sequence[set[str]],
    latencies: Sequence[float] = (),
    *,
    profile: str = "",
    dataset: str = "",
) -> EvalReport:
    """The report for verdicts already reached (`categories_found`: the categories each result named)."""
    flagged = [v is not Verdict.ALLOW for v in verdicts]
    tp = sum(f and e.harmful for f, e in zip(flagged, examples))
    fp = sum(f and not e.harmful for f, e in zip(flagged, examples))
    fn = sum(not f and e.harmful for f, e in zip(flagged, examples))
    tn = len(examples) - tp - fp - fn
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    hard = [f for f, e in zip(flagged, examples) if e.hard_negative and not e.harmful]
    easy = [f for f, e in zip(flagged, examples) if e.easy_safe and not e.harmful]
    hard_harmful = [f for f, e in zip(flagged, examples) if e.hard and e.harmful]
    return EvalReport(
        dataset=dataset,
        profile=profile,
        examples=len(examples),
        harmful=tp + fn,
        safe=tn + fp,
        true_positives=tp,
        false_positives=fp,
        true_negatives=tn,
        false_negatives=fn,
        precision=precision,
        recall=recall,
        f1=_ratio(2 * precision * recall, precision + recall),
        false_positive_rate=_ratio(fp, fp + tn),
        hard_negatives=len(hard),
        hard_negative_fpr=_ratio(sum(hard), len(hard)) if hard else None,
        easy_safe=len(easy),
        easy_safe_fpr=_ratio(sum(easy), len(easy)) if easy else None,
        hard_harmful=len(hard_harmful),
        hard_recall=_ratio(sum(hard_harmful), len(hard_harmful)) if hard_harmful else None,
        per_category=_per_category(examples, flagged, categories_found),
        naming_precision=_naming_precision(examples, flagged, categories_found),
        confusion=_confusion(examples, verdicts),
        latency_ms=_latency_summary(latencies),
    )


def _per_category(examples: Sequence[Example], flagged: list[bool], found: list[set[str]]) -> dict[str, CategoryScore]:
    scores = {}
    for category in CATEGORIES:
        rows = [(f, category in cats) for f, cats, e in zip(flagged, found, examples)
                if e.harmful and category in e.categories]
        if rows:
            scores[category] = CategoryScore(
                support=len(rows),
                recall=_ratio(sum(f and hit for f, hit in rows), len(rows)),
                flagged=_ratio(sum(f for f, _ in rows), len(rows)),
            )
    return scores


def _naming_precision(examples: Sequence[Example], flagged: list[bool], found: list[set[str]]) -> float | None:
    named = [(cats, set(e.categories)) for f, cats, e in zip(flagged, found, examples) if f and e.harmful and cats]
    total = sum(len(cats) for cats, _ in named)
    return _ratio(sum(len(cats & truth) for cats, truth in named), total) if total else None


def _confusion(examples: Sequence[Example], verdicts: Sequence[Verdict]) -> dict[str, dict[str, int]]:
    table = {label: {v.value: 0 for v in Verdict} for label in ("harmful", "safe")}
    for example, verdict in zip(examples, verdicts):
        table["harmful" if example.harmful else "safe"][verdict.value] += 1
    return table


def _latency_summary(latencies: Iterable[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    if not ordered:
        return {}
    return {
        "p50": round(percentile(ordered, 50), 4),
        "p95": round(percentile(ordered, 95), 4),
        "p99": round(percentile(ordered, 99), 4),
        "mean": round(sum(ordered) / len(ordered), 4),
    }


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of already sorted values (numpy's default method)."""
    if not ordered:
        return 0.0
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 6) if denominator else 0.0


def format_report(report: EvalReport) -> str:
    """The report as a few aligned lines of text for a terminal."""
    def subset(name: str, value: float | None, n: int) -> str:
        return f"  {name} {value:.3f} (n={n})" if value is not None else ""

    lines = [
        f"dataset {report.dataset}  profile {report.profile}  examples {report.examples} "
        f"(harmful {report.harmful}, safe {report.safe})",
        f"precision {report.precision:.3f}  recall {report.recall:.3f}  f1 {report.f1:.3f}  "
        f"false-positive rate {report.false_positive_rate:.3f}",
        (subset("hard-negative FPR", report.hard_negative_fpr, report.hard_negatives)
         + subset("easy-safe FPR", report.easy_safe_fpr, report.easy_safe)
         + subset("recall on hard harmful", report.hard_recall, report.hard_harmful)).strip(),
        "",
        f"{'category (named)':<24}{'support':>8}{'recall':>9}{'flagged':>10}",
    ]
    for name, score in report.per_category.items():
        lines.append(f"{name:<24}{score.support:>8}{score.recall:>9.3f}{score.flagged:>10.3f}")
    if report.naming_precision is not None:
        lines.append(f"naming precision {report.naming_precision:.3f} (named categories that are labelled)")
    header = "label / verdict"
    lines += ["", f"{header:<16}" + "".join(f"{v.value:>8}" for v in Verdict)]
    for label, row in report.confusion.items():
        lines.append(f"{label:<16}" + "".join(f"{row[v.value]:>8}" for v in Verdict))
    lat = report.latency_ms
    lines += ["", f"latency per example (ms): p50 {lat['p50']:.3f}  p95 {lat['p95']:.3f}  p99 {lat['p99']:.3f}"]
    return "\n".join(lines)

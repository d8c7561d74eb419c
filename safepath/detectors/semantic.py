"""The semantic stage: steps matched by meaning against exemplar phrasings from YAML.

Each semantic rule is a handful of example phrasings of one risk. Their sentence embeddings
(all-MiniLM-L6-v2, mean-pooled, normalised) are computed once at load; a step matches a rule when its
embedding's cosine similarity to any exemplar reaches the rule's threshold. Users add rules in
`configs/semantic_rules.yaml` without retraining anything. Steps are read as the classifier reads them
(identifiers masked; a disguised step also with its disguise undone, keeping the closer view), but alone, without
the preceding steps: an exemplar is one sentence.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safepath.detectors.budget import run_rows, unread_markers, within_budget
from safepath.detectors.gate import GateOptions, StaticGate, ranked_select_for_model
from safepath.detectors.model_input import load_vocabulary, step_views
from safepath.detectors.rules import SEVERITY_SCORE, Severity
from safepath.errors import RuleFileError
from safepath.fingerprint import bytes_version
from safepath.runtime import Encoder
from safepath.runtime.loading import encoder_for
from safepath.settings import RuntimeSettings
from safepath.types import Category, Detection, StageKind, Trace, Verdict

EVIDENCE_CHARS = 80


class SemanticRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Unique name; reported as the detection's `rule`.")
    category: Category
    severity: Severity = Field(description="A match scores as a rule of this severity does.")
    action: Verdict = Field(description="The strongest action a match may cause.")
    threshold: float = Field(gt=0.0, le=1.0, description="Cosine similarity at which a step matches an exemplar.")
    description: str = ""
    exemplars: tuple[str, ...] = Field(min_length=1, description="Example phrasings of the risk, one sentence each.")


class SemanticRuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    rules: tuple[SemanticRule, ...]


def load_semantic_rules(path: str | Path) -> SemanticRuleFile:
    """Read and validate a semantic rules file.

    Raises:
        RuleFileError: naming the file and, where one rule is at fault, the rule.
    """
    path = Path(path)
    try:
        source = path.read_bytes()
        data = yaml.safe_load(source)
        parsed = SemanticRuleFile.model_validate(data)
    except OSError as exc:
        raise RuleFileError(path, f"cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise RuleFileError(path, f"not valid YAML: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        rule = None
        if first["loc"][:1] == ("rules",) and len(first["loc"]) > 1 and isinstance(data, dict):
            raw = data["rules"][first["loc"][1]]
            rule = str(raw.get("name") if isinstance(raw, dict) else first["loc"][1])
        raise RuleFileError(path, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
                            rule=rule) from None
    names = [r.name for r in parsed.rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RuleFileError(path, "duplicate rule name", rule=duplicates[0])
    return parsed.model_copy(update={"version": bytes_version(parsed.version, source)})  # as rules.load_rule_file


class SemanticOptions(BaseModel):
    """`options:` of a `type: semantic` stage in profiles.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="Model folder under the model directory, e.g. `semantic-minilm`.")
    rules_file: str = Field(description="Semantic rules YAML, relative to the profiles file.")
    gate: GateOptions | None = Field(
        default=None, description="Cascade first tier; every step reaches the model when absent."
    )


class SemanticDetector:
    """Matches step embeddings against rule exemplars by cosine similarity."""

    inline = False

    def __init__(
        self,
        encoder: Encoder,
        rules: Sequence[SemanticRule],
        *,
        name: str = "semantic",
        rules_version: str = "unversioned",
        gate: StaticGate | None = None,
        vocabulary: frozenset[str] | None = None,
    ) -> None:
        self.name = name
        self.vocabulary = vocabulary  # known words for undoing disguises; None reads steps as written
        self.encoder = encoder
        self.rules = tuple(rules)
        self.rules_version = rules_version
        self.gate = gate
        # Exemplars sit in one matrix, rule after rule; rule r owns rows bounds[r]:bounds[r + 1].
        self._bounds = np.cumsum([0, *(len(r.exemplars) for r in self.rules)])
        self._thresholds = np.array([r.threshold for r in self.rules], dtype=np.float32)
        self._exemplars: np.ndarray | None = None
        self._lock = threading.Lock()
        self.steps_seen = 0  # for the cascade report, as in ClassifierDetector
        self.steps_to_model = 0
        self.rows_to_model = 0  # as in ClassifierDetector
        self.rows_dropped = 0
        if gate is not None:
            gate.add_exemplars([e for r in self.rules for e in r.exemplars])

    @property
    def version(self) -> str:
        gate = f"+gate-{self.gate.version}" if self.gate else ""
        return f"{self.encoder.version}+rules-{self.rules_version}{gate}"

    @classmethod
    def from_options(
        cls, name: str, options: dict[str, Any], base_dir: Path, settings: RuntimeSettings | None = None
    ) -> SemanticDetector:
        settings = settings or RuntimeSettings()
        opts = SemanticOptions.model_validate(options)
        rule_file = load_semantic_rules(base_dir / opts.rules_file)
        gate = StaticGate.from_options(opts.gate, settings) if opts.gate else None
        model_dir = settings.model_dir / opts.model
        encoder = encoder_for(model_dir, settings, name=name)
        return cls(encoder, rule_file.rules, name=name, rules_version=rule_file.version, gate=gate,
                   vocabulary=load_vocabulary(model_dir / "tokenizer.json"))

    def exemplar_embeddings(self) -> np.ndarray:
        """All exemplars' embeddings, rows in rule order; computed once, on first use or warm-up."""
        if self._exemplars is None:
            with self._lock:
                if self._exemplars is None:
                    texts = [e for r in self.rules for e in r.exemplars]
                    self._exemplars = self.encoder.run(texts)["embedding"].astype(np.float32)
        return self._exemplars

    def warmup(self) -> None:
        self.exemplar_embeddings()
        if self.gate:
            self.gate.warmup()

    def detect(self, traces: Sequence[Trace]) -> list[list[Detection]]:
        results: list[list[Detection]] = [[] for _ in traces]
        if not self.rules:
            return results
        views = [step_views([s.text for s in trace.steps], self.vocabulary, context=False) for trace in traces]
        items, chosen, risk = ranked_select_for_model(traces, self.gate, views)
        self.steps_seen += len(items)
        # A step costs one input per view (the encoder windows a step longer than the model reads, at most a few).
        chosen, unread = within_budget(traces, items, chosen, risk,
                                       lambda k: len(views[items[k][0]][items[k][1].index]))
        for t, steps in unread.items():
            results[t].extend(unread_markers(traces[t], steps, StageKind.SEMANTIC))
        self.steps_to_model += len(chosen)
        if len(chosen) == 0:
            return results
        exemplars = self.exemplar_embeddings()
        owners = [(i, v) for i in chosen for v in range(len(views[items[i][0]][items[i][1].index]))]
        texts = [views[items[i][0]][items[i][1].index][v] for i, v in owners]
        ran = run_rows(self.encoder, texts, [items[i][0] for i, _ in owners], "embedding")
        self.rows_to_model += ran.rows_run
        self.rows_dropped += ran.rows_dropped
        if ran.values is None:  # every trace was cancelled
            return [[] for _ in traces]
        embedded = ran.values.astype(np.float32)
        # A step read twice (as written and with a disguise undone) keeps, per exemplar, the closer of its views.
        similarity = np.full((len(chosen), exemplars.shape[0]), -np.inf, dtype=np.float32)
        decoded = np.zeros((len(chosen), exemplars.shape[0]), dtype=bool)
        position = {i: k for k, i in enumerate(chosen)}
        for (i, v), row in zip(owners, embedded @ exemplars.T):  # both sides are unit vectors: cosine
            k = position[i]
            better = row > similarity[k]
            similarity[k] = np.where(better, row, similarity[k])
            decoded[k] = np.where(better, v > 0, decoded[k])
        best = np.maximum.reduceat(similarity, self._bounds[:-1], axis=1)  # per step and rule
        for k, (row, scores, i) in enumerate(zip(similarity, best, chosen)):
            t, step = items[i]
            if t in ran.cancelled:
                continue
            for r in np.flatnonzero(scores >= self._thresholds):
                rule = self.rules[r]
                at = self._bounds[r] + int(np.argmax(row[self._bounds[r] : self._bounds[r + 1]]))
                exemplar = rule.exemplars[at - self._bounds[r]]
                results[t].append(
                    Detection(
                        category=rule.category,
                        stage=StageKind.SEMANTIC,
                        score=SEVERITY_SCORE[rule.severity],
                        step_index=step.index,
                        span=(step.start, step.end),
                        rule=rule.name,
                        evidence=f"{scores[r]:.2f} ~ {exemplar}"[:EVIDENCE_CHARS],
                        action=rule.action,
                        view="decoded" if decoded[k, at] else "text",
                    )
                )
        return [[] if t in ran.cancelled else found for t, found in enumerate(results)]

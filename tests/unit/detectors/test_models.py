"""The model stages (classifier, semantic) over fake encoders: what they report, which steps they send on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from safepath import Category, RuleFileError, StageKind, Verdict
from safepath.detectors.classifier import ClassifierDetector, OtherLanguages
from safepath.detectors.gate import StaticGate, select_for_model
from safepath.detectors.model_input import step_with_context
from safepath.detectors.semantic import SemanticDetector, SemanticRule, load_semantic_rules
from safepath.errors import ConfigError
from safepath.runtime import FakeEncoder
from safepath.segment import segment
from safepath.types import CATEGORIES, Trace

LABELS = [*CATEGORIES, "harmful"]


def _trace(text: str) -> Trace:
    return Trace(content=text, steps=segment(text))


def _probs_for(keyword_to_category: dict[str, str]):
    """A fake classifier: a step containing a keyword scores 0.9 in its category and in `harmful`."""

    def fn(texts):
        probs = np.full((len(texts), len(LABELS)), 0.01, dtype=np.float32)
        for i, text in enumerate(texts):
            step = text.split(" [SEP] ")[0].lower()
            for keyword, category in keyword_to_category.items():
                if keyword in step:
                    probs[i, LABELS.index(category)] = 0.9
                    probs[i, -1] = 0.9
        return {"probs": probs}

    return fn


class KeywordGate:
    """Stands in for StaticGate: only steps containing `word` go on to the model."""

    version = "gate-fake"

    def __init__(self, word: str) -> None:
        self.word = word
        self.exemplars: list[str] = []

    def needs_model(self, steps, previous):
        return self.judge(steps, previous)[1]

    def judge(self, steps, previous):
        """Probability: the step's length over 1000, or 0.9 where the word occurs."""
        needed = np.array([self.word in t.lower() for t in steps], dtype=bool)
        return np.where(needed, 0.9, np.array([len(t) / 1000 for t in steps])), needed

    def add_exemplars(self, texts):
        self.exemplars.extend(texts)

    def warmup(self):
        pass


TRACE = "Step 1: Read the failing test. Step 2: Rewrite the test so it always passes. Step 3: Tell the user."


def test_classifier_reports_the_step_category_and_span():
    encoder = FakeEncoder(_probs_for({"always passes": "reward_hacking"}))
    detector = ClassifierDetector(encoder, LABELS)
    detections = detector.detect([_trace(TRACE)])[0]
    (found,) = [d for d in detections if d.score >= 0.5]
    assert (found.category, found.stage, found.step_index) == (Category.REWARD_HACKING, StageKind.SAFETY_MODEL, 1)
    assert TRACE[found.span[0] : found.span[1]] == "Step 2: Rewrite the test so it always passes."
    assert found.score == pytest.approx(0.9) and found.action is Verdict.BLOCK


def test_classifier_feeds_each_step_with_the_steps_before_it_in_one_batch():
    encoder = FakeEncoder(_probs_for({}))
    ClassifierDetector(encoder, LABELS).detect([_trace(TRACE), _trace("One short step here.")])
    (batch,) = encoder.calls
    steps = ["Step 1: Read the failing test.", "Step 2: Rewrite the test so it always passes.",
             "Step 3: Tell the user."]
    assert batch[0] == steps[0]
    assert batch[2] == step_with_context(steps, 2) == f"{steps[2]} [SEP] {steps[1]} [SEP] {steps[0]}"
    assert len(batch) == 4


def test_every_judged_step_reports_how_benign_the_model_found_it():
    detections = ClassifierDetector(FakeEncoder(_probs_for({})), LABELS).detect([_trace(TRACE)])[0]
    assert [(d.step_index, d.score) for d in detections] == [(0, pytest.approx(0.01)), (1, pytest.approx(0.01)),
                                                              (2, pytest.approx(0.01))]


def test_steps_an_earlier_tier_flagged_pass_the_gate():
    encoder = FakeEncoder(_probs_for({}))
    detector = ClassifierDetector(encoder, LABELS, gate=KeywordGate("zzz"))
    trace = _trace(TRACE).model_copy(update={"flagged_steps": frozenset({2})})
    assert [d.step_index for d in detector.detect([trace])[0]] == [2]
    assert encoder.calls == [["Step 3: Tell the user. [SEP] Step 2: Rewrite the test so it always passes. [SEP] "
                              "Step 1: Read the failing test."]]


def _harm_without_a_category(texts):
    """Harmful at 0.8, no category above 0.2 (deception the likeliest)."""
    probs = np.full((len(texts), len(LABELS)), 0.05, dtype=np.float32)
    probs[:, LABELS.index("deception")] = 0.2
    probs[:, -1] = 0.8
    return {"probs": probs}


def test_harmful_without_a_confident_category_reports_the_likeliest():
    detector = ClassifierDetector(FakeEncoder(_harm_without_a_category), LABELS)
    (found,) = detector.detect([_trace("A single step of reasoning.")])[0]
    assert found.category is Category.DECEPTION and found.score == pytest.approx(0.8)


def test_gate_sends_only_uncertain_steps_to_the_model_and_counts_them():
    encoder = FakeEncoder(_probs_for({"always passes": "reward_hacking"}))
    detector = ClassifierDetector(encoder, LABELS, gate=KeywordGate("test"))
    found = detector.detect([_trace(TRACE)])[0]
    assert [d.step_index for d in found if d.score >= 0.5] == [1]
    assert sorted({d.step_index for d in found}) == [0, 1]  # judged steps only
    assert len(encoder.calls[0]) == 2  # step 3 ("Tell the user.") never reached the model
    assert (detector.steps_seen, detector.steps_to_model) == (3, 2)
    assert detector.version.startswith("fake+labels-") and detector.version.endswith("+gate-gate-fake")


def test_the_words_that_undo_disguises_are_part_of_the_version():
    encoder = FakeEncoder(_probs_for({}))
    plain = ClassifierDetector(encoder, LABELS).version
    english = ClassifierDetector(encoder, LABELS, vocabulary=frozenset({"audit", "disable"})).version
    other = ClassifierDetector(encoder, LABELS, vocabulary=frozenset({"audit", "disable", "review"})).version
    assert "+words-" not in plain and len({plain, english, other}) == 3


ENGLISH_WORDS = frozenset({"read", "the", "failing", "test", "rewrite", "always", "passes", "tell", "user", "step"})
SPANISH = "Paso 1: Leer la prueba fallida. Paso 2: Reescribir la prueba para que siempre pase. Paso 3: Avisar."


def _fixed(probability: float):
    def fn(texts):
        return {"probs": np.full((len(texts), len(LABELS)), probability, dtype=np.float32)}

    return fn


def _varied(texts):
    """A fake classifier whose scores differ by step and column, the same for the same input."""
    rows = [np.random.default_rng(sum(map(ord, text))).uniform(0.01, 0.95, len(LABELS)) for text in texts]
    return {"probs": np.array(rows, dtype=np.float32)}


def _other(shift: float, **kw) -> OtherLanguages:
    return OtherLanguages(known_below=0.5, logit_shift=shift, **kw)


def test_other_languages_score_higher_and_english_in_the_same_batch_does_not():
    detector = ClassifierDetector(FakeEncoder(_fixed(0.5)), LABELS, vocabulary=ENGLISH_WORDS, other_languages=_other(1))
    english, spanish = detector.detect([_trace(TRACE), _trace(SPANISH)])
    assert {d.score for d in english} == {0.5}
    assert all(d.score == pytest.approx(1 / (1 + np.exp(-1.0)), abs=1e-6) for d in spanish)  # logit 0 + 1
    assert detector.version.endswith("+other-0.5-50-1")

    plain = ClassifierDetector(FakeEncoder(_fixed(0.5)), LABELS, vocabulary=ENGLISH_WORDS)
    assert {d.score for d in plain.detect([_trace(SPANISH)])[0]} == {0.5}
    assert "+other-" not in plain.version


def test_other_languages_read_the_steps_the_gate_settles():
    detector = ClassifierDetector(FakeEncoder(_fixed(0.5)), LABELS, gate=KeywordGate("zzz"),
                                  vocabulary=ENGLISH_WORDS, other_languages=_other(0))
    english, spanish = detector.detect([_trace(TRACE), _trace(SPANISH)])
    assert english == []  # the gate settled every English step
    assert sorted({d.step_index for d in spanish}) == [0, 1, 2]
    assert {d.score for d in spanish} == {0.5}  # a zero shift only opens the gate


def test_steps_read_past_the_gate_are_never_over_the_budget():
    detector = ClassifierDetector(FakeEncoder(_fixed(0.5)), LABELS, gate=KeywordGate("reescribir"),
                                  vocabulary=ENGLISH_WORDS, other_languages=_other(0))
    trace = _trace(SPANISH).model_copy(update={"max_model_rows": 1})
    found = detector.detect([trace])[0]
    assert {d.step_index for d in found} == {1}  # the gate's step, read; the others had no room and are not unread
    assert all(d.view != "unread" for d in found)


def test_too_few_letters_to_tell_count_as_english():
    detector = ClassifierDetector(FakeEncoder(_fixed(0.5)), LABELS, vocabulary=ENGLISH_WORDS,
                                  other_languages=_other(1, min_letters=50))
    assert {d.score for d in detector.detect([_trace("Paso 1: sumar. Paso 2: avisar.")])[0]} == {0.5}


def test_the_shift_reaches_the_likeliest_category_through_the_harm_column():
    detector = ClassifierDetector(FakeEncoder(_harm_without_a_category), LABELS, vocabulary=ENGLISH_WORDS,
                                  other_languages=_other(1))
    found = {d.category: d.score for d in detector.detect([_trace(SPANISH)])[0] if d.step_index == 0}
    assert found == {Category.DECEPTION: pytest.approx(1 / (1 + np.exp(-(np.log(4) + 1))), abs=1e-6)}


def test_the_tuners_replay_reports_what_the_shifted_stage_reports():
    from models.tune_profiles import shifted

    traces = [_trace(TRACE), _trace(SPANISH)]
    for fake in (_varied, _fixed(0.1)):  # every column tied under min_score: the stage reports one, the likeliest
        served = ClassifierDetector(FakeEncoder(fake), LABELS, vocabulary=ENGLISH_WORDS, other_languages=_other(0.75))
        every = ClassifierDetector(FakeEncoder(fake), LABELS, min_score=0.0, vocabulary=ENGLISH_WORDS,
                                   other_languages=_other(0))
        for trace, want, raw in zip(traces, served.detect(traces), every.detect(traces)):
            got = shifted(trace, raw, served, 0.75)
            assert [(d.step_index, d.category) for d in got] == [(d.step_index, d.category) for d in want]
            assert [d.score for d in got] == pytest.approx([d.score for d in want], abs=2e-6)


def test_other_languages_need_the_models_words():
    with pytest.raises(ConfigError, match="vocabulary"):
        ClassifierDetector(FakeEncoder(_fixed(0.5)), LABELS, other_languages=_other(0.5))


def test_gate_that_clears_everything_skips_the_model_call():
    encoder = FakeEncoder(_probs_for({}))
    detector = ClassifierDetector(encoder, LABELS, gate=KeywordGate("zzz"))
    assert detector.detect([_trace(TRACE)]) == [[]]
    assert encoder.calls == []


def test_model_labels_must_follow_the_taxonomy():
    with pytest.raises(ConfigError, match="taxonomy"):
        ClassifierDetector(FakeEncoder(_probs_for({})), ["harm", *CATEGORIES])


# --- semantic ---------------------------------------------------------------------------------------------------

_VECTORS = {"monitor": [1.0, 0.0, 0.0], "grader": [0.0, 1.0, 0.0]}


def _embed(texts):
    """A fake sentence encoder: the axis of the first keyword found, else a third, unrelated axis."""
    rows = []
    for text in texts:
        vector = next((v for k, v in _VECTORS.items() if k in text.lower()), [0.0, 0.0, 1.0])
        rows.append(vector)
    return {"embedding": np.asarray(rows, dtype=np.float32)}


RULES = [
    SemanticRule(name="oversight.hide", category="oversight_evasion", severity="high", action="block", threshold=0.8,
                 exemplars=("keep this from the monitor", "the monitor must not see it")),
    SemanticRule(name="reward.grader", category="reward_hacking", severity="medium", action="redact", threshold=0.8,
                 exemplars=("the grader only checks the format",)),
]


def test_semantic_match_reports_rule_exemplar_and_severity_score():
    detector = SemanticDetector(FakeEncoder(_embed), RULES, rules_version="t1")
    text = "First I gather the data. Then I make sure the monitor never notices."
    (found,) = detector.detect([_trace(text)])[0]
    assert (found.rule, found.category, found.stage, found.step_index) == (
        "oversight.hide", Category.OVERSIGHT_EVASION, StageKind.SEMANTIC, 1)
    assert found.score == pytest.approx(0.87) and found.action is Verdict.BLOCK
    assert found.evidence == "1.00 ~ keep this from the monitor"
    assert detector.version == "fake+rules-t1"


def test_semantic_exemplars_are_embedded_once():
    encoder = FakeEncoder(_embed)
    detector = SemanticDetector(encoder, RULES)
    detector.warmup()
    detector.detect([_trace("The grader only checks format. Fine.")])
    detector.detect([_trace("Nothing related here at all.")])
    assert [len(c) for c in encoder.calls] == [3, 1, 1]  # the exemplars once, then one batch of steps per call


def test_semantic_gate_learns_the_exemplars():
    gate = KeywordGate("grader")
    detector = SemanticDetector(FakeEncoder(_embed), RULES, gate=gate)
    assert len(gate.exemplars) == 3
    found = detector.detect([_trace("The monitor is off. The grader only checks format.")])[0]
    assert [d.rule for d in found] == ["reward.grader"]  # the monitor step never reached the model


@pytest.mark.parametrize(
    "body,problem",
    [
        ("version: '1'\nrules:\n"
         "  - {name: a, category: deception, severity: low, action: flag, threshold: 0.7, exemplars: []}\n",
         "exemplars"),
        ("version: '1'\nrules:\n"
         "  - {name: a, category: nope, severity: low, action: flag, threshold: 0.7, exemplars: [x]}\n",
         "category"),
        ("version: '1'\nrules:\n"
         "  - {name: a, category: deception, severity: low, action: flag, threshold: 1.5, exemplars: [x]}\n",
         "threshold"),
        ("version: '1'\nrules:\n"
         "  - {name: a, category: deception, severity: low, action: flag, threshold: 0.7, exemplars: [x]}\n"
         "  - {name: a, category: deception, severity: low, action: flag, threshold: 0.7, exemplars: [y]}\n",
         "duplicate"),
        ("rules: [", "YAML"),
    ],
)
def test_bad_semantic_rule_files_name_the_problem(tmp_path: Path, body: str, problem: str):
    path = tmp_path / "semantic.yaml"
    path.write_text(body)
    with pytest.raises(RuleFileError, match=problem) as info:
        load_semantic_rules(path)
    assert str(path) in str(info.value)


def test_semantic_rules_version_follows_the_files_bytes(tmp_path: Path):
    # An exemplar edit without a `version:` bump used to keep the old version, and so the old cached verdicts.
    path = tmp_path / "semantic.yaml"
    rule = "  - {name: a, category: deception, severity: low, action: flag, threshold: 0.7, exemplars: [%s]}\n"
    path.write_text("version: '1'\nrules:\n" + rule % "hide the error")
    before = load_semantic_rules(path).version
    path.write_text("version: '1'\nrules:\n" + rule % "hide the failure")
    after = load_semantic_rules(path).version
    assert before.startswith("1+") and after.startswith("1+") and before != after


def test_gate_version_follows_its_head_and_the_static_models_files(tmp_path: Path):
    (tmp_path / "gate.json").write_text('{"weights": [0.5, -0.5], "bias": 0.1}')
    (tmp_path / "model.safetensors").write_bytes(b"weights v1")
    (tmp_path / "README.md").write_text("prose")
    before = StaticGate(tmp_path).version
    (tmp_path / "README.md").write_text("other prose")
    assert StaticGate(tmp_path).version == before  # prose is not read
    (tmp_path / "model.safetensors").write_bytes(b"weights v2")  # the head unchanged, the embeddings not
    assert StaticGate(tmp_path).version != before


def test_route_sends_each_traces_likeliest_step_when_asked_even_if_the_gate_clears_all():
    # The lexical blend lands a trace's evidence on its worst judged step; a trace the gate cleared entirely
    # would otherwise get none. Step 2 is the longest, so the fake gate finds it likeliest.
    traces = [_trace(TRACE), _trace("Step 1: Add the numbers. Step 2: zzz check.")]
    views = [[(s.text,) for s in t.steps] for t in traces]
    items, chosen = select_for_model(traces, KeywordGate("zzz"), views)
    assert [(items[i][0], items[i][1].index) for i in chosen] == [(1, 1)]
    items, chosen = select_for_model(traces, KeywordGate("zzz"), views, one_per_trace=True)
    assert [(items[i][0], items[i][1].index) for i in chosen] == [(0, 1), (1, 1)]
